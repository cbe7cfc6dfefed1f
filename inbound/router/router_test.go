package router

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/inbound/sources"
	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// catalog is an in-memory receiver.Lookup.
type catalog map[string]*sources.Entry

func (c catalog) Entry(id string) (*sources.Entry, bool) { e, ok := c[id]; return e, ok }

var received = time.Unix(1_750_000_000, 0)

func newRouter(t *testing.T, srcs ...*sluicev1.Source) *Router {
	t.Helper()
	c := catalog{}
	for _, s := range srcs {
		v, err := verify.New(s.Verification, "verification")
		if err != nil {
			t.Fatal(err)
		}
		c[s.Id] = &sources.Entry{TenantID: "ten_1", Source: s, Verifier: v}
	}
	r, err := New(Config{Sources: c, Topics: eventlog.Topics{}.WithDefaults(), Now: func() time.Time { return received.Add(time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func githubSource() *sluicev1.Source {
	return &sluicev1.Source{
		Id:           "src_gh",
		Verification: &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{Secret: "gh-secret"}}},
		Routes: []*sluicev1.Route{
			{EventTypes: []string{"push"}, Queue: "pushes", EndpointIds: []string{"ep_1", "ep_2"}},
			{EventTypes: []string{"issues"}, Queue: "issues"},
			{EventTypes: []string{"*"}, Queue: "audit"},
		},
	}
}

func request(src, event, delivery string, body string, extra ...*eventv1.HTTPHeader) *eventv1.InboundRequest {
	h := []*eventv1.HTTPHeader{
		{Name: "Content-Type", Values: []string{"application/json"}},
		{Name: "X-Github-Event", Values: []string{event}},
		{Name: "X-Github-Delivery", Values: []string{delivery}},
	}
	return &eventv1.InboundRequest{
		RequestId: eventlog.NewID(), TenantId: "ten_1", SourceId: src,
		ReceivedAt: timestamppb.New(received), Method: "POST",
		Headers: append(h, extra...), Body: []byte(body),
	}
}

type routed struct {
	jobID string
	spec  *eventv1.JobSpec
	ev    *eventv1.Event
}

func route(t *testing.T, r *Router, req *eventv1.InboundRequest, scope Scope) []routed {
	t.Helper()
	recs, err := r.Route(context.Background(), req, scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []routed
	for _, rec := range recs {
		ev, err := eventlog.DecodeEvent(rec)
		if err != nil {
			t.Fatal(err)
		}
		if string(rec.Key) != ev.JobId || ev.Type != eventlog.TypeJobEnqueued {
			t.Fatalf("record key %s, event %s of type %s: want a job.enqueued keyed by its job", rec.Key, ev.JobId, ev.Type)
		}
		out = append(out, routed{ev.JobId, ev.GetJobEnqueued().GetSpec(), ev})
	}
	return out
}

func TestRouteGitHubPushToQueuesAndEndpoints(t *testing.T) {
	t.Parallel()
	r := newRouter(t, githubSource())
	body := `{"ref":"refs/heads/main","commits":[]}`
	req := request("src_gh", "push", "d-1", body)
	jobs := route(t, r, req, Scope{})
	if len(jobs) != 4 {
		t.Fatalf("got %d jobs, want 4 (pushes, ep_1, ep_2, audit)", len(jobs))
	}
	q := jobs[0]
	if q.spec.Queue != "pushes" || q.spec.Target != nil || string(q.spec.Payload) != body {
		t.Errorf("queue job: got queue %q target %v payload %s; want pushes, none, the body", q.spec.Queue, q.spec.Target, q.spec.Payload)
	}
	if q.spec.Headers["x-github-event"] != "push" || q.spec.Headers["content-type"] != "application/json" {
		t.Errorf("queue job headers: got %v, want the request's, lower-cased", q.spec.Headers)
	}
	if q.ev.CausationId != req.RequestId || q.ev.Actor.GetId() != "router" {
		t.Errorf("envelope: got causation %q actor %v; want the request id and the router", q.ev.CausationId, q.ev.Actor)
	}
	for i, ep := range []string{"ep_1", "ep_2"} {
		j := jobs[1+i]
		if j.spec.GetTarget().GetEndpointId() != ep || string(j.spec.Payload) != body || j.spec.ContentType != "application/json" {
			t.Errorf("endpoint job %d: got target %v payload %s content type %q; want %s, the body byte-exact, application/json",
				i, j.spec.Target, j.spec.Payload, j.spec.ContentType, ep)
		}
	}
	if jobs[3].spec.Queue != "audit" {
		t.Errorf("catch-all route: got queue %q, want audit", jobs[3].spec.Queue)
	}
	// Ids derive from the tenant's idempotency key.
	if q.jobID != eventlog.KeyedJobID("ten_1", q.spec.IdempotencyKey) {
		t.Errorf("job id %s is not KeyedJobID of its key %q", q.jobID, q.spec.IdempotencyKey)
	}
}

func TestRepeatedDeliveryNamesTheSameJobs(t *testing.T) {
	t.Parallel()
	r := newRouter(t, githubSource())
	first := route(t, r, request("src_gh", "push", "d-7", `{}`), Scope{})
	again := route(t, r, request("src_gh", "push", "d-7", `{}`), Scope{}) // a new request id, the same delivery
	other := route(t, r, request("src_gh", "push", "d-8", `{}`), Scope{})
	replay := route(t, r, request("src_gh", "push", "d-7", `{}`), Scope{ReplayID: "rp_1"})
	replayAgain := route(t, r, request("src_gh", "push", "d-7", `{}`), Scope{ReplayID: "rp_1"})
	for i := range first {
		if first[i].jobID != again[i].jobID {
			t.Errorf("job %d: repeated delivery got id %s, want %s", i, again[i].jobID, first[i].jobID)
		}
		if first[i].jobID == other[i].jobID {
			t.Errorf("job %d: another delivery got the same id %s", i, other[i].jobID)
		}
		if first[i].jobID == replay[i].jobID {
			t.Errorf("job %d: a replay got the first routing's id %s", i, replay[i].jobID)
		}
		if replay[i].jobID != replayAgain[i].jobID {
			t.Errorf("job %d: the same replay got ids %s and %s", i, replay[i].jobID, replayAgain[i].jobID)
		}
	}
}

func TestRouteByEventType(t *testing.T) {
	t.Parallel()
	r := newRouter(t, githubSource())
	if jobs := route(t, r, request("src_gh", "issues", "d-2", `{}`), Scope{}); len(jobs) != 2 || jobs[0].spec.Queue != "issues" {
		t.Fatalf("issues event: got %d jobs, want issues and audit", len(jobs))
	}
	if jobs := route(t, r, request("src_gh", "star", "d-3", `{}`), Scope{}); len(jobs) != 1 || jobs[0].spec.Queue != "audit" {
		t.Fatalf("star event: got %d jobs, want audit only", len(jobs))
	}
}

func TestStripeEventTypeAndIDFromBody(t *testing.T) {
	t.Parallel()
	src := &sluicev1.Source{
		Id:           "src_st",
		Verification: &sluicev1.Verification{Kind: &sluicev1.Verification_Stripe{Stripe: &sluicev1.StripeVerification{Secret: "whsec_stripe123"}}},
		Routes:       []*sluicev1.Route{{EventTypes: []string{"invoice.*"}, Queue: "billing"}},
	}
	r := newRouter(t, src)
	paid := `{"id":"evt_1","type":"invoice.paid"}`
	jobs := route(t, r, request("src_st", "", "", paid), Scope{})
	if len(jobs) != 1 || jobs[0].spec.IdempotencyKey != "inbound/src_st/evt_1/queue/billing" {
		t.Fatalf("invoice.paid: got %+v, want one billing job keyed by the event id", jobs)
	}
	if jobs := route(t, r, request("src_st", "", "", `{"id":"evt_2","type":"charge.failed"}`), Scope{}); len(jobs) != 0 {
		t.Fatalf("charge.failed: got %d jobs, want none", len(jobs))
	}
}

func TestQueuePayloadOfNonJSONBodies(t *testing.T) {
	t.Parallel()
	src := &sluicev1.Source{
		Id:           "src_any",
		Verification: &sluicev1.Verification{Kind: &sluicev1.Verification_None{None: &sluicev1.NoVerification{}}},
		Routes:       []*sluicev1.Route{{Queue: "raw"}},
	}
	r := newRouter(t, src)
	text := route(t, r, request("src_any", "", "", "a=1&b=2"), Scope{})
	var s string
	if err := json.Unmarshal(text[0].spec.Payload, &s); err != nil || s != "a=1&b=2" {
		t.Errorf("form body: got payload %s, want the JSON string \"a=1&b=2\"", text[0].spec.Payload)
	}
	bin := route(t, r, request("src_any", "", "", "\xff\x00\xfe"), Scope{})
	if err := json.Unmarshal(bin[0].spec.Payload, &s); err != nil || s != "/wD+" || bin[0].spec.Headers[HeaderBodyEncoding] != "base64" {
		t.Errorf("binary body: got payload %s headers %v, want \"/wD+\" marked base64", bin[0].spec.Payload, bin[0].spec.Headers)
	}
	// Without a delivery id every request is its own delivery.
	again := route(t, r, request("src_any", "", "", "a=1&b=2"), Scope{})
	if again[0].jobID == text[0].jobID {
		t.Error("two requests without a delivery id got the same job")
	}
}

func TestDeletedSourceRoutesNothing(t *testing.T) {
	t.Parallel()
	r := newRouter(t)
	if jobs := route(t, r, request("src_gone", "push", "d", `{}`), Scope{}); len(jobs) != 0 {
		t.Fatalf("got %d jobs, want none", len(jobs))
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	cases := []struct {
		types []string
		event string
		want  bool
	}{
		{nil, "x", true}, {[]string{"*"}, "", true}, {[]string{"push"}, "push", true},
		{[]string{"push"}, "pushed", false}, {[]string{"invoice.*"}, "invoice.paid", true},
		{[]string{"invoice.*"}, "invoices", false}, {[]string{"a", "b"}, "b", true},
	}
	for _, c := range cases {
		if got := Matches(c.types, c.event); got != c.want {
			t.Errorf("Matches(%v, %q): got %v, want %v", c.types, c.event, got, c.want)
		}
	}
}

func TestLargeBodiesNeverStallRouting(t *testing.T) {
	t.Parallel()
	src := &sluicev1.Source{
		Id:           "src_big",
		Verification: &sluicev1.Verification{Kind: &sluicev1.Verification_None{None: &sluicev1.NoVerification{}}},
		Routes:       []*sluicev1.Route{{Queue: "raw", EndpointIds: []string{"ep_1"}}},
	}
	r := newRouter(t, src)
	// 6 MiB of "<": HTML escaping would make it 36 MiB, past the log's
	// record limit; unescaped it is a 6 MiB JSON string.
	html := route(t, r, request("src_big", "", "", strings.Repeat("<", 6<<20)), Scope{})
	if len(html) != 2 || len(html[0].spec.Payload) != 6<<20+2 {
		t.Fatalf("got %d jobs, queue payload %d bytes; want 2 jobs and the body as a %d-byte JSON string", len(html), len(html[0].spec.Payload), 6<<20+2)
	}
	// Control characters escape to six bytes each: the queue job would
	// not fit the log, so it is skipped; the byte-exact endpoint job still
	// goes, and nothing fails.
	ctl := route(t, r, request("src_big", "", "", strings.Repeat("\x01", 6<<20)), Scope{})
	if len(ctl) != 1 || ctl[0].spec.GetTarget().GetEndpointId() != "ep_1" {
		t.Fatalf("got %d jobs; want only the endpoint job", len(ctl))
	}
}
