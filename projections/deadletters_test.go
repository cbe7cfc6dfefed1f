package projections_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func urlTarget(u string) *sluicev1.Target {
	return &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: u}}
}

// deadSpec is the spec of the dead jobs of the fixture.
func deadSpec(queue string, target *sluicev1.Target, created time.Time) *eventv1.JobSpec {
	return &eventv1.JobSpec{
		Queue:       queue,
		Payload:     []byte(`{"order":7}`),
		Target:      target,
		MaxAttempts: 2,
		RetryPolicy: &sluicev1.RetryPolicy{Schedule: []string{"1s"}},
		Timeout:     durationpb.New(3 * time.Second),
		Headers:     map[string]string{"x-a": "1"},
		CreatedAt:   timestamppb.New(created),
	}
}

// deadHistory is a job that failed once with 503, then died at died with
// its last error and reason.
func deadHistory(tenantID, jobID string, spec *eventv1.JobSpec, died time.Time, status int32, lastErr, reason string) []*eventv1.Event {
	meta := func(at time.Time) eventlog.Meta {
		return eventlog.Meta{TenantID: tenantID, JobID: jobID, OccurredAt: at}
	}
	created := spec.CreatedAt.AsTime()
	return []*eventv1.Event{
		eventlog.NewEvent(meta(created), &eventv1.JobEnqueued{Spec: spec}),
		eventlog.NewEvent(meta(created.Add(time.Second)), &eventv1.JobAttempted{
			Attempt: 1, StartedAt: timestamppb.New(created), Latency: durationpb.New(40 * time.Millisecond),
			StatusCode: 503, Error: "HTTP 503", ResponseExcerpt: []byte("busy\xff"),
			Outcome: eventv1.Outcome_OUTCOME_RETRY, NextAttemptAt: timestamppb.New(created.Add(2 * time.Second)),
		}),
		eventlog.NewEvent(meta(died), &eventv1.JobAttempted{
			Attempt: 2, StartedAt: timestamppb.New(died.Add(-time.Second)), Latency: durationpb.New(time.Second),
			StatusCode: status, Error: lastErr, Outcome: eventv1.Outcome_OUTCOME_DEAD, Reason: reason,
		}),
	}
}

// dlqFixture is a tenant with four dead jobs, a succeeded one, and
// another tenant's dead job.
type dlqFixture struct {
	store *projections.Store
	specs map[string]*eventv1.JobSpec
}

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func newDLQFixture(t *testing.T, b *backend) *dlqFixture {
	t.Helper()
	store, _ := newStore(t, b)
	f := &dlqFixture{store: store, specs: map[string]*eventv1.JobSpec{
		"d1": deadSpec("emails", urlTarget("https://a.example.com/hook"), at(5)),
		"d2": deadSpec("emails", urlTarget("https://b.example.com/x"), at(6)),
		"d3": deadSpec("sms", &sluicev1.Target{Kind: &sluicev1.Target_EndpointId{EndpointId: "ep_1"}}, at(7)),
		"d4": deadSpec("sms", urlTarget("https://a.example.com/other"), at(8)),
	}}
	var evs []*eventv1.Event
	evs = append(evs, deadHistory(tenant, "d1", f.specs["d1"], at(10), 410, "HTTP 410", "permanent failure: HTTP 410 Gone")...)
	evs = append(evs, deadHistory(tenant, "d2", f.specs["d2"], at(20), 500, "HTTP 500", "attempts exhausted: 2 of 2 failed")...)
	evs = append(evs, deadHistory(tenant, "d3", f.specs["d3"], at(30), 0, "dial tcp: connection REFUSED", "attempts exhausted: 2 of 2 failed")...)
	evs = append(evs, deadHistory(tenant, "d4", f.specs["d4"], at(40), 502, "HTTP 502", "attempts exhausted: 2 of 2 failed")...)
	evs = append(evs, deadHistory("globex", "g1", deadSpec("emails", urlTarget("https://a.example.com/hook"), at(1)), at(50), 500, "HTTP 500", "attempts exhausted")...)
	evs = append(evs, enqueued(tenant, "s1", "emails", at(9)), attempted(tenant, "s1", 1, succeeded, 200, at(11)))
	mustApply(t, store, (&partitionLog{}).records(t, evs...)...)
	return f
}

