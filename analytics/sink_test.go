package analytics_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/analytics"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// envClickHouse names the environment variable with a real ClickHouse.
const envClickHouse = "SLUICE_TEST_CLICKHOUSE_DSN"

var dbSeq atomic.Int64

// testDB is a database of its own on the ClickHouse server from the
// environment, dropped when the test ends.
type testDB struct {
	dsn  string
	name string
	conn driver.Conn
}

func newTestDB(t testing.TB) *testDB {
	t.Helper()
	dsn := os.Getenv(envClickHouse)
	if dsn == "" {
		t.Skipf("CLICKHOUSE NOT TESTED: %s is unset (the README's test command starts ClickHouse and sets it)", envClickHouse)
	}
	db := &testDB{dsn: dsn, name: fmt.Sprintf("sluice_test_%d_%d", time.Now().UnixNano(), dbSeq.Add(1))}
	conn, err := analytics.Open(analytics.DBConfig{DSN: dsn, Database: db.name})
	if err != nil {
		t.Fatal(err)
	}
	db.conn = conn
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db.name)
		conn.Close()
	})
	return db
}

func (db *testDB) count(t *testing.T, table string) uint64 {
	t.Helper()
	var n uint64
	if err := db.conn.QueryRow(context.Background(), "SELECT count() FROM "+db.name+"."+table+" FINAL").Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// waitCount waits until table holds want rows (FINAL).
func (db *testDB) waitCount(t *testing.T, table string, want uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got uint64
		err := db.conn.QueryRow(context.Background(), "SELECT count() FROM "+db.name+"."+table+" FINAL").Scan(&got)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d rows (%v), want %d within %s", table, got, err, want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// jobHistory returns the events of a job that failed twice and then
// succeeded, as delivery and the delay lines write them.
func jobHistory(tenant, job, queue, url string) []*eventv1.Event {
	meta := func(n int) eventlog.Meta {
		return eventlog.Meta{TenantID: tenant, JobID: job, EventID: fmt.Sprintf("%s-ev-%d", job, n), OccurredAt: t0.Add(time.Duration(n) * time.Second),
			Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "delivery"}}
	}
	spec := &eventv1.JobSpec{Queue: queue, Payload: []byte(`{}`), Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: url}}}
	enq := meta(0)
	enq.Actor = &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: "key1"}
	attempt := func(n int32, status int32, errText string, outcome eventv1.Outcome, at int) *eventv1.Event {
		return eventlog.NewEvent(meta(at), &eventv1.JobAttempted{
			Attempt: n, StartedAt: timestamppb.New(t0.Add(time.Duration(at)*time.Second - 30*time.Millisecond)),
			Latency: durationpb.New(time.Duration(n) * 10 * time.Millisecond), StatusCode: status, Error: errText,
			Outcome: outcome, ResponseExcerpt: []byte("busy \xff"),
		})
	}
	return []*eventv1.Event{
		eventlog.NewEvent(enq, &eventv1.JobEnqueued{Spec: spec}),
		attempt(1, 503, "HTTP 503 Service Unavailable", eventv1.Outcome_OUTCOME_RETRY, 1),
		eventlog.NewEvent(meta(2), &eventv1.JobReady{Attempt: 2, Spec: spec}),
		attempt(2, 503, "HTTP 503 Service Unavailable", eventv1.Outcome_OUTCOME_RETRY, 3),
		eventlog.NewEvent(meta(4), &eventv1.JobReady{Attempt: 3, Spec: spec}),
		attempt(3, 204, "", eventv1.Outcome_OUTCOME_SUCCEEDED, 5),
	}
}

