package projections_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestGetJob(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, _ := newStore(t, b)
		l := &partitionLog{}
		ev := enqueued("acme", "job-1", "emails", t0)
		spec := ev.GetJobEnqueued().Spec
		spec.IdempotencyKey = "idem-1"
		spec.Priority = sluicev1.Priority_PRIORITY_HIGH
		spec.RetryPolicy = &sluicev1.RetryPolicy{Schedule: []string{"5s", "5m"}}
		mustApply(t, store, l.records(t, ev)...)

		j, err := store.GetJob(ctx, "acme", "job-1")
		if err != nil {
			t.Fatalf("GetJob: %v", err)
		}
		payload, _ := structpb.NewValue(map[string]any{"n": 1, "tags": []any{"a", "b"}})
		want := &sluicev1.Job{
			Id: "job-1", Queue: "emails", State: sluicev1.JobState_JOB_STATE_READY,
			MaxAttempts: 5, Payload: payload, Target: spec.Target, IdempotencyKey: "idem-1",
			CreatedAt: spec.CreatedAt, UpdatedAt: ev.OccurredAt, Priority: sluicev1.Priority_PRIORITY_HIGH,
			Headers: map[string]string{"x-test": "1"}, RetryPolicy: spec.RetryPolicy,
		}
		if !proto.Equal(j, want) {
			t.Errorf("GetJob:\ngot  %v\nwant %v", j, want)
		}
	})
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, _ := newStore(t, b)
		l := &partitionLog{}
		mustApply(t, store, l.records(t, enqueued("acme", "job-1", "emails", t0))...)

		if j, err := store.GetJob(ctx, "globex", "job-1"); !errors.Is(err, projections.ErrNotFound) {
			t.Errorf("GetJob of another tenant's job: got %v, %v; want ErrNotFound", j, err)
		}
		if got, err := store.JobStates(ctx, "globex", []string{"job-1"}); err != nil || len(got) != 0 {
			t.Errorf("JobStates of another tenant's job: got %v, %v; want none", got, err)
		}
		if jobs, _, err := store.ListJobs(ctx, "globex", projections.ListQuery{}); err != nil || len(jobs) != 0 {
			t.Errorf("ListJobs of another tenant: got %d jobs, %v; want none", len(jobs), err)
		}
		if counts, err := store.QueueCounts(ctx, "globex", "emails"); err != nil || counts[sluicev1.JobState_JOB_STATE_READY] != 0 {
			t.Errorf("QueueCounts of another tenant: got %v, %v; want zeros", counts, err)
		}
		if _, err := store.GetJob(ctx, "acme", "job-1"); err != nil {
			t.Errorf("GetJob of the tenant's own job: %v", err)
		}
	})
}

// listFixture is a tenant's jobs over several queues and states, plus a
// job of another tenant.
type listFixture struct {
	recs []*kgo.Record
	// ids newest first, with their queue and final state.
	ids    []string
	queues map[string]string
	states map[string]sluicev1.JobState
}

// queues of the fixture; "a:b" checks that key components are escaped.
var listQueues = []string{"emails", "hooks", "a:b", "a"}

func newListFixture(t *testing.T) *listFixture {
	t.Helper()
	f := &listFixture{queues: map[string]string{}, states: map[string]sluicev1.JobState{}}
	var evs []*eventv1.Event
	for i := range 47 {
		id := fmt.Sprintf("job-%02d", i)
		q := listQueues[i%len(listQueues)]
		at := t0.Add(time.Duration(i) * time.Minute)
		evs = append(evs, enqueued("acme", id, q, at))
		f.queues[id], f.states[id] = q, sluicev1.JobState_JOB_STATE_READY
		switch i % 3 {
		case 1:
			evs = append(evs, attempted("acme", id, 1, succeeded, 200, at.Add(time.Second)))
			f.states[id] = sluicev1.JobState_JOB_STATE_SUCCEEDED
		case 2:
			evs = append(evs, cancelled("acme", id, at.Add(time.Second)))
			f.states[id] = sluicev1.JobState_JOB_STATE_CANCELLED
		}
		f.ids = append([]string{id}, f.ids...)
	}
	evs = append(evs, enqueued("globex", "job-x", "emails", t0))
	l := &partitionLog{}
	f.recs = l.records(t, evs...)
	return f
}

// want returns the fixture's ids matching q, newest first.
func (f *listFixture) want(q projections.ListQuery) []string {
	var ids []string
	for _, id := range f.ids {
		if (q.Queue == "" || f.queues[id] == q.Queue) && (q.State == 0 || f.states[id] == q.State) {
			ids = append(ids, id)
		}
	}
	return ids
}