// ids lists the job ids of dead letters.
func ids(dls []*sluicev1.DeadLetter) []string {
	out := make([]string, len(dls))
	for i, dl := range dls {
		out[i] = dl.GetJob().GetId()
	}
	return out
}

func TestListDeadLetters(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		f := newDLQFixture(t, b)
		ctx := context.Background()
		cases := []struct {
			name   string
			filter projections.DeadLetterFilter
			want   []string
		}{
			{"all, latest death first", projections.DeadLetterFilter{}, []string{"d4", "d3", "d2", "d1"}},
			{"queue", projections.DeadLetterFilter{Queue: "sms"}, []string{"d4", "d3"}},
			{"url prefix", projections.DeadLetterFilter{Target: "https://a.example.com/"}, []string{"d4", "d1"}},
			{"whole url", projections.DeadLetterFilter{Target: "https://a.example.com/hook"}, []string{"d1"}},
			{"endpoint id", projections.DeadLetterFilter{Target: "ep_1"}, []string{"d3"}},
			{"endpoint id is exact", projections.DeadLetterFilter{Target: "ep_"}, []string{}},
			{"error, ignoring case", projections.DeadLetterFilter{ErrorContains: "refused"}, []string{"d3"}},
			{"reason", projections.DeadLetterFilter{ErrorContains: "410 gone"}, []string{"d1"}},
			{"died at or after", projections.DeadLetterFilter{DiedAfter: at(20)}, []string{"d4", "d3", "d2"}},
			{"died before", projections.DeadLetterFilter{DiedBefore: at(30)}, []string{"d2", "d1"}},
			{"time range", projections.DeadLetterFilter{DiedAfter: at(20), DiedBefore: at(40)}, []string{"d3", "d2"}},
			{"everything at once", projections.DeadLetterFilter{Queue: "emails", Target: "https://", ErrorContains: "exhausted", DiedBefore: at(21)}, []string{"d2"}},
			{"queue of another tenant's job", projections.DeadLetterFilter{Queue: "nope"}, []string{}},
		}
		for _, c := range cases {
			got := listAllDead(t, f.store, tenant, c.filter, 0)
			if !slices.Equal(got, c.want) {
				t.Errorf("%s: got %v, want %v", c.name, got, c.want)
			}
			for _, size := range []int{1, 2} {
				if paged := listAllDead(t, f.store, tenant, c.filter, size); !slices.Equal(paged, c.want) {
					t.Errorf("%s in pages of %d: got %v, want %v", c.name, size, paged, c.want)
				}
			}
		}
		if got := listAllDead(t, f.store, "globex", projections.DeadLetterFilter{}, 0); !slices.Equal(got, []string{"g1"}) {
			t.Errorf("other tenant: got %v, want [g1]", got)
		}

		dls, _, err := f.store.ListDeadLetters(ctx, tenant, projections.DeadLetterQuery{DeadLetterFilter: projections.DeadLetterFilter{Target: "ep_1"}})
		if err != nil || len(dls) != 1 {
			t.Fatalf("ListDeadLetters(ep_1) = %v, %v; want one", dls, err)
		}
		checkDeadLetter(t, dls[0])
	})
}

// checkDeadLetter checks d3 of the fixture as listed.
func checkDeadLetter(t *testing.T, dl *sluicev1.DeadLetter) {
	t.Helper()
	if dl.Reason != "attempts exhausted: 2 of 2 failed" || !dl.DiedAt.AsTime().Equal(at(30)) {
		t.Errorf("got reason %q died at %v; want the reason and %v", dl.Reason, dl.DiedAt.AsTime(), at(30))
	}
	j := dl.Job
	if j.State != sluicev1.JobState_JOB_STATE_DEAD || j.Attempt != 2 || j.Queue != "sms" || j.Target.GetEndpointId() != "ep_1" {
		t.Errorf("job: got %v; want d3, dead after 2 attempts", j)
	}
	if len(dl.Attempts) != 2 {
		t.Fatalf("attempts: got %d, want 2", len(dl.Attempts))
	}
	a1, a2 := dl.Attempts[0], dl.Attempts[1]
	if a1.Attempt != 1 || a1.StatusCode != 503 || a1.Error != "HTTP 503" || a1.ResponseExcerpt != "busy\uFFFD" ||
		a1.Latency.AsDuration() != 40*time.Millisecond || !a1.StartedAt.AsTime().Equal(at(7)) {
		t.Errorf("attempt 1: got %v; want 503 busy after 40ms at %v", a1, at(7))
	}
	if a2.Attempt != 2 || a2.StatusCode != 0 || a2.Error != "dial tcp: connection REFUSED" || a2.Latency.AsDuration() != time.Second {
		t.Errorf("attempt 2: got %v; want the refused connection", a2)
	}
}

