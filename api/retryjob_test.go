package api_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// jobIn appends a job of the tenant with its history after enqueue,
// and returns its id.
func (f *fixture) jobIn(t *testing.T, tenantID string, bodies ...any) string {
	t.Helper()
	meta := eventlog.Meta{TenantID: tenantID, JobID: eventlog.NewID(), OccurredAt: t0}
	evs := []*eventv1.Event{eventlog.NewEvent(meta, &eventv1.JobEnqueued{Spec: &eventv1.JobSpec{
		Queue: "q", Payload: []byte(`"p"`), CreatedAt: timestamppb.New(t0), MaxAttempts: 3,
		Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "https://example.com/"}},
	}})}
	for _, b := range bodies {
		evs = append(evs, eventlog.NewEvent(meta, b))
	}
	f.append(t, evs...)
	return meta.JobID
}

func attempt(n int32, outcome eventv1.Outcome) *eventv1.JobAttempted {
	return &eventv1.JobAttempted{Attempt: n, StatusCode: 500, Error: "HTTP 500", Outcome: outcome}
}

func TestRetryJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	jobs := f.jobs("sk_acme")

	t.Run("dead", func(t *testing.T) {
		id := f.jobIn(t, "acme", attempt(1, eventv1.Outcome_OUTCOME_RETRY), attempt(2, eventv1.Outcome_OUTCOME_DEAD))
		resp, err := jobs.RetryJob(ctx, connect.NewRequest(&sluicev1.RetryJobRequest{Id: id}))
		if err != nil {
			t.Fatalf("RetryJob: %v", err)
		}
		j := resp.Msg.Job
		if j.State != sluicev1.JobState_JOB_STATE_READY || j.Attempt != 2 || j.LastRetry.GetBudgetStart() != 3 ||
			j.LastRetry.GetActor() != "api_key:key_acme" || j.LastRetry.GetFromState() != sluicev1.JobState_JOB_STATE_DEAD {
			t.Errorf("RetryJob answered %v; want ready, attempt 2, a retry by key_acme from dead starting at 3", j)
		}
		if got := f.state(t, "acme", id); got != "JOB_STATE_READY" {
			t.Errorf("read model: %s, want JOB_STATE_READY", got)
		}
		if r, topic := readyOf(t, f, id); r.Attempt != 3 || r.BudgetStart != 3 || len(r.History) != 2 || string(r.Spec.Payload) != `"p"` || topic != topics.Events() {
			t.Errorf("job.ready on %s: got %v; want on the events topic attempt 3 of a budget from 3, 2 attempts of history, the payload", topic, r)
		}
		// Now ready: a second retry is refused.
		_, err = jobs.RetryJob(ctx, connect.NewRequest(&sluicev1.RetryJobRequest{Id: id}))
		wantError(t, err, connect.CodeFailedPrecondition, "id: job "+id+" is JOB_STATE_READY")
	})
	t.Run("cancelled", func(t *testing.T) {
		id := f.jobIn(t, "acme", attempt(1, eventv1.Outcome_OUTCOME_RETRY), &eventv1.JobCancelled{})
		resp, err := jobs.RetryJob(ctx, connect.NewRequest(&sluicev1.RetryJobRequest{Id: id}))
		if err != nil || resp.Msg.Job.State != sluicev1.JobState_JOB_STATE_READY {
			t.Fatalf("RetryJob = %v, %v; want a ready job", resp, err)
		}
		if got := f.state(t, "acme", id); got != "JOB_STATE_READY" {
			t.Errorf("read model: %s, want JOB_STATE_READY", got)
		}
		// Its job.ready goes straight to the events topic: delivery runs it
		// because its budget is newer than the one the job was cancelled in.
		if r, topic := readyOf(t, f, id); r.Attempt != 2 || r.BudgetStart != 2 || topic != topics.Events() {
			t.Errorf("job.ready: got attempt %d of a budget from %d on %s; want 2 and 2 on %s", r.Attempt, r.BudgetStart, topic, topics.Events())
		}
	})
	t.Run("refused", func(t *testing.T) {
		succeeded := f.jobIn(t, "acme", &eventv1.JobAttempted{Attempt: 1, StatusCode: 200, Outcome: eventv1.Outcome_OUTCOME_SUCCEEDED})
		retrying := f.jobIn(t, "acme", attempt(1, eventv1.Outcome_OUTCOME_RETRY))
		theirs := f.jobIn(t, "globex", attempt(1, eventv1.Outcome_OUTCOME_DEAD))
		for _, c := range []struct {
			id    string
			code  connect.Code
			field string
		}{
			{succeeded, connect.CodeFailedPrecondition, "id: job " + succeeded + " is JOB_STATE_SUCCEEDED"},
			{retrying, connect.CodeFailedPrecondition, "id: job " + retrying + " is JOB_STATE_RETRYING"},
			{theirs, connect.CodeNotFound, "job " + theirs + " not found"},
			{"nope", connect.CodeNotFound, "job nope not found"},
			{"", connect.CodeInvalidArgument, "id:"},
		} {
			_, err := jobs.RetryJob(ctx, connect.NewRequest(&sluicev1.RetryJobRequest{Id: c.id}))
			wantError(t, err, c.code, c.field)
		}
		if got := f.state(t, "globex", theirs); got != "JOB_STATE_DEAD" {
			t.Errorf("another tenant's job: %s, want JOB_STATE_DEAD", got)
		}
	})
}
