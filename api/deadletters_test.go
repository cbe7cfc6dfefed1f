package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestDeadLetterBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dead := f.seedDead(t, "acme", "q", "https://example.com/hook", "HTTP 500", 2)
	other := f.seedDead(t, "globex", "q", "https://example.com/hook", "HTTP 500", 1)
	ctx := context.Background()
	dl := f.deadLetters("sk_acme")
	tooMany := make([]string, 10001)
	for i := range tooMany {
		tooMany[i] = eventlog.NewID()
	}
	filter := &sluicev1.DeadLetterFilter{Queue: "q"}
	retries := []struct {
		name  string
		req   *sluicev1.RetryDeadLettersRequest
		code  connect.Code
		field string
	}{
		{"ids and filter", &sluicev1.RetryDeadLettersRequest{Ids: dead, Filter: filter}, connect.CodeInvalidArgument, "filter:"},
		{"no selection", &sluicev1.RetryDeadLettersRequest{}, connect.CodeInvalidArgument, "ids:"},
		{"empty filter", &sluicev1.RetryDeadLettersRequest{Filter: &sluicev1.DeadLetterFilter{}}, connect.CodeInvalidArgument, "filter:"},
		{"more than 10,000 ids", &sluicev1.RetryDeadLettersRequest{Ids: tooMany}, connect.CodeInvalidArgument, "ids:"},
		{"empty id", &sluicev1.RetryDeadLettersRequest{Ids: []string{dead[0], ""}}, connect.CodeInvalidArgument, "ids[1]:"},
		{"bad queue", &sluicev1.RetryDeadLettersRequest{Filter: &sluicev1.DeadLetterFilter{Queue: "a b"}}, connect.CodeInvalidArgument, "filter.queue:"},
		{"time range backwards", &sluicev1.RetryDeadLettersRequest{Filter: &sluicev1.DeadLetterFilter{
			DiedAfter: timestamppb.New(t0), DiedBefore: timestamppb.New(t0)}}, connect.CodeInvalidArgument, "filter.diedBefore:"},
		{"long reason", &sluicev1.RetryDeadLettersRequest{Ids: dead, Reason: strings.Repeat("x", 1025)}, connect.CodeInvalidArgument, "reason:"},
		{"large payload", &sluicev1.RetryDeadLettersRequest{Ids: dead, PayloadOverride: structpb.NewStringValue(strings.Repeat("x", 100))},
			connect.CodeResourceExhausted, "payloadOverride:"},
		{"unknown single id", &sluicev1.RetryDeadLettersRequest{Ids: []string{"nope"}}, connect.CodeNotFound, "job nope"},
		{"another tenant's single id", &sluicev1.RetryDeadLettersRequest{Ids: other}, connect.CodeNotFound, "job " + other[0]},
	}
	for _, c := range retries {
		t.Run("retry "+c.name, func(t *testing.T) {
			_, err := dl.RetryDeadLetters(ctx, connect.NewRequest(c.req))
			wantError(t, err, c.code, c.field)
		})
	}
	purges := []struct {
		name  string
		req   *sluicev1.PurgeDeadLettersRequest
		code  connect.Code
		field string
	}{
		{"no confirm", &sluicev1.PurgeDeadLettersRequest{Ids: dead}, connect.CodeInvalidArgument, "confirm:"},
		{"ids and filter", &sluicev1.PurgeDeadLettersRequest{Ids: dead, Filter: filter, Confirm: true}, connect.CodeInvalidArgument, "filter:"},
		{"no selection", &sluicev1.PurgeDeadLettersRequest{Confirm: true}, connect.CodeInvalidArgument, "ids:"},
		{"more than 10,000 ids", &sluicev1.PurgeDeadLettersRequest{Ids: tooMany, Confirm: true}, connect.CodeInvalidArgument, "ids:"},
		{"another tenant's single id", &sluicev1.PurgeDeadLettersRequest{Ids: other, Confirm: true}, connect.CodeNotFound, "job " + other[0]},
	}
	for _, c := range purges {
		t.Run("purge "+c.name, func(t *testing.T) {
			_, err := dl.PurgeDeadLetters(ctx, connect.NewRequest(c.req))
			wantError(t, err, c.code, c.field)
		})
	}
	lists := []struct {
		name  string
		req   *sluicev1.ListDeadLettersRequest
		field string
	}{
		{"negative page size", &sluicev1.ListDeadLettersRequest{PageSize: -1}, "pageSize:"},
		{"page size over 1,000", &sluicev1.ListDeadLettersRequest{PageSize: 1001}, "pageSize:"},
		{"bad page token", &sluicev1.ListDeadLettersRequest{PageToken: "!"}, "pageToken:"},
		{"bad queue", &sluicev1.ListDeadLettersRequest{Queue: "a:b"}, "queue:"},
		{"two queues", &sluicev1.ListDeadLettersRequest{Queue: "q", Filter: &sluicev1.DeadLetterFilter{Queue: "r"}}, "filter.queue:"},
	}
	for _, c := range lists {
		t.Run("list "+c.name, func(t *testing.T) {
			_, err := dl.ListDeadLetters(ctx, connect.NewRequest(c.req))
			wantError(t, err, connect.CodeInvalidArgument, c.field)
		})
	}
	if n := len(f.log.calls()); n != 0 {
		t.Errorf("rejected requests appended %d transactions; want none", n)
	}
	for _, id := range dead {
		if got := f.state(t, "acme", id); got != "JOB_STATE_DEAD" {
			t.Errorf("job %s after rejected requests: %s, want JOB_STATE_DEAD", id, got)
		}
	}
}