// listAllDead pages through the tenant's dead letters matching f and
// returns their ids.
func listAllDead(t *testing.T, s *projections.Store, tenantID string, f projections.DeadLetterFilter, size int) []string {
	t.Helper()
	got := []string{}
	tok := ""
	for range 20 {
		dls, next, err := s.ListDeadLetters(context.Background(), tenantID, projections.DeadLetterQuery{DeadLetterFilter: f, PageSize: size, PageToken: tok})
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		if size > 0 && len(dls) > size {
			t.Fatalf("ListDeadLetters: got %d dead letters, want at most %d", len(dls), size)
		}
		got = append(got, ids(dls)...)
		if tok = next; tok == "" {
			return got
		}
	}
	t.Fatalf("ListDeadLetters: more than 20 pages")
	return nil
}

func TestListDeadLettersInvalid(t *testing.T) {
	t.Parallel()
	store := projections.NewStore(newMiniredis(t).rdb, projections.StoreConfig{})
	for _, c := range []struct {
		q     projections.DeadLetterQuery
		field string
	}{
		{projections.DeadLetterQuery{PageSize: -1}, "pageSize"},
		{projections.DeadLetterQuery{PageSize: projections.MaxPageSize + 1}, "pageSize"},
		{projections.DeadLetterQuery{PageToken: "!!"}, "pageToken"},
	} {
		_, _, err := store.ListDeadLetters(context.Background(), tenant, c.q)
		var fe *projections.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("ListDeadLetters(%+v): got %v; want a FieldError on %s", c.q, err, c.field)
		}
	}
}

func TestFindDeadLetters(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		f := newDLQFixture(t, b)
		ctx := context.Background()
		for _, c := range []struct {
			filter projections.DeadLetterFilter
			limit  int
			want   []string
			more   bool
		}{
			{projections.DeadLetterFilter{}, 2, []string{"d4", "d3"}, true},
			{projections.DeadLetterFilter{}, 4, []string{"d4", "d3", "d2", "d1"}, false},
			{projections.DeadLetterFilter{ErrorContains: "exhausted"}, 3, []string{"d4", "d3", "d2"}, false},
			{projections.DeadLetterFilter{ErrorContains: "exhausted"}, 2, []string{"d4", "d3"}, true},
			{projections.DeadLetterFilter{Queue: "emails", DiedAfter: at(11)}, 10, []string{"d2"}, false},
		} {
			got, more, err := f.store.FindDeadLetters(ctx, tenant, c.filter, c.limit)
			if err != nil || !slices.Equal(got, c.want) || more != c.more {
				t.Errorf("FindDeadLetters(%+v, %d) = %v, %t, %v; want %v, %t", c.filter, c.limit, got, more, err, c.want, c.more)
			}
		}
	})
}

