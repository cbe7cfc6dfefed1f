package eventlog_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
)

// produceInputs appends n keyed records to the events topic.
func produceInputs(t *testing.T, c *eventlogtest.Cluster, n int) {
	t.Helper()
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: c.Topics.Events(), Key: fmt.Appendf(nil, "k%d", i%97), Value: fmt.Appendf(nil, "%d", i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Append(ctx, recs...); err != nil {
		t.Fatalf("append inputs: %v", err)
	}
}

// echo answers every input with one output on the DLQ topic whose value is
// the input's value and whose key is the derived event id.
func echo(c *eventlogtest.Cluster, maxDelay time.Duration, handled *sync.Map) eventlog.Handler {
	return func(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
		if maxDelay > 0 {
			select {
			case <-time.After(rand.N(maxDelay)):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if handled != nil {
			handled.Store(string(rec.Value), true)
		}
		return []*kgo.Record{{
			Topic: c.Topics.DLQ(),
			Key:   []byte(eventlog.DeriveID(rec, 0)),
			Value: rec.Value,
		}}, nil
	}
}

// readOutputs reads the committed outputs until want distinct values were
// seen or the deadline passes; it returns distinct values and the total.
func readOutputs(t *testing.T, c *eventlogtest.Cluster, want int) (map[string]int, int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(c.Topics.DLQ()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := make(map[string]int)
	total := 0
	deadline := time.Now().Add(60 * time.Second)
	for len(seen) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			seen[string(r.Value)]++
			total++
		})
	}
	return seen, total
}

func committedTotal(t *testing.T, c *eventlogtest.Cluster, group string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := c.Admin(t).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	var sum int64
	offs.Each(func(o kadmOffset) { sum += o.At })
	return sum
}

func startRunner(t *testing.T, cfg eventlog.RunnerConfig) *eventlog.Runner {
	t.Helper()
	r, err := eventlog.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func stopRunner(t *testing.T, r *eventlog.Runner) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Errorf("stop runner: %v", err)
	}
}

func TestRunnerHandlesEveryRecordOnce(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		const n = 2000
		produceInputs(t, c, n)
		group := c.Group("echo")
		r := startRunner(t, eventlog.RunnerConfig{
			Brokers: c.Brokers, Group: group, Topics: []string{c.Topics.Events()},
			Handler: echo(c, 3*time.Millisecond, nil), MaxInFlight: 32,
		})
		seen, total := readOutputs(t, c, n)
		stopRunner(t, r)
		if len(seen) != n {
			t.Fatalf("distinct outputs: got %d, want %d", len(seen), n)
		}
		if total != n {
			t.Errorf("outputs without a crash: got %d, want exactly %d", total, n)
		}
		if got := committedTotal(t, c, group); got != n {
			t.Errorf("committed offsets sum: got %d, want %d", got, n)
		}
	})
}

func TestRunnerResumesAfterStop(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		const n = 3000
		produceInputs(t, c, n)
		group := c.Group("resume")
		var handled sync.Map
		cfg := eventlog.RunnerConfig{
			Brokers: c.Brokers, Group: group, Topics: []string{c.Topics.Events()},
			Handler: echo(c, 5*time.Millisecond, &handled), MaxInFlight: 4, MaxWindow: 64,
		}
		first := startRunner(t, cfg)
		// Stop the first runner part way through.
		deadline := time.Now().Add(30 * time.Second)
		for count(&handled) < n/10 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		// A short deadline cancels the handlers in flight: their records
		// were never committed and must be handled by the next runner.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		if err := first.Stop(ctx); err != nil {
			t.Errorf("stop first runner: %v", err)
		}
		cancel()
		second := startRunner(t, cfg)
		seen, _ := readOutputs(t, c, n)
		stopRunner(t, second)
		if len(seen) != n {
			t.Fatalf("distinct outputs after restart: got %d, want %d", len(seen), n)
		}
		if got := committedTotal(t, c, group); got != n {
			t.Errorf("committed offsets sum: got %d, want %d", got, n)
		}
	})
}

func TestRunnerRebalanceLosesNothing(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		const n = 3000
		produceInputs(t, c, n)
		group := c.Group("rebalance")
		cfg := eventlog.RunnerConfig{
			Brokers: c.Brokers, Group: group, Topics: []string{c.Topics.Events()},
			Handler: echo(c, 2*time.Millisecond, nil), MaxInFlight: 8, MaxWindow: 64,
		}
		a := startRunner(t, cfg)
		time.Sleep(300 * time.Millisecond)
		b := startRunner(t, cfg) // joins: partitions move between a and b mid-stream
		time.Sleep(300 * time.Millisecond)
		stopRunner(t, a) // leaves: its partitions go to b
		seen, _ := readOutputs(t, c, n)
		stopRunner(t, b)
		if len(seen) != n {
			t.Fatalf("distinct outputs across a rebalance: got %d, want %d", len(seen), n)
		}
		if got := committedTotal(t, c, group); got != n {
			t.Errorf("committed offsets sum: got %d, want %d", got, n)
		}
	})
}

func count(m *sync.Map) int {
	n := 0
	m.Range(func(_, _ any) bool { n++; return true })
	return n
}
