package projections_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
)

func TestCatchUpConfigValidate(t *testing.T) {
	t.Parallel()
	err := projections.CatchUpConfig{MaxBatch: -1}.WithDefaults().Validate()
	for _, field := range []string{"Brokers", "Topic", "MaxBatch"} {
		if err == nil || !strings.Contains(err.Error(), "CatchUpConfig."+field) {
			t.Errorf("Validate() = %v; want an error naming CatchUpConfig.%s", err, field)
		}
	}
}

// TestCatchUpReproducesTheLiveReadModel folds a history with a Projector
// as it is appended, then folds the same log with CatchUp into an empty
// read model, and compares the two key by key: types, values and TTLs.
func TestCatchUpReproducesTheLiveReadModel(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		t.Parallel()
		// One after the other: both fold the cluster's one events topic,
		// and each compares read models of the whole topic.
		t.Run("miniredis", func(t *testing.T) { testCatchUp(t, c, newMiniredis(t)) })
		t.Run("redis", func(t *testing.T) { testCatchUp(t, c, newRealRedis(t)) })
	})
}

func testCatchUp(t *testing.T, c *eventlogtest.Cluster, b *backend) {
	ctx := context.Background()
	live, livePrefix := newStore(t, b)
	jobs := newE2EJobs("tenant-" + b.name)
	// Retried, re-dead and purged jobs, besides the e2e history's states.
	late := t0.Add(time.Minute)
	jobs.batches = append(jobs.batches, []*eventv1.Event{
		retried(jobs.tenant, "job-03", 2, `{"fixed":true}`, late),
		attempted(jobs.tenant, "job-03", 2, succeeded, 200, late),
		purged(jobs.tenant, "job-07", late),
	})
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("NewAppender: %v", err)
	}
	t.Cleanup(app.Close)
	topic := c.Topics.Events()
	p := startProjector(t, live, projections.Config{
		Brokers: c.Brokers, Topic: topic, Group: c.Group("catchup-" + b.name),
		MaxBatch: 7, MaxBackoff: 200 * time.Millisecond, Logger: testLogger(t),
	})
	// The live read model folds each batch as it arrives, in small polls.
	for i, batch := range jobs.batches {
		if i%2 == 0 {
			err = app.Append(ctx, encode(t, topic, batch)...)
		} else {
			err = app.AppendAtomic(ctx, encode(t, topic, batch))
		}
		if err != nil {
			t.Fatalf("append batch %d: %v", i, err)
		}
	}
	waitCaughtUp(t, c, live, topic)
	stopProjector(t, p)

	cfg := projections.CatchUpConfig{Brokers: c.Brokers, Topic: topic}
	t.Run("into an empty read model", func(t *testing.T) {
		rebuilt, rebuiltPrefix := newStore(t, b)
		res, err := rebuilt.CatchUp(ctx, cfg)
		if err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		if want := int64(countEvents(jobs)); res.Records < want {
			t.Errorf("CatchUp read %d records; want at least the %d appended here", res.Records, want)
		}
		compareReadModels(t, b, livePrefix, rebuiltPrefix)
	})
	t.Run("after Rebuild", func(t *testing.T) {
		before := dumpWithTTL(t, b, livePrefix)
		if _, err := live.Rebuild(ctx); err != nil {
			t.Fatalf("Rebuild: %v", err)
		}
		if _, err := live.CatchUp(ctx, cfg); err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		compareDumps(t, before, dumpWithTTL(t, b, livePrefix))
	})
	t.Run("caught up is a no-op", func(t *testing.T) {
		res, err := live.CatchUp(ctx, cfg)
		if err != nil || res.Records != 0 {
			t.Errorf("CatchUp of a caught-up read model: got %+v, %v; want 0 records, nil", res, err)
		}
	})
	t.Run("missing topic", func(t *testing.T) {
		_, err := live.CatchUp(ctx, projections.CatchUpConfig{Brokers: c.Brokers, Topic: c.Topics.Prefix + "nope"})
		if err == nil {
			t.Fatal("CatchUp of a missing topic: got nil error")
		}
	})
	t.Run("while rebuilding", func(t *testing.T) {
		if err := b.rdb.Set(ctx, livePrefix+"epoch", "rebuilding:x", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		defer b.rdb.Del(ctx, livePrefix+"epoch")
		if _, err := live.CatchUp(ctx, cfg); !errors.Is(err, projections.ErrRebuilding) {
			t.Errorf("CatchUp while rebuilding: got %v; want ErrRebuilding", err)
		}
	})
}

func countEvents(j *e2eJobs) int {
	n := 0
	for _, b := range j.batches {
		n += len(b)
	}
	return n
}

// waitCaughtUp waits until the store's checkpoints reach the last record
// of every partition of topic.
func waitCaughtUp(t *testing.T, c *eventlogtest.Cluster, s *projections.Store, topic string) {
	t.Helper()
	ctx := context.Background()
	ends, err := c.Admin(t).ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("ListCommittedOffsets: %v", err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		behind := ""
		for _, o := range ends[topic] {
			// A transaction marker may follow the last record.
			off, _, err := s.Checkpoint(ctx, topic, o.Partition)
			if err != nil {
				t.Fatalf("Checkpoint: %v", err)
			}
			if o.Offset > 0 && off < o.Offset-1 {
				behind += fmt.Sprintf(" %d at %d of %d", o.Partition, off, o.Offset)
			}
		}
		if behind == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("projector did not catch up: partitions%s", behind)
		}
	}
}

// keyState is a key's content and its time to live.
type keyState struct {
	content string
	ttl     time.Duration // -1 for none
}

// dumpWithTTL is dump with each key's TTL.
func dumpWithTTL(t *testing.T, b *backend, prefix string) map[string]keyState {
	t.Helper()
	out := make(map[string]keyState)
	for name, content := range dump(t, b, prefix) {
		ttl, err := b.rdb.PTTL(context.Background(), prefix+name).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", name, err)
		}
		if ttl < 0 {
			ttl = -1
		}
		out[name] = keyState{content: content, ttl: ttl}
	}
	return out
}

func compareReadModels(t *testing.T, b *backend, livePrefix, rebuiltPrefix string) {
	t.Helper()
	compareDumps(t, dumpWithTTL(t, b, livePrefix), dumpWithTTL(t, b, rebuiltPrefix))
}

// ttlTolerance is how far two TTLs of the same key may differ: the time
// between reading one and the other.
const ttlTolerance = 5 * time.Second

// compareDumps reports every key that differs between the live read model
// and the rebuilt one.
func compareDumps(t *testing.T, live, rebuilt map[string]keyState) {
	t.Helper()
	if len(live) == 0 {
		t.Fatal("the live read model is empty")
	}
	for _, name := range slices.Sorted(maps.Keys(live)) {
		l, ok := rebuilt[name]
		switch {
		case !ok:
			t.Errorf("key %s: missing from the rebuilt read model (live: %s)", name, live[name].content)
		case l.content != live[name].content:
			t.Errorf("key %s: rebuilt %s; live %s", name, l.content, live[name].content)
		case (l.ttl < 0) != (live[name].ttl < 0) || (l.ttl-live[name].ttl).Abs() > ttlTolerance:
			t.Errorf("key %s: rebuilt TTL %v; live %v", name, l.ttl, live[name].ttl)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(rebuilt)) {
		if _, ok := live[name]; !ok {
			t.Errorf("key %s: only in the rebuilt read model: %s", name, rebuilt[name].content)
		}
	}
}
