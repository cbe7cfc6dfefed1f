package api_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func keyed(queue, key string, payload float64) *sluicev1.EnqueueRequest {
	return &sluicev1.EnqueueRequest{Queue: queue, Payload: structpb.NewNumberValue(payload), IdempotencyKey: key}
}

func TestSixteenConcurrentEnqueuesWithOneKeyYieldOneJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.jobs("sk_acme")
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = make(map[string]int)
		created int
	)
	for i := range 16 {
		wg.Go(func() {
			res, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "order-42", float64(i))))
			if err != nil {
				t.Errorf("Enqueue %d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[res.Msg.Job.Id]++
			if res.Msg.Created {
				created++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || created != 1 {
		t.Fatalf("got ids %v and %d created; want one id, one created", ids, created)
	}
	list, err := c.ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{Queue: "emails"}))
	if err != nil || len(list.Msg.Jobs) != 1 {
		t.Fatalf("ListJobs: %d jobs, %v; want 1", len(list.Msg.GetJobs()), err)
	}
	// Another tenant's same key is another job.
	other, err := f.jobs("sk_globex").Enqueue(context.Background(), connect.NewRequest(keyed("emails", "order-42", 1)))
	if err != nil || !other.Msg.Created || ids[other.Msg.Job.Id] != 0 {
		t.Fatalf("other tenant: %v, %v; want a new job", other, err)
	}
}

func TestRepeatedKeyReturnsTheFirstJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.jobs("sk_acme")
	first, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "k1", 1)))
	if err != nil || !first.Msg.Created {
		t.Fatalf("first: %v, %v", first, err)
	}
	again, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "k1", 2)))
	if err != nil {
		t.Fatal(err)
	}
	if again.Msg.Created || again.Msg.Job.Id != first.Msg.Job.Id || again.Msg.Job.Payload.GetNumberValue() != 1 {
		t.Fatalf("repeat: created %t id %s payload %v; want the first job (id %s, payload 1), not created",
			again.Msg.Created, again.Msg.Job.Id, again.Msg.Job.Payload, first.Msg.Job.Id)
	}

	// Past the window the key starts a new job.
	f.clock.advance(8 * 24 * time.Hour)
	later, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "k1", 3)))
	if err != nil || !later.Msg.Created || later.Msg.Job.Id == first.Msg.Job.Id {
		t.Fatalf("after the window: %v, %v; want a new job", later, err)
	}
	repeat, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "k1", 4)))
	if err != nil || repeat.Msg.Created || repeat.Msg.Job.Id != later.Msg.Job.Id {
		t.Fatalf("repeat after the window: %v, %v; want the new job %s", repeat, err, later.Msg.Job.Id)
	}
}

func TestBatchCollapsesRepeatedKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.jobs("sk_acme")
	pre, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "old", 0)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.EnqueueBatch(context.Background(), connect.NewRequest(&sluicev1.EnqueueBatchRequest{Jobs: []*sluicev1.EnqueueRequest{
		keyed("emails", "a", 1), keyed("emails", "b", 2), keyed("emails", "a", 3), keyed("emails", "old", 4), keyed("emails", "", 5),
	}}))
	if err != nil {
		t.Fatal(err)
	}
	r := res.Msg.Results
	want := []struct {
		created bool
		sameAs  int // index of the result with the same id, or -1
	}{{true, -1}, {true, -1}, {false, 0}, {false, -1}, {true, -1}}
	for i, w := range want {
		if r[i].Created != w.created {
			t.Errorf("results[%d].created = %t, want %t", i, r[i].Created, w.created)
		}
		if w.sameAs >= 0 && r[i].Job.Id != r[w.sameAs].Job.Id {
			t.Errorf("results[%d] is job %s, want %s", i, r[i].Job.Id, r[w.sameAs].Job.Id)
		}
	}
	if r[3].Job.Id != pre.Msg.Job.Id {
		t.Errorf("results[3] is job %s, want the earlier job %s", r[3].Job.Id, pre.Msg.Job.Id)
	}
	list, err := c.ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{Queue: "emails"}))
	if err != nil || len(list.Msg.Jobs) != 4 {
		t.Fatalf("ListJobs: %d jobs, %v; want 4 (old, a, b, unkeyed)", len(list.Msg.GetJobs()), err)
	}
}

func TestBatchWithOneBadItemLeavesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	jobs := make([]*sluicev1.EnqueueRequest, 1000)
	for i := range jobs {
		jobs[i] = keyed("emails", fmt.Sprintf("k%d", i), float64(i))
	}
	jobs[617].Queue = "no spaces allowed"
	_, err := f.jobs("sk_acme").EnqueueBatch(context.Background(), connect.NewRequest(&sluicev1.EnqueueBatchRequest{Jobs: jobs}))
	wantError(t, err, connect.CodeInvalidArgument, "jobs[617].queue")
	if n := len(f.log.calls()); n != 0 {
		t.Fatalf("%d appends after a rejected batch, want 0", n)
	}
	if f.log.offset != 0 {
		t.Fatalf("%d records appended after a rejected batch, want 0", f.log.offset)
	}
}

func TestPurgedJobsKeyStartsANewJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.jobs("sk_acme")
	first, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "k-purge", 1)))
	if err != nil {
		t.Fatal(err)
	}
	id := first.Msg.Job.Id
	f.append(t,
		eventlog.NewEvent(eventlog.Meta{TenantID: "acme", JobID: id, OccurredAt: t0}, &eventv1.JobAttempted{
			Attempt: 1, Outcome: eventv1.Outcome_OUTCOME_DEAD, Error: "HTTP 410", Reason: "gone"}),
		eventlog.NewEvent(eventlog.Meta{TenantID: "acme", JobID: id, OccurredAt: t0}, &eventv1.JobPurged{Reason: "test"}))
	again, err := c.Enqueue(context.Background(), connect.NewRequest(keyed("emails", "k-purge", 2)))
	if err != nil {
		t.Fatalf("enqueue with a purged job's key: %v", err)
	}
	if !again.Msg.Created || again.Msg.Job.Id == id {
		t.Fatalf("got job %s created %t; want a new job", again.Msg.Job.Id, again.Msg.Created)
	}
}
