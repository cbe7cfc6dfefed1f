package api_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/api"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func enqueueWorkerJob(t *testing.T, f *fixture, queue string, prio sluicev1.Priority) string {
	t.Helper()
	res, err := f.jobs("sk_acme").Enqueue(context.Background(), connect.NewRequest(&sluicev1.EnqueueRequest{
		Queue: queue, Payload: structpb.NewStringValue("work"), Priority: prio, MaxAttempts: 3,
	}))
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return res.Msg.Job.Id
}

func claim(t *testing.T, f *fixture, queue string, n int32, lease time.Duration) []*sluicev1.ClaimedJob {
	t.Helper()
	res, err := f.workers("sk_acme").Claim(context.Background(), connect.NewRequest(&sluicev1.ClaimRequest{
		Queue: queue, WorkerId: "w1", Max: n, LeaseDuration: durationpb.New(lease),
	}))
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return res.Msg.Jobs
}

func TestClaimCompleteAndStaleTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := enqueueWorkerJob(t, f, "work", 0)
	got := claim(t, f, "work", 10, 30*time.Second)
	if len(got) != 1 || got[0].Job.Id != id || got[0].Job.Attempt != 1 || got[0].Job.State != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("Claim = %v; want job %s, attempt 1, running", got, id)
	}
	if again := claim(t, f, "work", 10, 30*time.Second); len(again) != 0 {
		t.Fatalf("second Claim leased %d jobs; the only job is leased", len(again))
	}
	if f.state(t, "acme", id) != "JOB_STATE_RUNNING" {
		t.Fatalf("state %s, want running", f.state(t, "acme", id))
	}
	w := f.workers("sk_acme")
	hb, err := w.Heartbeat(context.Background(), connect.NewRequest(&sluicev1.HeartbeatRequest{JobId: id, LeaseToken: got[0].LeaseToken}))
	if err != nil || !hb.Msg.LeaseExpiresAt.AsTime().After(got[0].LeaseExpiresAt.AsTime().Add(-time.Second)) {
		t.Fatalf("Heartbeat: %v, %v", hb, err)
	}
	_, err = w.Complete(context.Background(), connect.NewRequest(&sluicev1.CompleteRequest{JobId: id, LeaseToken: "lease_forged"}))
	wantError(t, err, connect.CodeFailedPrecondition, "leaseToken")
	done, err := w.Complete(context.Background(), connect.NewRequest(&sluicev1.CompleteRequest{
		JobId: id, LeaseToken: got[0].LeaseToken, Result: structpb.NewStringValue("ok"),
	}))
	if err != nil || done.Msg.Job.State != sluicev1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("Complete: %v, %v", done, err)
	}
	_, err = w.Complete(context.Background(), connect.NewRequest(&sluicev1.CompleteRequest{JobId: id, LeaseToken: got[0].LeaseToken}))
	wantError(t, err, connect.CodeFailedPrecondition, "leaseToken")
	_, err = w.Heartbeat(context.Background(), connect.NewRequest(&sluicev1.HeartbeatRequest{JobId: id, LeaseToken: got[0].LeaseToken}))
	wantError(t, err, connect.CodeFailedPrecondition, "leaseToken")
	job, err := f.store.GetJob(context.Background(), "acme", id)
	if err != nil || job.State != sluicev1.JobState_JOB_STATE_SUCCEEDED || job.Attempt != 1 || job.Result.GetStringValue() != "ok" {
		t.Fatalf("read model: %v, %v; want succeeded, attempt 1, result ok", job, err)
	}
	// Another tenant cannot touch the job.
	_, err = f.workers("sk_globex").Complete(context.Background(), connect.NewRequest(&sluicev1.CompleteRequest{JobId: id, LeaseToken: got[0].LeaseToken}))
	wantError(t, err, connect.CodeNotFound, "job")
}