func produce(t *testing.T, c *eventlogtest.Cluster, events ...*eventv1.Event) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, ev := range events {
		rec, err := eventlog.EncodeEvent(c.Topics.Events(), ev)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func startSink(t *testing.T, c *eventlogtest.Cluster, db *testDB, dsn, group string) *analytics.Sink {
	t.Helper()
	s, err := analytics.NewSink(analytics.SinkConfig{
		DB:      analytics.DBConfig{DSN: dsn, Database: db.name},
		Brokers: c.Brokers, Topic: c.Topics.Events(), Group: group,
		BatchSize: 4, FlushInterval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func TestSinkCopiesTheLog(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		db := newTestDB(t)
		produce(t, c, jobHistory("tenantA", "job1", "emails", "http://a.example/hook")...)
		produce(t, c, jobHistory("tenantB", "job2", "sms", "http://b.example/hook")...)
		startSink(t, c, db, db.dsn, c.Group("analytics"))
		db.waitCount(t, "sluice_events", 12, 30*time.Second)
		db.waitCount(t, "sluice_attempts", 6, 10*time.Second)

		r := analytics.NewReader(db.conn, db.name)
		ctx := context.Background()
		t.Run("timeline", func(t *testing.T) {
			tl, err := r.JobTimeline(ctx, "tenantA", "job1")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range tl {
				got = append(got, fmt.Sprintf("%s/%d/%d/%s/%s", e.Type, e.Attempt, e.StatusCode, e.Outcome, e.GetLatency().AsDuration()))
			}
			want := []string{
				"job.enqueued/0/0//0s", "job.attempted/1/503/retry/10ms", "job.ready/2/0//0s",
				"job.attempted/2/503/retry/20ms", "job.ready/3/0//0s", "job.attempted/3/204/succeeded/30ms",
			}
			if !slices.Equal(got, want) {
				t.Errorf("timeline: got %q, want %q", got, want)
			}
			if tl[0].Actor != "api_key:key1" || tl[1].Actor != "system:delivery" {
				t.Errorf("actors: got %q, %q, want api_key:key1, system:delivery", tl[0].Actor, tl[1].Actor)
			}
			if !tl[5].At.AsTime().Equal(t0.Add(5 * time.Second)) {
				t.Errorf("last event at %s, want %s", tl[5].At.AsTime(), t0.Add(5*time.Second))
			}
		})
		t.Run("jobs with an event", func(t *testing.T) {
			had, err := r.JobsWithEvent(ctx, "tenantA", "job.ready", []string{"job1", "job2", "nope"})
			if err != nil || len(had) != 1 || !had["job1"] {
				t.Errorf("tenant A's jobs with job.ready: got %v, %v; want job1 only", had, err)
			}
		})
		t.Run("tenancy", func(t *testing.T) {
			if _, err := r.JobTimeline(ctx, "tenantB", "job1"); err != analytics.ErrNotFound {
				t.Errorf("another tenant's job: got %v, want ErrNotFound", err)
			}
		})
		t.Run("attempts", func(t *testing.T) {
			all, next, err := r.QueryAttempts(ctx, "tenantA", analytics.AttemptQuery{})
			if err != nil || next != "" || len(all) != 3 {
				t.Fatalf("all attempts: got %d, next %q, err %v; want 3, none", len(all), next, err)
			}
			if all[0].Attempt != 3 || all[0].Queue != "emails" || all[0].TargetUrl != "http://a.example/hook" || all[0].ResponseExcerpt != "busy \uFFFD" {
				t.Errorf("newest attempt: got %+v, want attempt 3 of emails to http://a.example/hook with its excerpt", all[0])
			}
			failed, _, err := r.QueryAttempts(ctx, "tenantA", analytics.AttemptQuery{StatusCode: 503, ErrorContains: "unavailable", Queue: "emails"})
			if err != nil || len(failed) != 2 {
				t.Fatalf("503s: got %d, err %v; want 2", len(failed), err)
			}
			none, _, err := r.QueryAttempts(ctx, "tenantA", analytics.AttemptQuery{Queue: "sms"})
			if err != nil || len(none) != 0 {
				t.Errorf("tenant A's sms attempts: got %d, err %v; want 0 (they are tenant B's)", len(none), err)
			}
			ranged, _, err := r.QueryAttempts(ctx, "tenantA", analytics.AttemptQuery{StartedAfter: t0.Add(2 * time.Second), StartedBefore: t0.Add(4 * time.Second)})
			if err != nil || len(ranged) != 1 || ranged[0].Attempt != 2 {
				t.Errorf("time range: got %v, err %v; want attempt 2", ranged, err)
			}
			var pages [][]int32
			tok := ""
			for range 5 {
				page, next, err := r.QueryAttempts(ctx, "tenantA", analytics.AttemptQuery{PageSize: 2, PageToken: tok})
				if err != nil {
					t.Fatal(err)
				}
				var ns []int32
				for _, a := range page {
					ns = append(ns, a.Attempt)
				}
				pages = append(pages, ns)
				if tok = next; tok == "" {
					break
				}
			}
			if fmt.Sprint(pages) != "[[3 2] [1]]" {
				t.Errorf("pages: got %v, want [[3 2] [1]]", pages)
			}
		})
	})
}

func TestSinkNeverDoubleCounts(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		db := newTestDB(t)
		events := jobHistory("tenantA", "job1", "emails", "http://a.example/hook")
		// The same event written twice, as a producer retrying after a crash
		// leaves it: one entry in the timeline.
		produce(t, c, append(events, events[5])...)
		first := startSink(t, c, db, db.dsn, c.Group("analytics"))
		db.waitCount(t, "sluice_events", 7, 30*time.Second)
		if err := first.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		// A second group reads the whole log again: a replay.
		startSink(t, c, db, db.dsn, c.Group("analytics-replay"))
		waitCommitted(t, c, c.Group("analytics-replay"), 7)
		if got := db.count(t, "sluice_events"); got != 7 {
			t.Errorf("events after replay: got %d, want 7", got)
		}
		r := analytics.NewReader(db.conn, db.name)
		tl, err := r.JobTimeline(context.Background(), "tenantA", "job1")
		if err != nil || len(tl) != 6 {
			t.Errorf("timeline: got %d events, err %v; want 6", len(tl), err)
		}
		atts, _, err := r.QueryAttempts(context.Background(), "tenantA", analytics.AttemptQuery{})
		if err != nil || len(atts) != 3 {
			t.Errorf("attempts: got %d, err %v; want 3", len(atts), err)
		}
	})
}