func TestListDeadLettersOfTenant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	mine := f.seedDead(t, "acme", "q", "https://example.com/a", "HTTP 500", 3)
	f.seedDead(t, "globex", "q", "https://example.com/a", "HTTP 500", 2)
	ctx := context.Background()
	var got []string
	tok := ""
	for range 5 {
		resp, err := f.deadLetters("sk_acme").ListDeadLetters(ctx, connect.NewRequest(&sluicev1.ListDeadLettersRequest{Queue: "q", PageSize: 2, PageToken: tok}))
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		for _, d := range resp.Msg.DeadLetters {
			got = append(got, d.Job.Id)
			if len(d.Attempts) != 1 || d.Attempts[0].StatusCode != 500 || d.Reason == "" || d.DiedAt == nil {
				t.Errorf("dead letter %s: got attempts %v, reason %q, died at %v; want one 500, a reason and a time", d.Job.Id, d.Attempts, d.Reason, d.DiedAt)
			}
		}
		if tok = resp.Msg.NextPageToken; tok == "" {
			break
		}
	}
	want := slices.Clone(mine)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Errorf("ListDeadLetters in pages of 2: got %v, want the tenant's own, latest death first: %v", got, want)
	}
}

func TestRetryDeadLetters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	dead := f.seedDead(t, "acme", "q", "https://example.com/a", "HTTP 500", 2500)
	other := f.seedDead(t, "acme", "r", "https://example.com/b", "connection refused", 3)
	theirs := f.seedDead(t, "globex", "q", "https://example.com/a", "HTTP 500", 2)

	// Ids of another tenant and unknown ids are skipped, not counted.
	resp, err := f.deadLetters("sk_acme").RetryDeadLetters(ctx, connect.NewRequest(&sluicev1.RetryDeadLettersRequest{
		Ids: append([]string{other[0], "nope", other[0]}, theirs...), Reason: "receiver fixed",
		PayloadOverride: structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(2)}}),
	}))
	if err != nil || resp.Msg.Retried != 1 {
		t.Fatalf("RetryDeadLetters(ids) = %v, %v; want 1 retried", resp, err)
	}
	checkRetried(t, f, other[0], `[2]`, "receiver fixed")
	for _, id := range theirs {
		if got := f.state(t, "globex", id); got != "JOB_STATE_DEAD" {
			t.Errorf("another tenant's job %s: %s, want still JOB_STATE_DEAD", id, got)
		}
	}

	// A filter selects 2,500 jobs: three transactions of at most 1,000
	// jobs, each job's two records side by side.
	before := len(f.log.calls())
	resp, err = f.deadLetters("sk_acme").RetryDeadLetters(ctx, connect.NewRequest(&sluicev1.RetryDeadLettersRequest{
		Filter: &sluicev1.DeadLetterFilter{Target: "https://example.com/a", ErrorContains: "http 500"},
	}))
	if err != nil || resp.Msg.Retried != 2500 {
		t.Fatalf("RetryDeadLetters(filter) = %v, %v; want 2500 retried", resp, err)
	}
	var sizes []int
	for _, recs := range f.log.calls()[before:] {
		sizes = append(sizes, len(recs))
		for i := 0; i < len(recs); i += 2 {
			if eventlog.RecordType(recs[i]) != eventlog.TypeJobRetried || eventlog.RecordType(recs[i+1]) != eventlog.TypeJobReady ||
				string(recs[i].Key) != string(recs[i+1].Key) {
				t.Fatalf("records %d, %d of a transaction: want one job's job.retried then job.ready", i, i+1)
			}
		}
	}
	if !slices.Equal(sizes, []int{2000, 2000, 1000}) {
		t.Errorf("transactions: got %v records, want 2000, 2000, 1000 (1,000 jobs each at most)", sizes)
	}
	for _, id := range []string{dead[0], dead[2499]} {
		checkRetried(t, f, id, `{"n":1}`, "")
	}
	if got := f.state(t, "acme", other[1]); got != "JOB_STATE_DEAD" {
		t.Errorf("job outside the filter: %s, want JOB_STATE_DEAD", got)
	}

	// Jobs no longer dead are skipped.
	resp, err = f.deadLetters("sk_acme").RetryDeadLetters(ctx, connect.NewRequest(&sluicev1.RetryDeadLettersRequest{Ids: dead[:10]}))
	if err != nil || resp.Msg.Retried != 0 {
		t.Errorf("RetryDeadLetters of retried jobs = %v, %v; want 0 retried", resp, err)
	}
}