func TestExpiredLeaseIsAFailedAttemptAndItsTokenIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := enqueueWorkerJob(t, f, "work", 0)
	got := claim(t, f, "work", 1, time.Second)
	if len(got) != 1 {
		t.Fatalf("Claim leased %d jobs, want 1", len(got))
	}
	reaper, err := api.NewLeaseReaper(f.cfg, func() []string { return []string{"acme"} })
	if err != nil {
		t.Fatal(err)
	}
	reaper.Start()
	t.Cleanup(func() { reaper.Stop(context.Background()) })
	f.clock.advance(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for f.state(t, "acme", id) != "JOB_STATE_RETRYING" {
		if time.Now().After(deadline) {
			t.Fatalf("state %s 5s after the lease expired; want retrying", f.state(t, "acme", id))
		}
		time.Sleep(10 * time.Millisecond)
	}
	job, _ := f.store.GetJob(context.Background(), "acme", id)
	if job.Attempt != 1 || job.LastError != "lease expired" || job.NextAttemptAt == nil {
		t.Errorf("job after expiry: attempt %d, error %q, next %v; want 1, lease expired, a next attempt", job.Attempt, job.LastError, job.NextAttemptAt)
	}
	_, err = f.workers("sk_acme").Complete(context.Background(), connect.NewRequest(&sluicev1.CompleteRequest{JobId: id, LeaseToken: got[0].LeaseToken}))
	wantError(t, err, connect.CodeFailedPrecondition, "leaseToken")
	// The next attempt waits on a delay line, as the retry policy says.
	var timer *eventv1.Timer
	for _, call := range f.log.calls() {
		for _, r := range call {
			if r.Topic != topics.Events() && r.Topic != topics.DLQ() {
				timer = new(eventv1.Timer)
				if err := proto.Unmarshal(r.Value, timer); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if timer.GetEvent().GetJobReady().GetAttempt() != 2 {
		t.Fatalf("timer %v; want a job.ready for attempt 2", timer)
	}
}

func TestClaimOrderPriorityPauseAndLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	low := enqueueWorkerJob(t, f, "work", sluicev1.Priority_PRIORITY_LOW)
	normal := enqueueWorkerJob(t, f, "work", sluicev1.Priority_PRIORITY_NORMAL)
	high := enqueueWorkerJob(t, f, "work", sluicev1.Priority_PRIORITY_HIGH)
	normal2 := enqueueWorkerJob(t, f, "work", 0)
	q := f.queueService("sk_acme")
	if _, err := q.PauseQueue(context.Background(), connect.NewRequest(&sluicev1.PauseQueueRequest{Name: "work"})); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, f, "work", 10, time.Minute); len(got) != 0 {
		t.Fatalf("a paused queue handed out %d jobs", len(got))
	}
	limit := int32(3)
	if _, err := q.ResumeQueue(context.Background(), connect.NewRequest(&sluicev1.ResumeQueueRequest{Name: "work"})); err != nil {
		t.Fatal(err)
	}
	if _, err := q.UpdateQueue(context.Background(), connect.NewRequest(&sluicev1.UpdateQueueRequest{Name: "work", ConcurrencyLimit: &limit})); err != nil {
		t.Fatal(err)
	}
	got := claim(t, f, "work", 10, time.Minute)
	var order []string
	for _, j := range got {
		order = append(order, j.Job.Id)
	}
	want := []string{high, normal, normal2}
	if len(order) != 3 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] {
		t.Fatalf("claimed %v; want %v (high, then normal oldest first, capped at the limit of 3)", order, want)
	}
	info, err := q.GetQueue(context.Background(), connect.NewRequest(&sluicev1.GetQueueRequest{Name: "work"}))
	if err != nil {
		t.Fatal(err)
	}
	if s := info.Msg.Queue.Stats; s.Running != 3 || s.Ready != 1 || s.OldestReadyAge == nil {
		t.Fatalf("stats %v; want 3 running, 1 ready with an age", s)
	}
	_ = low
}

func TestFailRetriesOrDeadLetters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := enqueueWorkerJob(t, f, "work", 0)
	got := claim(t, f, "work", 1, time.Minute)
	w := f.workers("sk_acme")
	res, err := w.Fail(context.Background(), connect.NewRequest(&sluicev1.FailRequest{JobId: id, LeaseToken: got[0].LeaseToken, Error: "boom"}))
	if err != nil || res.Msg.Job.State != sluicev1.JobState_JOB_STATE_RETRYING || res.Msg.Job.NextAttemptAt == nil {
		t.Fatalf("Fail: %v, %v; want retrying with a next attempt", res, err)
	}
	id2 := enqueueWorkerJob(t, f, "work", 0)
	got = claim(t, f, "work", 1, time.Minute)
	if len(got) != 1 || got[0].Job.Id != id2 {
		t.Fatalf("Claim = %v, want job %s", got, id2)
	}
	no := false
	res, err = w.Fail(context.Background(), connect.NewRequest(&sluicev1.FailRequest{JobId: id2, LeaseToken: got[0].LeaseToken, Error: "bad input", Retryable: &no}))
	if err != nil || res.Msg.Job.State != sluicev1.JobState_JOB_STATE_DEAD {
		t.Fatalf("Fail not retryable: %v, %v; want dead", res, err)
	}
	if f.state(t, "acme", id2) != "JOB_STATE_DEAD" {
		t.Fatalf("read model state %s, want dead", f.state(t, "acme", id2))
	}
	dl, err := f.deadLetters("sk_acme").ListDeadLetters(context.Background(), connect.NewRequest(&sluicev1.ListDeadLettersRequest{}))
	if err != nil || len(dl.Msg.DeadLetters) != 1 {
		t.Fatalf("ListDeadLetters: %v, %v; want the one dead job", dl, err)
	}
}

func TestClaimValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	w := f.workers("sk_acme")
	for _, tc := range []struct {
		req   *sluicev1.ClaimRequest
		field string
	}{
		{&sluicev1.ClaimRequest{WorkerId: "w"}, "queue"},
		{&sluicev1.ClaimRequest{Queue: "q"}, "workerId"},
		{&sluicev1.ClaimRequest{Queue: "q", WorkerId: "w", Max: 1001}, "max"},
		{&sluicev1.ClaimRequest{Queue: "q", WorkerId: "w", LeaseDuration: durationpb.New(time.Millisecond)}, "leaseDuration"},
		{&sluicev1.ClaimRequest{Queue: "q", WorkerId: "w", Wait: durationpb.New(time.Hour)}, "wait"},
	} {
		_, err := w.Claim(context.Background(), connect.NewRequest(tc.req))
		wantError(t, err, connect.CodeInvalidArgument, tc.field)
	}
	_, err := w.Complete(context.Background(), connect.NewRequest(&sluicev1.CompleteRequest{JobId: "x"}))
	wantError(t, err, connect.CodeInvalidArgument, "leaseToken")
}

func TestClaimWaitsForAJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	go func() {
		time.Sleep(100 * time.Millisecond)
		enqueueWorkerJob(t, f, "later", 0)
	}()
	res, err := f.workers("sk_acme").Claim(context.Background(), connect.NewRequest(&sluicev1.ClaimRequest{
		Queue: "later", WorkerId: "w", Wait: durationpb.New(5 * time.Second),
	}))
	if err != nil || len(res.Msg.Jobs) != 1 {
		t.Fatalf("Claim with wait: %v, %v; want the job enqueued while it waited", res, err)
	}
}

func TestClaimHonoursTheQueueRateLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for range 10 {
		enqueueWorkerJob(t, f, "slow", 0)
	}
	rate := 2.0
	if _, err := f.queueService("sk_acme").UpdateQueue(context.Background(), connect.NewRequest(&sluicev1.UpdateQueueRequest{Name: "slow", RateLimit: &rate})); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, f, "slow", 10, time.Minute); len(got) != 2 {
		t.Fatalf("first claim leased %d jobs; want the burst of 2", len(got))
	}
	if got := claim(t, f, "slow", 10, time.Minute); len(got) != 0 {
		t.Fatalf("second claim at once leased %d jobs; want 0", len(got))
	}
	f.clock.advance(time.Second)
	if got := claim(t, f, "slow", 10, time.Minute); len(got) != 2 {
		t.Fatalf("a second later: %d jobs; want 2", len(got))
	}
	bad := -1.0
	_, err := f.queueService("sk_acme").UpdateQueue(context.Background(), connect.NewRequest(&sluicev1.UpdateQueueRequest{Name: "slow", RateLimit: &bad}))
	wantError(t, err, connect.CodeInvalidArgument, "rateLimit")
}

func TestCancellingALeasedJobEndsTheLease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := enqueueWorkerJob(t, f, "work", 0)
	got := claim(t, f, "work", 1, time.Minute)
	if _, err := f.jobs("sk_acme").CancelJob(context.Background(), connect.NewRequest(&sluicev1.CancelJobRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	_, err := f.workers("sk_acme").Complete(context.Background(), connect.NewRequest(&sluicev1.CompleteRequest{JobId: id, LeaseToken: got[0].LeaseToken}))
	wantError(t, err, connect.CodeFailedPrecondition, "leaseToken")
	expired, err := f.store.ExpiredLeases(context.Background(), time.Now().Add(time.Hour), 10)
	if err != nil || len(expired) != 0 {
		t.Fatalf("leases left after the cancel: %v, %v", expired, err)
	}
	if f.state(t, "acme", id) != "JOB_STATE_CANCELLED" {
		t.Fatalf("state %s, want cancelled", f.state(t, "acme", id))
	}
}

func TestClaimStreamKeepsMaxInFlightOutstanding(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for range 5 {
		enqueueWorkerJob(t, f, "stream", 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := f.workers("sk_acme")
	stream, err := w.ClaimStream(ctx, connect.NewRequest(&sluicev1.ClaimStreamRequest{Queue: "stream", WorkerId: "s", MaxInFlight: 2}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var held []*sluicev1.ClaimedJob
	for len(held) < 2 && stream.Receive() {
		held = append(held, stream.Msg().Jobs...)
	}
	if len(held) != 2 {
		t.Fatalf("got %d jobs first, want 2 (maxInFlight)", len(held))
	}
	// Nothing more arrives while both leases are held.
	time.Sleep(200 * time.Millisecond)
	if info, err := f.queueService("sk_acme").GetQueue(ctx, connect.NewRequest(&sluicev1.GetQueueRequest{Name: "stream"})); err != nil || info.Msg.Queue.Stats.Running != 2 {
		t.Fatalf("running %v, %v; want 2", info.Msg.GetQueue().GetStats().GetRunning(), err)
	}
	if _, err := w.Complete(ctx, connect.NewRequest(&sluicev1.CompleteRequest{JobId: held[0].Job.Id, LeaseToken: held[0].LeaseToken})); err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || len(stream.Msg().Jobs) != 1 {
		t.Fatalf("after one completion: %v, %v; want one more job", stream.Msg(), stream.Err())
	}
}
