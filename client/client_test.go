package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/internal/devtest"
)

func newClient(t *testing.T, s *devtest.Server, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, append([]client.Option{client.WithAPIKey(s.Key)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewRejectsBadInput(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q): got no error, want one naming the base URL", u)
		}
	}
	if _, err := client.New("http://x", client.WithProtocol(client.Protocol(9))); err == nil {
		t.Error("New with protocol 9: got no error, want unknown protocol")
	}
}

func TestClientAgainstDev(t *testing.T) {
	t.Parallel()
	s := devtest.Start(t)
	ctx := testCtx(t)

	for _, p := range []client.Protocol{client.ProtocolConnect, client.ProtocolGRPC, client.ProtocolGRPCWeb} {
		t.Run("enqueue and get over "+p.String(), func(t *testing.T) {
			c := newClient(t, s, client.WithProtocol(p))
			type email struct {
				To string `json:"to"`
			}
			runAt := time.Now().Add(time.Hour).Truncate(time.Millisecond)
			res, err := c.Enqueue(ctx, "sdk-"+p.String(), email{To: "ada@example.com"},
				client.WithPriority(client.PriorityHigh), client.WithRunAt(runAt), client.WithMaxAttempts(3),
				client.WithHeaders(map[string]string{"X-Trace": "t1"}), client.WithRetrySchedule(time.Second, 5*time.Second))
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			if !res.Created || res.Job.GetId() == "" {
				t.Fatalf("Enqueue: got created %v, id %q; want a new job", res.Created, res.Job.GetId())
			}
			got := waitJob(t, c, res.Job.GetId())
			var payload email
			if err := client.DecodeValue(got.GetPayload(), &payload); err != nil || payload.To != "ada@example.com" {
				t.Errorf("payload: got %+v (%v), want to ada@example.com", payload, err)
			}
			if got.GetPriority() != client.PriorityHigh || got.GetMaxAttempts() != 3 || !got.GetRunAt().AsTime().Equal(runAt) ||
				got.GetHeaders()["X-Trace"] != "t1" || !slices.Equal(got.GetRetryPolicy().GetSchedule(), []string{"1s", "5s"}) {
				t.Errorf("job: got priority %v, maxAttempts %d, runAt %v, headers %v, schedule %v; want what was enqueued",
					got.GetPriority(), got.GetMaxAttempts(), got.GetRunAt().AsTime(), got.GetHeaders(), got.GetRetryPolicy().GetSchedule())
			}
		})
	}

	c := newClient(t, s)
	t.Run("idempotency key", func(t *testing.T) {
		first, err := c.Enqueue(ctx, "sdk-idem", 1, client.WithIdempotencyKey("k1"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.Enqueue(ctx, "sdk-idem", 2, client.WithIdempotencyKey("k1"))
		if err != nil {
			t.Fatal(err)
		}
		if again.Job.GetId() != first.Job.GetId() || again.Created {
			t.Errorf("repeated key: got id %s created %v, want %s created false", again.Job.GetId(), again.Created, first.Job.GetId())
		}
	})

	t.Run("batch, list pages and cancel", func(t *testing.T) {
		var reqs []*client.EnqueueRequest
		for i := range 5 {
			r, err := client.NewEnqueueRequest("sdk-list", map[string]int{"i": i}, client.WithRunAt(time.Now().Add(time.Hour)))
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, r)
		}
		res, err := c.EnqueueBatch(ctx, reqs)
		if err != nil || len(res) != 5 {
			t.Fatalf("EnqueueBatch: got %d results, %v; want 5", len(res), err)
		}
		var want []string
		for _, r := range res {
			want = append(want, r.Job.GetId())
		}
		var got []string
		deadline := time.Now().Add(10 * time.Second)
		for len(got) < 5 && time.Now().Before(deadline) {
			got = got[:0]
			for j, err := range c.Jobs(ctx, client.JobQuery{Queue: "sdk-list", PageSize: 2}) {
				if err != nil {
					t.Fatalf("Jobs: %v", err)
				}
				got = append(got, j.GetId())
			}
			time.Sleep(50 * time.Millisecond)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("Jobs over pages of 2: got %v, want %v", got, want)
		}
		j, err := c.CancelJob(ctx, want[0])
		if err == nil {
			j = waitState(t, c, want[0], client.JobStateCancelled)
		}
		if err != nil || j.GetState() != client.JobStateCancelled {
			t.Fatalf("CancelJob: got state %v, %v; want cancelled", j.GetState(), err)
		}
		if _, err := c.RetryJob(ctx, want[0]); err != nil {
			t.Fatalf("RetryJob of a cancelled job: %v", err)
		}
	})

	t.Run("errors carry codes", func(t *testing.T) {
		_, err := c.Enqueue(ctx, "bad queue!", 1)
		if client.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(client.ErrorMessage(err), "queue") {
			t.Errorf("Enqueue to a bad queue name: got %v, want invalid_argument naming queue", err)
		}
		_, err = c.GetJob(ctx, "no-such-job")
		if !client.IsNotFound(err) {
			t.Errorf("GetJob of an unknown id: got %v, want not_found", err)
		}
		var cerr *connect.Error
		if !errors.As(err, &cerr) || !strings.HasPrefix(err.Error(), "get job: ") {
			t.Errorf("GetJob error: got %q, want a *connect.Error wrapped as \"get job: ...\"", err)
		}
		anon, err := client.New(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anon.GetJob(ctx, "x"); client.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("GetJob without a key: got %v, want unauthenticated", err)
		}
		if _, err := c.EnqueueBatch(ctx, nil); err == nil {
			t.Error("EnqueueBatch of nothing: got no error")
		}
		if _, err := c.Enqueue(ctx, "q", func() {}); err == nil || !strings.Contains(err.Error(), "payload") {
			t.Errorf("Enqueue of an unmarshalable payload: got %v, want an error naming the payload", err)
		}
	})

	t.Run("dead letters", func(t *testing.T) {
		gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusGone)
		}))
		t.Cleanup(gone.Close)
		res, err := c.Enqueue(ctx, "sdk-dlq", map[string]string{"v": "1"}, client.WithTargetURL(gone.URL))
		if err != nil {
			t.Fatal(err)
		}
		id := res.Job.GetId()
		filter := &client.DeadLetterFilter{Queue: "sdk-dlq"}
		var dead []string
		for deadline := time.Now().Add(30 * time.Second); len(dead) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			for d, err := range c.DeadLetters(ctx, client.DeadLetterQuery{Filter: filter}) {
				if err != nil {
					t.Fatal(err)
				}
				dead = append(dead, d.GetJob().GetId())
			}
		}
		if !slices.Equal(dead, []string{id}) {
			t.Fatalf("DeadLetters(queue sdk-dlq): got %v, want [%s]", dead, id)
		}
		if _, err := c.RetryDeadLetters(ctx, client.Selection{}); err == nil {
			t.Error("RetryDeadLetters with an empty selection: got no error")
		}
		n, err := c.PurgeDeadLetters(ctx, client.Selection{Filter: filter})
		if err != nil || n != 1 {
			t.Fatalf("PurgeDeadLetters: got %d, %v; want 1", n, err)
		}
	})
}

// waitState polls GetJob until the job is in state want.
func waitState(t *testing.T, c *client.Client, id string, want client.JobState) *client.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j := waitJob(t, c, id)
		if j.GetState() == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: state %v, want %v within 30s", id, j.GetState(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitJob polls GetJob until the projection has the job.
func waitJob(t *testing.T, c *client.Client, id string) *client.Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err := c.GetJob(testCtx(t), id)
		if err == nil {
			return j
		}
		if !client.IsNotFound(err) || time.Now().After(deadline) {
			t.Fatalf("GetJob(%s): %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestParseEnums(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]client.JobState{"dead": client.JobStateDead, "JOB_STATE_READY": client.JobStateReady, "Running": client.JobStateRunning} {
		if got, err := client.ParseJobState(in); err != nil || got != want {
			t.Errorf("ParseJobState(%q): got %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := client.ParseJobState("unspecified"); err == nil {
		t.Error("ParseJobState(unspecified): got no error")
	}
	if got, err := client.ParsePriority("high"); err != nil || got != client.PriorityHigh {
		t.Errorf("ParsePriority(high): got %v, %v", got, err)
	}
}
