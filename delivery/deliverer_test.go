package delivery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

type secrets struct{}

func (secrets) SigningSecret(string) (string, error) { return testSecret, nil }

var topics = eventlog.Topics{}.WithDefaults()

func newDeliverer(t *testing.T, guard Guard) *Deliverer {
	t.Helper()
	d, err := New(Config{Topics: topics, Secrets: secrets{}, Guard: guard, DefaultTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// target answers with the given status (and headers) and counts requests.
func target(t *testing.T, status int, header map[string]string) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("answer body"))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func record(t *testing.T, body any, offset int64) *kgo.Record {
	t.Helper()
	ev := eventlog.NewEvent(eventlog.Meta{TenantID: "ten_1", JobID: "job_1", OccurredAt: time.Now()}, body)
	rec, err := eventlog.EncodeEvent(topics.Events(), ev)
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition, rec.Offset = 2, offset
	return rec
}

func spec(url string) *eventv1.JobSpec {
	return &eventv1.JobSpec{Queue: "q", Payload: []byte(`{"a":1}`), Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: url}}}
}

func decode(t *testing.T, rec *kgo.Record) *eventv1.JobAttempted {
	t.Helper()
	ev, err := eventlog.DecodeEvent(rec)
	if err != nil {
		t.Fatal(err)
	}
	return ev.GetJobAttempted()
}

func TestHandleSuccess(t *testing.T) {
	t.Parallel()
	srv, n := target(t, 204, nil)
	d := newDeliverer(t, Guard{AllowLoopback: true})
	outs, err := d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: spec(srv.URL)}, 7))
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || n.Load() != 1 {
		t.Fatalf("got %d outputs and %d requests, want 1 and 1", len(outs), n.Load())
	}
	a := decode(t, outs[0])
	if a.Outcome != eventv1.Outcome_OUTCOME_SUCCEEDED || a.StatusCode != 204 || a.Attempt != 1 {
		t.Errorf("attempt event: got %v", a)
	}
	// The same record handled again yields the same event id.
	again, _ := d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: spec(srv.URL)}, 7))
	id1, _ := eventlog.DecodeEvent(outs[0])
	id2, _ := eventlog.DecodeEvent(again[0])
	if id1.EventId != id2.EventId {
		t.Errorf("event ids of a redo differ: %s, %s", id1.EventId, id2.EventId)
	}
}

func TestHandleFailureSchedulesRetry(t *testing.T) {
	t.Parallel()
	srv, _ := target(t, 503, nil)
	d := newDeliverer(t, Guard{AllowLoopback: true})
	outs, err := d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: spec(srv.URL)}, 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 {
		t.Fatalf("got %d outputs, want an attempt and a timer", len(outs))
	}
	a := decode(t, outs[0])
	if a.Outcome != eventv1.Outcome_OUTCOME_RETRY || a.Error != "HTTP 503" || string(a.ResponseExcerpt) != "answer body" {
		t.Errorf("attempt event: got %v", a)
	}
	wait := time.Until(a.NextAttemptAt.AsTime())
	if wait < 3*time.Second || wait > 6*time.Second {
		t.Errorf("next attempt in %s, want 5s ± 20%%", wait)
	}
	if outs[1].Topic != topics.Retry(time.Second) && outs[1].Topic != topics.Retry(5*time.Second) {
		t.Errorf("timer topic: got %s, want the 1s or 5s line (the largest tier within the wait)", outs[1].Topic)
	}
	var tm eventv1.Timer
	if err := proto.Unmarshal(outs[1].Value, &tm); err != nil {
		t.Fatal(err)
	}
	ready := tm.Event.GetJobReady()
	if ready.GetAttempt() != 2 || len(ready.History) != 1 || string(ready.Spec.Payload) != `{"a":1}` {
		t.Errorf("ready event: got %v", ready)
	}
}