func TestListJobs(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, _ := newStore(t, b)
		f := newListFixture(t)
		mustApply(t, store, f.recs...)

		states := []sluicev1.JobState{0, sluicev1.JobState_JOB_STATE_READY, sluicev1.JobState_JOB_STATE_SUCCEEDED,
			sluicev1.JobState_JOB_STATE_CANCELLED, sluicev1.JobState_JOB_STATE_DEAD}
		for _, q := range append([]string{""}, listQueues...) {
			for _, st := range states {
				for _, size := range []int{0, 1, 5, 7, 100} {
					query := projections.ListQuery{Queue: q, State: st, PageSize: size}
					if got, want := listAll(t, store, query), f.want(query); !slices.Equal(got, want) {
						t.Errorf("ListJobs(%+v): got %v; want %v", query, got, want)
					}
				}
			}
		}
	})
}

// listAll pages through a listing and returns the job ids in order,
// checking that every page but the last is full.
func listAll(t *testing.T, s *projections.Store, q projections.ListQuery) []string {
	t.Helper()
	size := q.PageSize
	if size == 0 {
		size = projections.DefaultPageSize
	}
	var ids []string
	for page := 0; ; page++ {
		jobs, next, err := s.ListJobs(context.Background(), "acme", q)
		if err != nil {
			t.Fatalf("ListJobs(%+v): %v", q, err)
		}
		for _, j := range jobs {
			ids = append(ids, j.Id)
		}
		if next == "" {
			return ids
		}
		if len(jobs) != size {
			t.Fatalf("ListJobs(%+v) page %d: got %d jobs and a next page; want %d", q, page, len(jobs), size)
		}
		if page > 100 {
			t.Fatalf("ListJobs(%+v): too many pages", q)
		}
		q.PageToken = next
	}
}

func TestListJobsInvalid(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, _ := newStore(t, b)
		for _, tc := range []struct {
			q     projections.ListQuery
			field string
		}{
			{projections.ListQuery{PageSize: 1001}, "pageSize"},
			{projections.ListQuery{PageSize: -1}, "pageSize"},
			{projections.ListQuery{PageToken: "%%%"}, "pageToken"},
			{projections.ListQuery{PageToken: "bm90LWEtbWVtYmVy"}, "pageToken"}, // "not-a-member"
			{projections.ListQuery{State: 99}, "state"},
		} {
			_, _, err := store.ListJobs(context.Background(), "acme", tc.q)
			var fe *projections.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("ListJobs(%+v): got %v; want a FieldError naming %s", tc.q, err, tc.field)
			}
		}
		if _, _, err := store.ListJobs(context.Background(), "acme", projections.ListQuery{PageSize: 1000}); err != nil {
			t.Errorf("ListJobs with page size 1000: %v", err)
		}
	})
}

func TestQueueCounts(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, _ := newStore(t, b)
		f := newListFixture(t)
		check := func(when string) {
			for _, q := range listQueues {
				want := map[sluicev1.JobState]int64{}
				for v := range sluicev1.JobState_name {
					if v != 0 {
						want[sluicev1.JobState(v)] = 0
					}
				}
				for _, id := range f.want(projections.ListQuery{Queue: q}) {
					want[f.states[id]]++
				}
				got, err := store.QueueCounts(ctx, "acme", q)
				if err != nil {
					t.Fatalf("QueueCounts: %v", err)
				}
				if !maps.Equal(got, want) {
					t.Errorf("%s: QueueCounts(%s) = %v; want %v", when, q, got, want)
				}
			}
		}
		mustApply(t, store, f.recs...)
		check("after applying")
		mustApply(t, store, f.recs...)
		for _, rec := range f.recs {
			mustApply(t, store, rec)
		}
		check("after re-applying")
	})
}

func TestJobStates(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, _ := newStore(t, b)
		f := newListFixture(t)
		mustApply(t, store, f.recs...)
		ids := []string{"job-00", "job-01", "job-02", "job-01", "nope"}
		got, err := store.JobStates(context.Background(), "acme", ids)
		if err != nil {
			t.Fatalf("JobStates: %v", err)
		}
		want := map[string]sluicev1.JobState{
			"job-00": sluicev1.JobState_JOB_STATE_READY,
			"job-01": sluicev1.JobState_JOB_STATE_SUCCEEDED,
			"job-02": sluicev1.JobState_JOB_STATE_CANCELLED,
		}
		if !maps.Equal(got, want) {
			t.Errorf("JobStates(%v) = %v; want %v", ids, got, want)
		}
		if got, err := store.JobStates(context.Background(), "acme", nil); err != nil || len(got) != 0 {
			t.Errorf("JobStates(nil) = %v, %v; want none", got, err)
		}
	})
}
