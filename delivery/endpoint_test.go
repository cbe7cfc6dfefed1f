package delivery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const otherSecret = "whsec_c2Vjb25kIHNlY3JldCBvZiB0d2VudHlmb3VyIGJ5dGVz"

// endpoints is an EndpointSource over a map.
type endpoints struct {
	mu      sync.Mutex
	byID    map[string]*eventv1.EndpointConfig
	offset  int64
	changed chan struct{}
}

func newEndpoints(cfgs ...*eventv1.EndpointConfig) *endpoints {
	e := &endpoints{byID: make(map[string]*eventv1.EndpointConfig), changed: make(chan struct{})}
	for _, c := range cfgs {
		e.byID[c.Endpoint.Id] = c
	}
	return e
}

func (e *endpoints) Endpoint(_, id string) (*eventv1.EndpointConfig, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.byID[id]
	return c, ok
}

func (e *endpoints) EndpointHealthRecord(h *eventv1.EndpointHealth, _ *eventv1.Actor, _ time.Time) (*kgo.Record, error) {
	v, err := proto.Marshal(h)
	return &kgo.Record{Topic: "config", Key: []byte("endpointhealth/" + h.EndpointId), Value: v}, err
}

func (e *endpoints) EndpointEnableOffset() (int64, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.offset, e.changed
}

// enable enables id as a config fold would.
func (e *endpoints) enable(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := proto.CloneOf(e.byID[id])
	c.Endpoint.Disabled = false
	e.byID[id] = c
	e.offset++
	close(e.changed)
	e.changed = make(chan struct{})
}

func endpointSpec(id, contentType string, payload []byte) *eventv1.JobSpec {
	return &eventv1.JobSpec{Queue: "q", Payload: payload, ContentType: contentType,
		Headers: map[string]string{"X-Job": "job"},
		Target:  &sluicev1.Target{Kind: &sluicev1.Target_EndpointId{EndpointId: id}}}
}

func TestEndpointAttemptSignsAndCaptures(t *testing.T) {
	t.Parallel()
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, body = r, must(io.ReadAll(r.Body))
		w.Header().Set("X-Request-Id", "abc")
		w.Header().Set("Set-Cookie", "secret=1")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(strings.Repeat("x", 5000)))
	}))
	t.Cleanup(srv.Close)
	now := time.Now()
	src := newEndpoints(&eventv1.EndpointConfig{
		TenantId: "ten_1",
		Endpoint: &sluicev1.Endpoint{Id: "ep_1", Url: srv.URL + "/hook", Headers: map[string]string{"X-Endpoint": "ep", "X-Job": "endpoint"}},
		Secrets: []*eventv1.EndpointSecret{
			{Secret: otherSecret},
			{Secret: testSecret, ExpiresAt: timestamppb.New(now.Add(time.Hour))},
			{Secret: "whsec_ZXhwaXJlZCBzZWNyZXQgb2YgdHdlbnR5Zm91ciBieXRlcw==", ExpiresAt: timestamppb.New(now.Add(-time.Minute))},
		},
	})
	d, err := New(Config{Topics: topics, Secrets: secrets{}, Guard: Guard{AllowLoopback: true}, Endpoints: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	outs, err := d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: endpointSpec("ep_1", "text/plain", []byte("raw bytes"))}, 3))
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.URL.Path != "/hook" || string(body) != "raw bytes" {
		t.Fatalf("request: got %v %q, want POST /hook with the raw payload", got, body)
	}
	if ct := got.Header.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("content-type %q, want the job's text/plain", ct)
	}
	if got.Header.Get("X-Endpoint") != "ep" || got.Header.Get("X-Job") != "job" {
		t.Errorf("headers %v: want the endpoint's, with the job's winning", got.Header)
	}
	sigs := strings.Fields(got.Header.Get(HeaderSignature))
	ts, _ := strconv.ParseInt(got.Header.Get(HeaderTimestamp), 10, 64)
	if len(sigs) != 2 {
		t.Fatalf("webhook-signature %q: want the current and the overlapping secret's, not the expired one", sigs)
	}
	for _, secret := range []string{otherSecret, testSecret} {
		s, _ := NewSigner(secret)
		if !s.Verify(got.Header.Get(HeaderID), ts, body, got.Header.Get(HeaderSignature)) {
			t.Errorf("secret %s does not verify", secret[:12])
		}
	}
	a := decode(t, outs[0])
	if a.Outcome != eventv1.Outcome_OUTCOME_SUCCEEDED || a.StatusCode != 202 || len(a.ResponseExcerpt) != 4096 || a.Latency.AsDuration() <= 0 {
		t.Errorf("attempt: outcome %v status %d excerpt %d bytes latency %v", a.Outcome, a.StatusCode, len(a.ResponseExcerpt), a.Latency.AsDuration())
	}
	if a.ResponseHeaders["X-Request-Id"] != "abc" || a.ResponseHeaders["Set-Cookie"] != "" {
		t.Errorf("captured headers %v: want X-Request-Id, never Set-Cookie", a.ResponseHeaders)
	}
}

