package delayline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	"github.com/sluicehq/sluice/retrytiers/delayline"
)

func startLine(t *testing.T, c *eventlogtest.Cluster) *delayline.Line {
	t.Helper()
	l, err := delayline.New(delayline.Config{Brokers: c.Brokers, Topics: c.Topics})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return l
}

func stopLine(t *testing.T, l *delayline.Line) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Error(err)
	}
}

// schedule appends one timer per delay and returns the due times by job id.
func schedule(t *testing.T, c *eventlogtest.Cluster, delays []time.Duration) map[string]time.Time {
	t.Helper()
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	now := time.Now()
	due := make(map[string]time.Time)
	var recs []*kgo.Record
	for i, d := range delays {
		id := fmt.Sprintf("job-%d", i)
		ev := eventlog.NewEvent(eventlog.Meta{TenantID: "ten", JobID: id, OccurredAt: now}, &eventv1.JobReady{Attempt: 2})
		rec, err := delayline.Schedule(c.Topics, ev, now.Add(d), now)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
		due[id] = now.Add(d)
	}
	if err := app.Append(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	return due
}

// arrivals reads job.ready events until want arrived or the deadline.
func arrivals(t *testing.T, c *eventlogtest.Cluster, want int, within time.Duration) map[string][]time.Time {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(c.Topics.Events()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := make(map[string][]time.Time)
	deadline := time.Now().Add(within)
	for len(got) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			got[string(r.Key)] = append(got[string(r.Key)], time.Now())
		})
	}
	return got
}

func TestLineReleasesOnTime(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		delays := []time.Duration{0, 300 * time.Millisecond, 1200 * time.Millisecond, 2500 * time.Millisecond,
			5 * time.Second, 6500 * time.Millisecond, 12 * time.Second}
		due := schedule(t, c, delays)
		l := startLine(t, c)
		defer stopLine(t, l)
		got := arrivals(t, c, len(delays), 40*time.Second)
		for id, at := range due {
			arr := got[id]
			if len(arr) != 1 {
				t.Errorf("%s: released %d times, want once", id, len(arr))
				continue
			}
			late := arr[0].Sub(at)
			delay := time.Until(at) // negative: how long ago it was due
			tolerance := max(time.Second, time.Duration(0.05*float64(-delay)))
			if late < -50*time.Millisecond || late > tolerance {
				t.Errorf("%s: released %s after due, want within [0, %s]", id, late, tolerance)
			}
		}
	})
}

func TestLineSurvivesRestartExactlyOnce(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		var delays []time.Duration
		for i := 0; i < 200; i++ {
			delays = append(delays, time.Duration(i%40)*100*time.Millisecond)
		}
		due := schedule(t, c, delays)
		l := startLine(t, c)
		time.Sleep(1500 * time.Millisecond)
		// Stop with no grace: waiting timers are cancelled mid-wait.
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_ = l.Stop(ctx)
		cancel()
		l2 := startLine(t, c)
		defer stopLine(t, l2)
		got := arrivals(t, c, len(due), 40*time.Second)
		time.Sleep(500 * time.Millisecond)
		for id := range due {
			if n := len(got[id]); n != 1 {
				t.Errorf("%s: released %d times, want exactly once", id, n)
			}
		}
	})
}
