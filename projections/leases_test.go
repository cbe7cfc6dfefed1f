package projections_test

import (
	"context"
	"errors"
	"fmt"
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

func workerJob(tenant, job, queue string, prio sluicev1.Priority, at time.Time) *eventv1.Event {
	ev := enqueued(tenant, job, queue, at)
	ev.GetJobEnqueued().Spec.Target = nil
	ev.GetJobEnqueued().Spec.Priority = prio
	return ev
}

// TestLeasesFoldBackFromTheLog claims jobs with the claim script, records
// the leases as the API does, and checks a read model folded from the
// events alone ends the same, on miniredis and on a real Redis.
func TestLeasesFoldBackFromTheLog(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, prefix := newStore(t, b)
		l := &partitionLog{partition: 2}
		n := 0
		token := func() string { n++; return fmt.Sprintf("tok-%d", n) }
		var evs []*eventv1.Event
		for i, p := range []sluicev1.Priority{sluicev1.Priority_PRIORITY_LOW, 0, sluicev1.Priority_PRIORITY_HIGH} {
			evs = append(evs, workerJob(tenant, fmt.Sprintf("w%d", i), "work", p, t0.Add(time.Duration(i)*time.Second)))
		}
		mustApply(t, store, l.records(t, evs...)...)

		now := t0.Add(time.Minute)
		leases, err := store.Claim(ctx, projections.ClaimRequest{
			TenantID: tenant, Queue: "work", WorkerID: "w", Max: 2, Duration: 30 * time.Second, NewToken: token, Now: now,
		})
		if err != nil || len(leases) != 2 || leases[0].JobID != "w2" || leases[1].JobID != "w1" {
			t.Fatalf("Claim = %v, %v; want w2 (high) then w1 (normal)", leases, err)
		}
		if leases[0].Job.State != sluicev1.JobState_JOB_STATE_RUNNING || leases[0].Attempt != 1 {
			t.Fatalf("claimed job %v attempt %d; want running attempt 1", leases[0].Job, leases[0].Attempt)
		}
		// The API records each lease; complete one, extend the other.
		var recorded []*eventv1.Event
		for _, ls := range leases {
			recorded = append(recorded, eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: ls.JobID, OccurredAt: now}, &eventv1.JobClaimed{
				Attempt: ls.Attempt, WorkerId: "w", LeaseToken: ls.Token, LeaseExpiresAt: timestamppb.New(ls.ExpiresAt),
				LeaseDuration: durationpb.New(30 * time.Second),
			}))
		}
		mustApply(t, store, l.records(t, recorded...)...)
		if _, err := store.FinishLease(ctx, tenant, "w2", "wrong", false, now); !errors.Is(err, projections.ErrNoLease) {
			t.Fatalf("finish with a wrong token: %v, want ErrNoLease", err)
		}
		done, err := store.FinishLease(ctx, tenant, "w2", leases[0].Token, false, now)
		if err != nil || done.Attempt != 1 {
			t.Fatalf("FinishLease: %v, %v", done, err)
		}
		until := now.Add(time.Minute)
		if _, err := store.ExtendLease(ctx, tenant, "w1", leases[1].Token, until, now); err != nil {
			t.Fatal(err)
		}
		more := []*eventv1.Event{
			eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: "w2", OccurredAt: now}, &eventv1.JobAttempted{
				Attempt: 1, Outcome: eventv1.Outcome_OUTCOME_SUCCEEDED, Result: []byte(`"ok"`),
			}),
			eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: "w1", OccurredAt: now}, &eventv1.JobLeaseExtended{
				Attempt: 1, LeaseToken: leases[1].Token, LeaseExpiresAt: timestamppb.New(until),
			}),
		}
		mustApply(t, store, l.records(t, more...)...)
		if _, err := store.FinishLease(ctx, tenant, "w1", leases[1].Token, false, now.Add(2*time.Minute)); !errors.Is(err, projections.ErrLeaseExpired) {
			t.Fatalf("finish after expiry: %v, want ErrLeaseExpired", err)
		}
		expired, err := store.ExpiredLeases(ctx, now.Add(2*time.Minute), 10)
		if err != nil || len(expired) != 1 || expired[0].JobID != "w1" {
			t.Fatalf("ExpiredLeases = %v, %v; want w1", expired, err)
		}
		live := dump(t, b, prefix)

		// The same events folded into an empty read model give the same
		// state: the leases come back from job.claimed and
		// job.lease_extended.
		rebuilt, rebuiltPrefix := newStore(t, b)
		all := append(append(append([]*eventv1.Event{}, evs...), recorded...), more...)
		mustApply(t, rebuilt, (&partitionLog{partition: 2}).records(t, all...)...)
		got := dump(t, b, rebuiltPrefix)
		delete(live, "leases")
		delete(got, "leases")
		for k, v := range live {
			if k == "t:acme:job:w2" || k == "t:acme:job:w1" {
				continue // hashes differ only in fields the live claim wrote first; checked below
			}
			if got[k] != v {
				t.Errorf("key %s: rebuilt %s, live %s", k, got[k], v)
			}
		}
		for _, id := range []string{"w0", "w1", "w2"} {
			a, err1 := store.GetJob(ctx, tenant, id)
			b, err2 := rebuilt.GetJob(ctx, tenant, id)
			if err1 != nil || err2 != nil || a.State != b.State || a.Attempt != b.Attempt || a.WorkerId != b.WorkerId ||
				!a.GetLeaseExpiresAt().AsTime().Equal(b.GetLeaseExpiresAt().AsTime()) {
				t.Errorf("job %s: live %v (%v), rebuilt %v (%v)", id, a, err1, b, err2)
			}
		}
		exp, err := rebuilt.ExpiredLeases(ctx, now.Add(2*time.Minute), 10)
		if err != nil || len(exp) != 1 || exp[0].JobID != "w1" || exp[0].Token != leases[1].Token {
			t.Fatalf("rebuilt leases: %v, %v; want w1's", exp, err)
		}
	})
}