func TestDisabledEndpointParksAndReleases(t *testing.T) {
	t.Parallel()
	src := newEndpoints(&eventv1.EndpointConfig{
		TenantId: "ten_1",
		Endpoint: &sluicev1.Endpoint{Id: "ep_1", Url: "http://127.0.0.1:9/", Disabled: true},
		Secrets:  []*eventv1.EndpointSecret{{Secret: testSecret}},
	})
	d, err := New(Config{Topics: topics, Secrets: secrets{}, Guard: Guard{AllowLoopback: true}, Endpoints: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	outs, err := d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: endpointSpec("ep_1", "", []byte("{}"))}, 4))
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 || outs[0].Topic != topics.Parked() || outs[1].Topic != topics.Events() {
		t.Fatalf("got %d outputs, want a parked record and an endpoint.message_parked event", len(outs))
	}
	parked := outs[0]
	parked.Partition, parked.Offset = 0, 0

	rel, err := NewReleaser(ReleaserConfig{Topics: topics, Endpoints: src, DrainRate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan []*kgo.Record, 1)
	go func() {
		recs, err := rel.Handle(context.Background(), parked)
		if err != nil {
			t.Error(err)
		}
		released <- recs
	}()
	select {
	case <-released:
		t.Fatal("released while the endpoint is disabled")
	case <-time.After(100 * time.Millisecond):
	}
	src.enable("ep_1")
	var recs []*kgo.Record
	select {
	case recs = <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("not released within 5s of enabling")
	}
	if len(recs) != 2 || recs[0].Topic != topics.Events() || recs[1].Topic != topics.Parked() || recs[1].Value != nil {
		t.Fatalf("release: got %d records, want the job.ready and the parked record's tombstone", len(recs))
	}
	ev := decodeEvent(t, recs[0])
	if ev.GetJobReady().GetAttempt() != 1 || ev.JobId != "job_1" {
		t.Errorf("released %v, want job_1's attempt 1", ev)
	}
}

func TestParkedRecordMakesWayForOthers(t *testing.T) {
	t.Parallel()
	src := newEndpoints(&eventv1.EndpointConfig{TenantId: "ten_1", Endpoint: &sluicev1.Endpoint{Id: "ep_1", Disabled: true}})
	rel, err := NewReleaser(ReleaserConfig{Topics: topics, Endpoints: src})
	if err != nil {
		t.Fatal(err)
	}
	ready := &eventv1.Event{TenantId: "ten_1", JobId: "job_1"}
	rec, _ := encodeParked(topics, &eventv1.ParkedMessage{Event: ready, EndpointId: "ep_1", EnableOffset: 0})
	src.mu.Lock()
	src.offset = 7 // another endpoint was enabled since
	src.mu.Unlock()
	recs, err := rel.Handle(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	var pm eventv1.ParkedMessage
	if len(recs) != 1 || recs[0].Topic != topics.Parked() || proto.Unmarshal(recs[0].Value, &pm) != nil || pm.EnableOffset != 7 {
		t.Fatalf("got %d records, want the parked message again at the back with enable offset 7", len(recs))
	}
}

func TestDeletedEndpointDeadLetters(t *testing.T) {
	t.Parallel()
	d, err := New(Config{Topics: topics, Secrets: secrets{}, Endpoints: newEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	outs, err := d.Handle(context.Background(), record(t, &eventv1.JobEnqueued{Spec: endpointSpec("ep_gone", "", []byte("{}"))}, 5))
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, outs[0]); a.Outcome != eventv1.Outcome_OUTCOME_DEAD || !strings.Contains(a.Reason, "unknown endpoint") {
		t.Errorf("attempt: %v, want dead for an unknown endpoint", a)
	}
	if len(outs) != 2 || outs[1].Topic != topics.DLQ() {
		t.Errorf("want a dead letter beside the attempt")
	}
}

func decodeEvent(t *testing.T, rec *kgo.Record) *eventv1.Event {
	t.Helper()
	var ev eventv1.Event
	if err := proto.Unmarshal(rec.Value, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
