package projections_test

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/projections"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestApplyOffsetGuard(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, _ := newStore(t, b)
		mustApply(t, store, (&partitionLog{next: 7}).records(t, enqueued(tenant, job, queue, t0))...)
		// A different event at an offset already applied to the job, as
		// after a re-read: ignored.
		mustApply(t, store, (&partitionLog{next: 7}).records(t, cancelled(tenant, job, t0))...)
		checkState(t, store, sluicev1.JobState_JOB_STATE_READY)
		mustApply(t, store, (&partitionLog{next: 8}).records(t, cancelled(tenant, job, t0))...)
		checkState(t, store, sluicev1.JobState_JOB_STATE_CANCELLED)
	})
}

func TestApplyCheckpoint(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, _ := newStore(t, b)
		l := &partitionLog{partition: 2, next: 40}
		recs := l.records(t, enqueued(tenant, job, queue, t0), cancelled(tenant, job, t0))
		garbage := &kgo.Record{Topic: testTopic, Partition: 2, Offset: l.next, Value: []byte("\xffnot an event")}
		mustApply(t, store, append(recs, garbage)...)
		if got, ok, err := store.Checkpoint(ctx, testTopic, 2); err != nil || !ok || got != 43 {
			t.Errorf("Checkpoint after an undecodable record = %d, %t, %v; want 43, true, nil", got, ok, err)
		}
		mustApply(t, store, recs[0]) // an older batch never moves the checkpoint back
		if got, _, _ := store.Checkpoint(ctx, testTopic, 2); got != 43 {
			t.Errorf("Checkpoint after re-applying an older record = %d; want 43", got)
		}
		if _, ok, err := store.Checkpoint(ctx, testTopic, 5); err != nil || ok {
			t.Errorf("Checkpoint of an unread partition = %t, %v; want none", ok, err)
		}
	})
}

func TestApplyAfterScriptFlush(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, _ := newStore(t, b)
		l := &partitionLog{}
		mustApply(t, store, l.records(t, enqueued(tenant, job, queue, t0))...)
		if err := b.rdb.ScriptFlush(context.Background()).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		mustApply(t, store, l.records(t, cancelled(tenant, job, t0))...)
		checkState(t, store, sluicev1.JobState_JOB_STATE_CANCELLED)
	})
}

func TestApplyAfterFlush(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, prefix := newStore(t, b)
		l := &partitionLog{}
		mustApply(t, store, l.records(t, enqueued(tenant, job, queue, t0))...)
		flush(t, b, prefix)

		// The store's writes belong to the flushed read model: refused as
		// a whole, so the checkpoint cannot skip the lost records.
		recs := l.records(t, enqueued(tenant, "job-2", queue, t0))
		if err := store.Apply(context.Background(), recs); !errors.Is(err, projections.ErrEpochChanged) {
			t.Fatalf("Apply after a flush: got %v; want ErrEpochChanged", err)
		}
		if keys := scanKeys(t, b, prefix); len(keys) != 0 {
			t.Errorf("Apply after a flush wrote %v; want nothing", keys)
		}
		// Re-read from the start, as the Projector does.
		l = &partitionLog{}
		mustApply(t, store, l.records(t, enqueued(tenant, job, queue, t0), enqueued(tenant, "job-2", queue, t0))...)
		checkState(t, store, sluicev1.JobState_JOB_STATE_READY)
	})
}

func TestRebuild(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, prefix := newStore(t, b)
		f := newListFixture(t)
		mustApply(t, store, f.recs...)
		want := dump(t, b, prefix)

		// Keys under another prefix stay.
		other, otherPrefix := newStore(t, b)
		mustApply(t, other, f.recs...)

		n, err := store.Rebuild(ctx)
		if err != nil {
			t.Fatalf("Rebuild: %v", err)
		}
		if keys := scanKeys(t, b, prefix); n != int64(len(want)) || len(keys) != 0 {
			t.Errorf("Rebuild deleted %d keys and left %v; want %d deleted, none left", n, keys, len(want))
		}
		if got := dump(t, b, otherPrefix); !maps.Equal(got, want) {
			t.Errorf("Rebuild touched another prefix's keys")
		}
		if err := store.Apply(ctx, f.recs); !errors.Is(err, projections.ErrEpochChanged) {
			t.Fatalf("Apply after Rebuild: got %v; want ErrEpochChanged", err)
		}
		mustApply(t, store, f.recs...)
		if got := dump(t, b, prefix); !maps.Equal(got, want) {
			t.Errorf("after rebuilding: got\n%v\nwant\n%v", got, want)
		}
	})
}

func TestApplyWhileRebuilding(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, prefix := newStore(t, b)
		l := &partitionLog{}
		mustApply(t, store, l.records(t, enqueued(tenant, job, queue, t0))...)
		if err := b.rdb.Set(ctx, prefix+"epoch", "rebuilding:test", 0).Err(); err != nil {
			t.Fatalf("mark rebuilding: %v", err)
		}
		recs := l.records(t, cancelled(tenant, job, t0))
		if err := store.Apply(ctx, recs); !errors.Is(err, projections.ErrEpochChanged) {
			t.Fatalf("first Apply while rebuilding: got %v; want ErrEpochChanged", err)
		}
		if err := store.Apply(ctx, recs); !errors.Is(err, projections.ErrRebuilding) {
			t.Fatalf("next Apply while rebuilding: got %v; want ErrRebuilding", err)
		}
		checkState(t, store, sluicev1.JobState_JOB_STATE_READY)
	})
}

func checkState(t *testing.T, s *projections.Store, want sluicev1.JobState) {
	t.Helper()
	j, err := s.GetJob(context.Background(), tenant, job)
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	if j.State != want {
		t.Errorf("state = %v; want %v", j.State, want)
	}
}