func TestJobSnapshots(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		f := newDLQFixture(t, b)
		ctx := context.Background()
		snaps, err := f.store.JobSnapshots(ctx, tenant, []string{"d1", "nope", "g1", "s1"})
		if err != nil {
			t.Fatalf("JobSnapshots: %v", err)
		}
		if _, ok := snaps["g1"]; ok || len(snaps) != 2 {
			t.Fatalf("JobSnapshots: got %d snapshots, want d1 and s1 (not another tenant's g1)", len(snaps))
		}
		d1 := snaps["d1"]
		if !proto.Equal(d1.Spec, f.specs["d1"]) {
			t.Errorf("spec of d1: got %v, want as enqueued %v", d1.Spec, f.specs["d1"])
		}
		if d1.BudgetStart != 0 || d1.Job.State != sluicev1.JobState_JOB_STATE_DEAD || len(d1.Attempts) != 2 ||
			d1.Attempts[0].Attempt != 1 || d1.Attempts[1].Reason != "permanent failure: HTTP 410 Gone" {
			t.Errorf("d1: got budget %d, state %v, attempts %v; want 0, dead, both attempts", d1.BudgetStart, d1.Job.State, d1.Attempts)
		}

		// A retry replaces the payload and moves the budget.
		mustApply(t, f.store, (&partitionLog{next: 100}).records(t, retried(tenant, "d1", 3, `[1]`, at(60)))...)
		snaps, err = f.store.JobSnapshots(ctx, tenant, []string{"d1"})
		if err != nil {
			t.Fatalf("JobSnapshots: %v", err)
		}
		if d1 = snaps["d1"]; string(d1.Spec.Payload) != `[1]` || d1.BudgetStart != 3 || d1.Job.State != sluicev1.JobState_JOB_STATE_READY {
			t.Errorf("d1 after a retry: got payload %s, budget %d, state %v; want [1], 3, ready", d1.Spec.Payload, d1.BudgetStart, d1.Job.State)
		}
		runs, err := f.store.JobRuns(ctx, tenant, []string{"d1", "d2", "nope"})
		want := map[string]projections.JobRun{
			"d1": {State: sluicev1.JobState_JOB_STATE_READY, BudgetStart: 3, Attempt: 2},
			"d2": {State: sluicev1.JobState_JOB_STATE_DEAD, Attempt: 2},
		}
		for id, r := range runs {
			if r.EnqueueEventID == "" || r.CreatedAt == 0 {
				t.Errorf("JobRuns[%s] has no enqueue event id or creation time: %+v", id, r)
			}
			r.EnqueueEventID, r.CreatedAt = "", 0
			runs[id] = r
		}
		if err != nil || len(runs) != 2 || runs["d1"] != want["d1"] || runs["d2"] != want["d2"] {
			t.Errorf("JobRuns = %v, %v; want %v", runs, err, want)
		}
	})
}

func TestPurgeLeavesOnlyATombstone(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, prefix := newStore(t, b)
		l := &partitionLog{partition: 1}
		spec := deadSpec("emails", urlTarget("https://a.example.com/hook"), at(0))
		mustApply(t, store, l.records(t, deadHistory(tenant, job, spec, at(3), 500, "HTTP 500", "exhausted")...)...)
		mustApply(t, store, l.records(t, purged(tenant, job, at(4)))...)
		got := dump(t, b, prefix)
		want := map[string]string{
			"ckpt:" + testTopic + ":1": "4",
			"t:acme:job:job-1":         "map[offset:3 partition:1 tombstone:1]",
			"t:acme:q:emails:counts":   "map[dead:0 ready:0 retrying:0]",
			// The queue stays known to ListQueues.
			"t:acme:queues": "[emails]",
		}
		if len(got) != len(want) {
			t.Errorf("keys after a purge: got %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("key %s after a purge: got %q, want %q", k, got[k], v)
			}
		}
		if _, err := store.GetJob(context.Background(), tenant, job); !errors.Is(err, projections.ErrNotFound) {
			t.Errorf("GetJob of a purged job: got %v, want ErrNotFound", err)
		}
		if states, err := store.JobStates(context.Background(), tenant, []string{job}); err != nil || len(states) != 0 {
			t.Errorf("JobStates of a purged job = %v, %v; want none", states, err)
		}
		if ttl := b.rdb.TTL(context.Background(), prefix+"t:acme:job:job-1").Val(); ttl <= 29*24*time.Hour {
			t.Errorf("tombstone TTL: got %v, want about 30 days", ttl)
		}
	})
}

func TestListDeadLettersScanLimit(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		f := newDLQFixture(t, b)
		projections.SetDeadLetterScan(f.store, 2)
		filter := projections.DeadLetterFilter{ErrorContains: "exhausted"}
		dls, next, err := f.store.ListDeadLetters(context.Background(), tenant, projections.DeadLetterQuery{DeadLetterFilter: filter, PageSize: 10})
		if err != nil || !slices.Equal(ids(dls), []string{"d4", "d3"}) || next == "" {
			t.Errorf("first page = %v, %q, %v; want d4, d3 and a next page after examining 2", ids(dls), next, err)
		}
		if got := listAllDead(t, f.store, tenant, filter, 10); !slices.Equal(got, []string{"d4", "d3", "d2"}) {
			t.Errorf("every page: got %v, want d4, d3, d2", got)
		}
	})
}