func TestAFinishWhoseOutcomeNeverCameIsGivenBack(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, _ := newStore(t, b)
		mustApply(t, store, (&partitionLog{partition: 1}).records(t, workerJob(tenant, "lost", "work", 0, t0))...)
		now := t0.Add(time.Minute)
		leases, err := store.Claim(ctx, projections.ClaimRequest{
			TenantID: tenant, Queue: "work", WorkerID: "w", Max: 1, Duration: 30 * time.Second,
			NewToken: func() string { return "tok" }, Now: now,
		})
		if err != nil || len(leases) != 1 {
			t.Fatalf("Claim: %v, %v", leases, err)
		}
		// The API ends the lease to append the outcome, and dies.
		if _, err := store.FinishLease(ctx, tenant, "lost", "tok", false, now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if got, err := store.ExpiredLeases(ctx, now.Add(50*time.Second), 10); err != nil || len(got) != 0 {
			t.Fatalf("within the grace period: %v, %v; want nothing", got, err)
		}
		// Past the grace period the lease comes back, expired.
		later := now.Add(2 * time.Minute)
		if _, err := store.ExpiredLeases(ctx, later, 10); err != nil {
			t.Fatal(err)
		}
		got, err := store.ExpiredLeases(ctx, later, 10)
		if err != nil || len(got) != 1 || got[0].JobID != "lost" || got[0].Token != "tok" {
			t.Fatalf("after the grace period: %v, %v; want the lost job's lease, to expire", got, err)
		}
	})
}

func TestParkedJobsAreTakenOnce(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, _ := newStore(t, b)
		l := &partitionLog{partition: 1}
		var evs []*eventv1.Event
		for i := range 20 {
			id := fmt.Sprintf("p%02d", i)
			evs = append(evs, enqueued(tenant, id, "held", t0.Add(time.Duration(i)*time.Second)),
				eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: id, OccurredAt: t0}, &eventv1.JobParked{Attempt: 1}))
		}
		mustApply(t, store, l.records(t, evs...)...)
		// A take whose job.ready could not be appended gives its jobs back.
		first, err := store.TakeParked(ctx, tenant, "held", 1)
		if err != nil || len(first) != 1 {
			t.Fatalf("TakeParked: %v, %v", first, err)
		}
		if err := store.ReturnParked(ctx, tenant, "held", first); err != nil {
			t.Fatal(err)
		}
		seen := make(map[string]int)
		for range 3 { // racing unparkers, one after another here
			taken, err := store.TakeParked(ctx, tenant, "held", 8)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range taken {
				seen[p.JobID]++
				if p.Attempt != 1 {
					t.Errorf("job %s taken at attempt %d, want 1", p.JobID, p.Attempt)
				}
			}
		}
		if len(seen) != 20 {
			t.Fatalf("took %d jobs, want all 20", len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("job %s taken %d times", id, n)
			}
		}
		if again, err := store.TakeParked(ctx, tenant, "held", 8); err != nil || len(again) != 0 {
			t.Fatalf("a fourth take: %v, %v; want nothing", again, err)
		}
	})
}

func TestALosingDuplicatesTimerDoesNotMakeTheJobReady(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		store, _ := newStore(t, b)
		winner := workerJob(tenant, "k1", "work", 0, t0)
		winner.GetJobEnqueued().Spec.RunAt = timestamppb.New(t0.Add(time.Hour))
		loserSpec := proto.CloneOf(winner.GetJobEnqueued().Spec)
		loserSpec.CreatedAt = timestamppb.New(t0.Add(time.Millisecond)) // another racer
		readyFor := func(spec *eventv1.JobSpec, at time.Time) *eventv1.Event {
			return eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: "k1", OccurredAt: at}, &eventv1.JobReady{Attempt: 1, Spec: spec})
		}
		l := &partitionLog{partition: 1}
		mustApply(t, store, l.records(t, winner, readyFor(loserSpec, t0.Add(time.Minute)))...)
		if job, err := store.GetJob(ctx, tenant, "k1"); err != nil || job.State != sluicev1.JobState_JOB_STATE_SCHEDULED {
			t.Fatalf("after the loser's timer: %v, %v; want scheduled", job.GetState(), err)
		}
		claim := func() int {
			leases, err := store.Claim(ctx, projections.ClaimRequest{TenantID: tenant, Queue: "work", WorkerID: "w", Max: 1,
				Duration: time.Minute, NewToken: func() string { return "t" }, Now: t0.Add(2 * time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			return len(leases)
		}
		if n := claim(); n != 0 {
			t.Fatalf("claimed %d jobs before the winner's runAt", n)
		}
		mustApply(t, store, l.records(t, readyFor(winner.GetJobEnqueued().Spec, t0.Add(time.Hour)))...)
		if n := claim(); n != 1 {
			t.Fatalf("claimed %d jobs after the winner's timer, want 1", n)
		}
	})
}
