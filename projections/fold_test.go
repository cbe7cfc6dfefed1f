package projections_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const (
	succeeded = eventv1.Outcome_OUTCOME_SUCCEEDED
	retry     = eventv1.Outcome_OUTCOME_RETRY
	dead      = eventv1.Outcome_OUTCOME_DEAD
)

// foldCase is one job history and what the read model must say after it.
type foldCase struct {
	name    string
	events  func(at func(int) time.Time) []*eventv1.Event
	missing bool // the job must not exist
	state   sluicev1.JobState
	attempt int32
	status  int32
	lastErr string
	nextAt  bool // next_attempt_at is set
	// check, when set, checks more of the job.
	check func(t *testing.T, j *sluicev1.Job)
}

const (
	tenant = "acme"
	job    = "job-1"
	queue  = "emails"
)

var foldCases = []foldCase{
	{
		name: "enqueued",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{enqueued(tenant, job, queue, at(0))}
		},
		state: sluicev1.JobState_JOB_STATE_READY,
	},
	{
		name: "enqueued then succeeded",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, succeeded, 200, at(1)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_SUCCEEDED, attempt: 1, status: 200,
	},
	{
		name: "retry then succeeded",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 503, at(1)),
				attempted(tenant, job, 2, succeeded, 204, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_SUCCEEDED, attempt: 2, status: 204,
	},
	{
		name: "retrying",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 503, at(1)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_RETRYING, attempt: 1, status: 503, lastErr: "HTTP 503", nextAt: true,
	},
	{
		name: "retry then dead",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 500, at(1)),
				attempted(tenant, job, 2, dead, 410, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_DEAD, attempt: 2, status: 410, lastErr: "HTTP 410",
	},
	{
		name: "cancelled then a late outcome keeps cancelled",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				cancelled(tenant, job, at(1)),
				attempted(tenant, job, 1, succeeded, 200, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_CANCELLED, attempt: 1, status: 200,
	},
	{
		name: "cancelled while retrying then a late retry keeps cancelled",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 500, at(1)),
				cancelled(tenant, job, at(2)),
				attempted(tenant, job, 2, retry, 502, at(3)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_CANCELLED, attempt: 2, status: 502, lastErr: "HTTP 502",
	},
	{
		name: "cancel after success is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, succeeded, 200, at(1)),
				cancelled(tenant, job, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_SUCCEEDED, attempt: 1, status: 200,
	},
	{
		name: "cancel after dead is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, dead, 400, at(1)),
				cancelled(tenant, job, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_DEAD, attempt: 1, status: 400, lastErr: "HTTP 400",
	},
	{
		name: "outcome after success is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, succeeded, 200, at(1)),
				attempted(tenant, job, 2, dead, 500, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_SUCCEEDED, attempt: 1, status: 200,
	},
	{
		name: "duplicate events at later offsets are ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			first := attempted(tenant, job, 1, retry, 503, at(1))
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				first,
				enqueued(tenant, job, "other-queue", at(2)),
				first,
				attempted(tenant, job, 1, dead, 500, at(3)),
				cancelled(tenant, job, at(4)),
				cancelled(tenant, job, at(5)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_CANCELLED, attempt: 1, status: 503, lastErr: "HTTP 503",
	},
	{
		name: "an older attempt is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 2, retry, 500, at(1)),
				attempted(tenant, job, 1, succeeded, 200, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_RETRYING, attempt: 2, status: 500, lastErr: "HTTP 500", nextAt: true,
	},
	{
		name: "run_at in the future is scheduled",
		events: func(at func(int) time.Time) []*eventv1.Event {
			ev := enqueued(tenant, job, queue, at(0))
			ev.GetJobEnqueued().Spec.RunAt = timestampAt(at(0).Add(time.Hour))
			return []*eventv1.Event{ev}
		},
		state: sluicev1.JobState_JOB_STATE_SCHEDULED,
	},
	{
		name: "scheduled then cancelled",
		events: func(at func(int) time.Time) []*eventv1.Event {
			ev := enqueued(tenant, job, queue, at(0))
			ev.GetJobEnqueued().Spec.RunAt = timestampAt(at(0).Add(time.Hour))
			return []*eventv1.Event{ev, cancelled(tenant, job, at(1))}
		},
		state: sluicev1.JobState_JOB_STATE_CANCELLED,
	},
	{
		name: "run_at in the past is ready",
		events: func(at func(int) time.Time) []*eventv1.Event {
			ev := enqueued(tenant, job, queue, at(0))
			ev.GetJobEnqueued().Spec.RunAt = timestampAt(at(0).Add(-time.Hour))
			return []*eventv1.Event{ev}
		},
		state: sluicev1.JobState_JOB_STATE_READY,
	},
	{
		name: "retry then ready",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 503, at(1)),
				ready(tenant, job, 2, at(2)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_READY, attempt: 1, status: 503, lastErr: "HTTP 503",
	},
	{
		name: "a duplicate ready after the attempt it started is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			again := ready(tenant, job, 2, at(2))
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 503, at(1)),
				again,
				attempted(tenant, job, 2, retry, 504, at(3)),
				again,
				ready(tenant, job, 1, at(4)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_RETRYING, attempt: 2, status: 504, lastErr: "HTTP 504", nextAt: true,
	},
	{
		name: "scheduled then ready then succeeded",
		events: func(at func(int) time.Time) []*eventv1.Event {
			ev := enqueued(tenant, job, queue, at(0))
			ev.GetJobEnqueued().Spec.RunAt = timestampAt(at(0).Add(time.Hour))
			return []*eventv1.Event{ev, ready(tenant, job, 1, at(1)), attempted(tenant, job, 1, succeeded, 200, at(2))}
		},
		state: sluicev1.JobState_JOB_STATE_SUCCEEDED, attempt: 1, status: 200,
	},
	{
		name: "ready after cancel is ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				enqueued(tenant, job, queue, at(0)),
				attempted(tenant, job, 1, retry, 500, at(1)),
				cancelled(tenant, job, at(2)),
				ready(tenant, job, 2, at(3)),
			}
		},
		state: sluicev1.JobState_JOB_STATE_CANCELLED, attempt: 1, status: 500, lastErr: "HTTP 500",
	},
	{
		name: "events of a job never enqueued are ignored",
		events: func(at func(int) time.Time) []*eventv1.Event {
			return []*eventv1.Event{
				attempted(tenant, job, 1, succeeded, 200, at(0)),
				cancelled(tenant, job, at(1)),
			}
		},
		missing: true,
	},
}

func TestFold(t *testing.T) {
	t.Parallel()
	for _, tc := range foldCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runRedis(t, func(t *testing.T, b *backend) { testFold(t, b, tc) })
		})
	}
}