func TestHandlePermanentFailuresDeadLetter(t *testing.T) {
	t.Parallel()
	gone, _ := target(t, 410, nil)
	cases := []struct {
		name   string
		body   proto.Message
		reason string
		n      int
	}{
		{"410", &eventv1.JobEnqueued{Spec: spec(gone.URL)}, "HTTP 410", 1},
		{"forbidden address", &eventv1.JobEnqueued{Spec: spec("http://127.0.0.1:9/x")}, "not allowed", 1},
	}
	strict := newDeliverer(t, Guard{})
	loose := newDeliverer(t, Guard{AllowLoopback: true})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := loose
			if c.name == "forbidden address" {
				d = strict
			}
			outs, err := d.Handle(context.Background(), record(t, c.body, 1))
			if err != nil {
				t.Fatal(err)
			}
			if len(outs) != 2 || outs[1].Topic != topics.DLQ() {
				t.Fatalf("got %d outputs, want an attempt and a dead letter", len(outs))
			}
			a := decode(t, outs[0])
			if a.Outcome != eventv1.Outcome_OUTCOME_DEAD || !strings.Contains(a.Reason, c.reason) {
				t.Errorf("attempt: outcome %s reason %q, want DEAD naming %q", a.Outcome, a.Reason, c.reason)
			}
			var dl eventv1.DeadLetter
			if err := proto.Unmarshal(outs[1].Value, &dl); err != nil {
				t.Fatal(err)
			}
			if len(dl.Attempts) != c.n || string(dl.Spec.Payload) != `{"a":1}` || dl.Reason != a.Reason {
				t.Errorf("dead letter: got %v", &dl)
			}
		})
	}
}

func TestHandleLastAttemptDeadLettersWithHistory(t *testing.T) {
	t.Parallel()
	srv, _ := target(t, 500, nil)
	d := newDeliverer(t, Guard{AllowLoopback: true})
	s := spec(srv.URL)
	s.MaxAttempts = 3
	history := []*eventv1.JobAttempted{{Attempt: 1, StatusCode: 500}, {Attempt: 2, StatusCode: 500}}
	outs, err := d.Handle(context.Background(), record(t, &eventv1.JobReady{Attempt: 3, Spec: s, History: history}, 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 || outs[1].Topic != topics.DLQ() {
		t.Fatalf("got %d outputs, want an attempt and a dead letter", len(outs))
	}
	var dl eventv1.DeadLetter
	if err := proto.Unmarshal(outs[1].Value, &dl); err != nil {
		t.Fatal(err)
	}
	if len(dl.Attempts) != 3 || dl.Attempts[2].Attempt != 3 || !strings.Contains(dl.Reason, "exhausted") {
		t.Errorf("dead letter: %d attempts, reason %q; want 3 and exhausted", len(dl.Attempts), dl.Reason)
	}
}

func TestHandleSkips(t *testing.T) {
	t.Parallel()
	srv, n := target(t, 200, nil)
	d := newDeliverer(t, Guard{AllowLoopback: true})
	future := spec(srv.URL)
	future.RunAt = timestamppb.New(time.Now().Add(time.Hour))
	worker := spec("")
	worker.Target = nil
	for name, body := range map[string]proto.Message{
		"scheduled":  &eventv1.JobEnqueued{Spec: future},
		"worker job": &eventv1.JobEnqueued{Spec: worker},
		"cancelled":  &eventv1.JobCancelled{},
		"attempted":  &eventv1.JobAttempted{Attempt: 1},
	} {
		outs, err := d.Handle(context.Background(), record(t, body, 1))
		if err != nil || len(outs) != 0 {
			t.Errorf("%s: got %d outputs (%v), want none", name, len(outs), err)
		}
	}
	if n.Load() != 0 {
		t.Errorf("requests: got %d, want 0", n.Load())
	}
}

func TestHandleDefersWhenHostIsFull(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var arrived atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
		w.WriteHeader(204)
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	d, err := New(Config{Topics: topics, Secrets: secrets{}, Guard: Guard{AllowLoopback: true}, MaxPerHost: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	for i := 0; i < 2; i++ { // fill the host's slots
		go func() {
			_, _ = d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: spec(slow.URL)}, int64(i)))
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); arrived.Load() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two slow attempts never arrived")
		}
	}
	outs, err := d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: spec(slow.URL)}, 9))
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Topic != topics.Retry(time.Second) {
		t.Fatalf("third attempt to a full host: got %d outputs, want a deferral timer", len(outs))
	}
	var tm eventv1.Timer
	if err := proto.Unmarshal(outs[0].Value, &tm); err != nil {
		t.Fatal(err)
	}
	if got := tm.Event.GetJobReady().GetAttempt(); got != 1 {
		t.Errorf("deferred attempt: got %d, want 1 (not counted)", got)
	}
	// Another host is not held up.
	fast, _ := target(t, 204, nil)
	outs, err = d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: spec(fast.URL)}, 10))
	if err != nil || len(outs) != 1 || decode(t, outs[0]).Outcome != eventv1.Outcome_OUTCOME_SUCCEEDED {
		t.Fatalf("attempt to a healthy host: %v %v", outs, err)
	}
}