// waitCommitted waits until group has committed offsets summing to want
// on the events topic.
func waitCommitted(t testing.TB, c *eventlogtest.Cluster, group string, want int64) {
	t.Helper()
	adm := c.Admin(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := committed(t, adm, group, c.Topics.Events())
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s committed %d records, want %d", group, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func committed(t testing.TB, adm *kadm.Client, group, topic string) int64 {
	t.Helper()
	offs, err := adm.FetchOffsets(context.Background(), group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return 0 // not joined yet
	}
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil {
			sum += o.At
		}
	})
	return sum
}

func TestSinkCatchesUpAfterClickHouseOutage(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		db := newTestDB(t)
		produce(t, c, jobHistory("tenantA", "job1", "emails", "http://a.example/hook")...)

		// A port nothing listens on: ClickHouse is down.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "clickhouse://" + ln.Addr().String() + "/default"
		ln.Close()
		group := c.Group("analytics")
		down := startSink(t, c, db, closed, group)
		time.Sleep(time.Second) // several failed tries
		if got := committed(t, c.Admin(t), group, c.Topics.Events()); got != 0 {
			t.Fatalf("offsets committed while ClickHouse was down: %d, want 0", got)
		}
		if err := down.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}

		// ClickHouse is back: the same group catches up.
		startSink(t, c, db, db.dsn, group)
		db.waitCount(t, "sluice_events", 6, 30*time.Second)
		db.waitCount(t, "sluice_attempts", 3, 10*time.Second)
		waitCommitted(t, c, group, 6)
	})
}

func TestSinkFillsTargetsAfterRestart(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		db := newTestDB(t)
		events := jobHistory("tenantA", "job1", "emails", "http://a.example/hook")
		group := c.Group("analytics")
		produce(t, c, events[0])
		first := startSink(t, c, db, db.dsn, group)
		db.waitCount(t, "sluice_events", 1, 30*time.Second)
		waitCommitted(t, c, group, 1)
		if err := first.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		// A new sink knows nothing of job1; its attempts name no queue.
		produce(t, c, events[1])
		startSink(t, c, db, db.dsn, group)
		db.waitCount(t, "sluice_attempts", 1, 30*time.Second)
		atts, _, err := analytics.NewReader(db.conn, db.name).QueryAttempts(context.Background(), "tenantA",
			analytics.AttemptQuery{Queue: "emails"})
		if err != nil || len(atts) != 1 || atts[0].TargetUrl != "http://a.example/hook" {
			t.Errorf("attempts of queue emails: %v, %v; want attempt 1 with its queue and target looked up", atts, err)
		}
	})
}