func testFold(t *testing.T, b *backend, tc foldCase) {
	ctx := context.Background()
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	l := &partitionLog{partition: 3, next: 100}
	recs := l.records(t, tc.events(at)...)

	// One record per transaction.
	store, prefix := newStore(t, b)
	for _, rec := range recs {
		mustApply(t, store, rec)
	}
	checkJob(t, store, tc)
	checkIndexes(t, store, tc)
	want := dump(t, b, prefix)

	// The whole history in one transaction ends the same.
	batched, batchedPrefix := newStore(t, b)
	mustApply(t, batched, recs...)
	if got := dump(t, b, batchedPrefix); !maps.Equal(got, want) {
		t.Errorf("one batch: got keys\n%v\nwant (one record at a time)\n%v", got, want)
	}

	// Re-applying the batch, or any record again in any order, changes
	// nothing.
	mustApply(t, store, recs...)
	for i := len(recs) - 1; i >= 0; i-- {
		mustApply(t, store, recs[i])
	}
	if got := dump(t, b, prefix); !maps.Equal(got, want) {
		t.Errorf("after re-applying: got keys\n%v\nwant\n%v", got, want)
	}
	if got, ok, err := store.Checkpoint(ctx, testTopic, 3); err != nil || !ok || got != l.next {
		t.Errorf("Checkpoint = %d, %t, %v; want %d, true, nil", got, ok, err, l.next)
	}
}

func mustApply(t *testing.T, s *projections.Store, recs ...*kgo.Record) {
	t.Helper()
	if err := s.Apply(context.Background(), recs); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func checkJob(t *testing.T, s *projections.Store, tc foldCase) {
	t.Helper()
	j, err := s.GetJob(context.Background(), tenant, job)
	if tc.missing {
		if !errors.Is(err, projections.ErrNotFound) {
			t.Fatalf("GetJob: got %v, %v; want ErrNotFound", j, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	if j.State != tc.state || j.Attempt != tc.attempt || j.LastStatusCode != tc.status || j.LastError != tc.lastErr {
		t.Errorf("got state %v attempt %d status %d error %q; want %v %d %d %q",
			j.State, j.Attempt, j.LastStatusCode, j.LastError, tc.state, tc.attempt, tc.status, tc.lastErr)
	}
	if got := j.NextAttemptAt != nil; got != tc.nextAt {
		t.Errorf("next attempt at %v; want set: %t", j.NextAttemptAt, tc.nextAt)
	}
	if j.Queue != queue || j.Id != job {
		t.Errorf("got job %s of queue %s; want %s of %s", j.Id, j.Queue, job, queue)
	}
	if tc.check != nil {
		tc.check(t, j)
	}
}

// checkIndexes checks that the job is listed under its state only, and
// counted once, and listed as a dead letter only when dead.
func checkIndexes(t *testing.T, s *projections.Store, tc foldCase) {
	t.Helper()
	ctx := context.Background()
	wantDead := 0
	if tc.state == sluicev1.JobState_JOB_STATE_DEAD && !tc.missing {
		wantDead = 1
	}
	for _, q := range []string{"", queue} {
		dls, _, err := s.ListDeadLetters(ctx, tenant, projections.DeadLetterQuery{DeadLetterFilter: projections.DeadLetterFilter{Queue: q}})
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		if len(dls) != wantDead {
			t.Errorf("ListDeadLetters(queue %q): got %d dead letters; want %d", q, len(dls), wantDead)
		}
	}
	counts, err := s.QueueCounts(ctx, tenant, queue)
	if err != nil {
		t.Fatalf("QueueCounts: %v", err)
	}
	for v := range sluicev1.JobState_name {
		st := sluicev1.JobState(v)
		want := 0
		if st == tc.state && !tc.missing {
			want = 1
		}
		if st != sluicev1.JobState_JOB_STATE_UNSPECIFIED && counts[st] != int64(want) {
			t.Errorf("count of %v = %d; want %d", st, counts[st], want)
		}
		if st == sluicev1.JobState_JOB_STATE_UNSPECIFIED && !tc.missing {
			want = 1 // every state
		}
		for _, q := range []string{"", queue} {
			jobs, _, err := s.ListJobs(ctx, tenant, projections.ListQuery{Queue: q, State: st})
			if err != nil {
				t.Fatalf("ListJobs: %v", err)
			}
			if len(jobs) != want {
				t.Errorf("ListJobs(queue %q, state %v): got %d jobs; want %d", q, st, len(jobs), want)
			}
		}
	}
}