// checkRetried checks a job retried once from dead after one attempt, in
// the read model and in the records of its retry.
func checkRetried(t *testing.T, f *fixture, id, payload, reason string) {
	t.Helper()
	j, err := f.store.GetJob(context.Background(), "acme", id)
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	r := j.LastRetry
	if j.State != sluicev1.JobState_JOB_STATE_READY || j.Attempt != 1 || j.Retries != 1 || r == nil ||
		r.Actor != "api_key:key_acme" || r.Reason != reason || r.BudgetStart != 2 || r.FromState != sluicev1.JobState_JOB_STATE_DEAD ||
		r.PayloadOverridden != (payload != `{"n":1}`) {
		t.Errorf("job %s: got %v; want ready, attempt 1, retried once by key_acme from dead with budget 2 and reason %q", id, j, reason)
	}
	if got, _ := j.Payload.MarshalJSON(); strings.ReplaceAll(string(got), " ", "") != payload {
		t.Errorf("job %s payload: got %s, want %s", id, got, payload)
	}
	ready, topic := readyOf(t, f, id)
	if topic != topics.Events() {
		t.Errorf("job.ready of job %s went to %s, want %s", id, topic, topics.Events())
	}
	if ready.Attempt != 2 || ready.BudgetStart != 2 || string(ready.Spec.Payload) != payload || len(ready.History) != 1 ||
		ready.Spec.Target.GetUrl() == "" || ready.Spec.MaxAttempts != 1 {
		t.Errorf("job.ready of job %s: got %v; want attempt 2 from budget 2, payload %s, the original spec and 1 attempt of history", id, ready, payload)
	}
}

// readyOf returns the latest job.ready appended for a job, and the
// topic it went to: the events topic, or a delay line.
func readyOf(t *testing.T, f *fixture, id string) (*eventv1.JobReady, string) {
	t.Helper()
	calls := f.log.calls()
	for i := len(calls) - 1; i >= 0; i-- {
		for _, rec := range calls[i] {
			if string(rec.Key) != id {
				continue
			}
			ev := new(eventv1.Event)
			if rec.Topic == topics.Events() {
				var err error
				if ev, err = eventlog.DecodeEvent(rec); err != nil {
					t.Fatal(err)
				}
			} else {
				timer := new(eventv1.Timer)
				if err := proto.Unmarshal(rec.Value, timer); err != nil {
					t.Fatalf("decode timer: %v", err)
				}
				ev = timer.Event
			}
			if r := ev.GetJobReady(); r != nil {
				return r, rec.Topic
			}
		}
	}
	t.Fatalf("no job.ready appended for job %s", id)
	return nil, ""
}

func TestRetryDeadLettersFilterOverLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.seedDead(t, "acme", "q", "https://example.com/a", "HTTP 500", 10001)
	_, err := f.deadLetters("sk_acme").RetryDeadLetters(context.Background(), connect.NewRequest(&sluicev1.RetryDeadLettersRequest{
		Filter: &sluicev1.DeadLetterFilter{Queue: "q"},
	}))
	wantError(t, err, connect.CodeInvalidArgument, "filter:")
	if n := len(f.log.calls()); n != 0 {
		t.Errorf("a refused retry appended %d transactions; want none", n)
	}
	// Narrowed to 10,000 it goes through.
	resp, err := f.deadLetters("sk_acme").RetryDeadLetters(context.Background(), connect.NewRequest(&sluicev1.RetryDeadLettersRequest{
		Filter: &sluicev1.DeadLetterFilter{Queue: "q", DiedAfter: timestamppb.New(t0.Add(time.Second))},
	}))
	if err != nil || resp.Msg.Retried != 10000 {
		t.Errorf("RetryDeadLetters of 10,000 = %v, %v; want 10000 retried", resp, err)
	}
}

func TestRetryDeadLettersLogFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.seedDead(t, "acme", "q", "https://example.com/a", "HTTP 500", 1500)
	f.log.failAt = func(call int) bool { return call == 1 }
	_, err := f.deadLetters("sk_acme").RetryDeadLetters(context.Background(), connect.NewRequest(&sluicev1.RetryDeadLettersRequest{
		Filter: &sluicev1.DeadLetterFilter{Queue: "q"},
	}))
	wantError(t, err, connect.CodeUnavailable, "retry dead letters failed after 1000 jobs were written")
}

func TestPurgeDeadLetters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	dead := f.seedDead(t, "acme", "q", "https://example.com/a", "HTTP 500", 1200)
	keep := f.seedDead(t, "acme", "q", "https://example.com/b", "HTTP 500", 1)
	theirs := f.seedDead(t, "globex", "q", "https://example.com/a", "HTTP 500", 1)

	resp, err := f.deadLetters("sk_acme").PurgeDeadLetters(ctx, connect.NewRequest(&sluicev1.PurgeDeadLettersRequest{
		Filter: &sluicev1.DeadLetterFilter{Target: "https://example.com/a"}, Confirm: true,
	}))
	if err != nil || resp.Msg.Purged != 1200 {
		t.Fatalf("PurgeDeadLetters = %v, %v; want 1200 purged", resp, err)
	}
	var sizes []int
	for _, recs := range f.log.calls() {
		sizes = append(sizes, len(recs))
	}
	if !slices.Equal(sizes, []int{1000, 200}) {
		t.Errorf("transactions: got %v records, want 1000, 200", sizes)
	}
	_, err = f.jobs("sk_acme").GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: dead[7]}))
	wantError(t, err, connect.CodeNotFound, "job "+dead[7])
	counts, err := f.store.QueueCounts(ctx, "acme", "q")
	if err != nil || counts[sluicev1.JobState_JOB_STATE_DEAD] != 1 {
		t.Errorf("dead jobs counted in queue q = %d, %v; want 1", counts[sluicev1.JobState_JOB_STATE_DEAD], err)
	}
	list, err := f.jobs("sk_acme").ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{}))
	if err != nil || len(list.Msg.Jobs) != 1 || list.Msg.Jobs[0].Id != keep[0] {
		t.Errorf("ListJobs after the purge = %v, %v; want only %s", list, err, keep[0])
	}
	if got := f.state(t, "globex", theirs[0]); got != "JOB_STATE_DEAD" {
		t.Errorf("another tenant's job: %s, want JOB_STATE_DEAD", got)
	}

	// A purged id is unknown; a job not dead is skipped.
	_, err = f.deadLetters("sk_acme").PurgeDeadLetters(ctx, connect.NewRequest(&sluicev1.PurgeDeadLettersRequest{Ids: dead[:1], Confirm: true}))
	wantError(t, err, connect.CodeNotFound, "job "+dead[0])
	f.deadLetters("sk_acme").RetryDeadLetters(ctx, connect.NewRequest(&sluicev1.RetryDeadLettersRequest{Ids: keep}))
	resp, err = f.deadLetters("sk_acme").PurgeDeadLetters(ctx, connect.NewRequest(&sluicev1.PurgeDeadLettersRequest{Ids: keep, Confirm: true}))
	if err != nil || resp.Msg.Purged != 0 {
		t.Errorf("PurgeDeadLetters of a retried job = %v, %v; want 0 purged", resp, err)
	}
}
