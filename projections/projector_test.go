package projections_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := projections.Config{MaxBatch: -1}.WithDefaults().Validate()
	for _, field := range []string{"Brokers", "Topic", "MaxBatch"} {
		if err == nil || !strings.Contains(err.Error(), "Config."+field) {
			t.Errorf("Validate() = %v; want an error naming Config.%s", err, field)
		}
	}
	if err := (projections.Config{Brokers: []string{"b:9092"}, Topic: "t"}).WithDefaults().Validate(); err != nil {
		t.Errorf("Validate() of a valid config = %v; want nil", err)
	}
}

// e2eJobs is a history of several jobs of one tenant and the state each
// ends in.
type e2eJobs struct {
	tenant  string
	batches [][]*eventv1.Event
	want    map[string]sluicev1.JobState
}

func newE2EJobs(tenant string) *e2eJobs {
	j := &e2eJobs{tenant: tenant, want: map[string]sluicev1.JobState{}}
	var enq, outcomes []*eventv1.Event
	for i := range 24 {
		id := fmt.Sprintf("job-%02d", i)
		at := t0.Add(time.Duration(i) * time.Second)
		enq = append(enq, enqueued(tenant, id, "emails", at))
		switch i % 4 {
		case 0:
			j.want[id] = sluicev1.JobState_JOB_STATE_READY
		case 1:
			outcomes = append(outcomes, attempted(tenant, id, 1, retry, 500, at), attempted(tenant, id, 2, succeeded, 200, at))
			j.want[id] = sluicev1.JobState_JOB_STATE_SUCCEEDED
		case 2:
			outcomes = append(outcomes, cancelled(tenant, id, at), attempted(tenant, id, 1, succeeded, 200, at))
			j.want[id] = sluicev1.JobState_JOB_STATE_CANCELLED
		case 3:
			outcomes = append(outcomes, attempted(tenant, id, 1, dead, 410, at))
			j.want[id] = sluicev1.JobState_JOB_STATE_DEAD
		}
	}
	j.batches = [][]*eventv1.Event{enq, outcomes}
	return j
}

func TestProjector(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		t.Parallel()
		runRedis(t, func(t *testing.T, b *backend) { testProjector(t, c, b) })
	})
}

func testProjector(t *testing.T, c *eventlogtest.Cluster, b *backend) {
	ctx := context.Background()
	store, prefix := newStore(t, b)
	// The Redis backends share the cluster: each folds its own tenant.
	jobs := newE2EJobs("tenant-" + b.name)
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("NewAppender: %v", err)
	}
	t.Cleanup(app.Close)
	topic := c.Topics.Events()
	// Enqueues through the idempotent producer, outcomes in a transaction.
	if err := app.Append(ctx, encode(t, topic, jobs.batches[0])...); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := app.AppendAtomic(ctx, encode(t, topic, jobs.batches[1])); err != nil {
		t.Fatalf("AppendAtomic: %v", err)
	}
	cfg := projections.Config{
		Brokers: c.Brokers, Topic: topic, Group: c.Group("projections-" + b.name),
		MaxBackoff: 200 * time.Millisecond, Logger: testLogger(t),
	}

	t.Run("fold", func(t *testing.T) {
		p := startProjector(t, store, cfg)
		waitForStates(t, store, jobs)
		stopProjector(t, p)
	})
	t.Run("start at the checkpoints", func(t *testing.T) {
		// A job deleted behind the projector's back stays deleted: its
		// partition is not read again from the start.
		gone := prefix + "t:" + jobs.tenant + ":job:job-01"
		if err := b.rdb.Del(ctx, gone).Err(); err != nil {
			t.Fatalf("delete %s: %v", gone, err)
		}
		p := startProjector(t, store, cfg)
		recs := encode(t, topic, []*eventv1.Event{cancelled(jobs.tenant, "job-01", t0)})
		if err := app.Append(ctx, recs...); err != nil {
			t.Fatalf("Append: %v", err)
		}
		waitForCheckpoint(t, store, recs[0])
		stopProjector(t, p)
		if j, err := store.GetJob(ctx, jobs.tenant, "job-01"); !errors.Is(err, projections.ErrNotFound) {
			t.Errorf("GetJob of the deleted job: got %v, %v; want ErrNotFound (its partition was read again)", j, err)
		}
	})
	t.Run("rebuild from the log into an empty redis", func(t *testing.T) {
		flush(t, b, prefix)
		p := startProjector(t, store, cfg)
		waitForStates(t, store, jobs)
		stopProjector(t, p)
	})
	t.Run("flush while running", func(t *testing.T) {
		p := startProjector(t, store, cfg)
		waitForStates(t, store, jobs)
		flush(t, b, prefix)
		// The next event finds the read model reset; the projector
		// starts over and rebuilds everything.
		last := []*eventv1.Event{cancelled(jobs.tenant, "job-00", t0)}
		if err := app.Append(ctx, encode(t, topic, last)...); err != nil {
			t.Fatalf("Append: %v", err)
		}
		jobs.want["job-00"] = sluicev1.JobState_JOB_STATE_CANCELLED
		waitForStates(t, store, jobs)
		stopProjector(t, p)
	})
	t.Run("rebuild while running", func(t *testing.T) {
		p := startProjector(t, store, cfg)
		if _, err := store.Rebuild(ctx); err != nil {
			t.Fatalf("Rebuild: %v", err)
		}
		last := []*eventv1.Event{enqueued(jobs.tenant, "job-new", "emails", t0)}
		if err := app.Append(ctx, encode(t, topic, last)...); err != nil {
			t.Fatalf("Append: %v", err)
		}
		jobs.want["job-new"] = sluicev1.JobState_JOB_STATE_READY
		waitForStates(t, store, jobs)
		stopProjector(t, p)
	})
}

func encode(t *testing.T, topic string, evs []*eventv1.Event) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, ev := range evs {
		rec, err := eventlog.EncodeEvent(topic, ev)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		recs[i] = rec
	}
	return recs
}

func startProjector(t *testing.T, store *projections.Store, cfg projections.Config) *projections.Projector {
	t.Helper()
	p, err := projections.NewProjector(store, cfg)
	if err != nil {
		t.Fatalf("NewProjector: %v", err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopProjector(t, p) })
	return p
}

func stopProjector(t *testing.T, p *projections.Projector) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// waitForCheckpoint waits until rec's partition was read past rec.
func waitForCheckpoint(t *testing.T, s *projections.Store, rec *kgo.Record) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		off, _, err := s.Checkpoint(context.Background(), rec.Topic, rec.Partition)
		if err != nil {
			t.Fatalf("Checkpoint: %v", err)
		}
		if off > rec.Offset {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("checkpoint of partition %d never passed offset %d", rec.Partition, rec.Offset)
}

// waitForStates waits until every job in want shows its state.
func waitForStates(t *testing.T, s *projections.Store, jobs *e2eJobs) {
	t.Helper()
	want := jobs.want
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	deadline := time.Now().Add(60 * time.Second)
	var got map[string]sluicev1.JobState
	for time.Now().Before(deadline) {
		var err error
		got, err = s.JobStates(context.Background(), jobs.tenant, ids)
		if err != nil {
			t.Fatalf("JobStates: %v", err)
		}
		if statesEqual(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job states: got %v; want %v", got, want)
}

func statesEqual(a, b map[string]sluicev1.JobState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
