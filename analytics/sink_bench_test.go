package analytics_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/analytics"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// BenchmarkSinkCopy measures how fast the sink copies a backlog of the
// events topic into ClickHouse: half job.enqueued, half job.attempted,
// from the real broker when SLUICE_TEST_KAFKA_BROKERS is set.
func BenchmarkSinkCopy(b *testing.B) {
	db := newTestDB(b)
	var c *eventlogtest.Cluster
	if os.Getenv(eventlogtest.EnvBrokers) != "" {
		c = eventlogtest.NewReal(b)
	} else {
		c = eventlogtest.NewKfake(b)
	}
	n := max(b.N, 2)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	spec := &eventv1.JobSpec{Queue: "bench", Payload: []byte(`{}`), Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "http://a.example/hook"}}}
	var recs []*kgo.Record
	for i := range n / 2 {
		job := fmt.Sprintf("job-%d", i)
		meta := eventlog.Meta{TenantID: "bench", JobID: job, OccurredAt: time.Now()}
		for _, ev := range []*eventv1.Event{
			eventlog.NewEvent(meta, &eventv1.JobEnqueued{Spec: spec}),
			eventlog.NewEvent(meta, &eventv1.JobAttempted{Attempt: 1, StartedAt: timestamppb.Now(),
				Latency: durationpb.New(time.Millisecond), StatusCode: 204, Outcome: eventv1.Outcome_OUTCOME_SUCCEEDED}),
		} {
			rec, err := eventlog.EncodeEvent(c.Topics.Events(), ev)
			if err != nil {
				b.Fatal(err)
			}
			recs = append(recs, rec)
		}
	}
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	if _, err := analytics.Migrate(ctx, db.conn, db.name, time.Now()); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	start := time.Now()
	group := c.Group("analytics")
	s, err := analytics.NewSink(analytics.SinkConfig{
		DB: analytics.DBConfig{DSN: db.dsn, Database: db.name}, Brokers: c.Brokers, Topic: c.Topics.Events(),
		Group: group, FlushInterval: 100 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Stop(ctx)
	adm := c.Admin(b)
	for committed(b, adm, group, c.Topics.Events()) < int64(len(recs)) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("sink did not copy %d records within 5m", len(recs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(len(recs))/time.Since(start).Seconds(), "records/s")
}
