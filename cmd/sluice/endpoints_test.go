package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// endpointJSON is an endpoint as the EndpointService answers it.
type endpointJSON struct {
	ID                      string   `json:"id"`
	URL                     string   `json:"url"`
	Secret                  string   `json:"secret"`
	EventTypes              []string `json:"eventTypes"`
	Disabled                bool     `json:"disabled"`
	DisabledReason          string   `json:"disabledReason"`
	PreviousSecretExpiresAt string   `json:"previousSecretExpiresAt"`
}

// delivered is one request an endpoint receiver got.
type delivered struct {
	path   string
	header http.Header
	body   []byte
}

// endpointReceiver records every delivery by path; /gone answers 410
// until revived.
type endpointReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []delivered
	gone bool
}

func newEndpointReceiver(t *testing.T) *endpointReceiver {
	r := &endpointReceiver{gone: true}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, delivered{path: req.URL.Path, header: req.Header.Clone(), body: body})
		gone := r.gone
		r.mu.Unlock()
		if req.URL.Path == "/gone" && gone {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.Header().Set("X-Request-Id", "req-"+req.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *endpointReceiver) to(path string) []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivered
	for _, d := range r.got {
		if d.path == path {
			out = append(out, d)
		}
	}
	return out
}

func (r *endpointReceiver) revive() {
	r.mu.Lock()
	r.gone = false
	r.mu.Unlock()
}

// verifyDelivery checks a delivery with a Standard Webhooks verifier for secret.
func verifyDelivery(t *testing.T, d delivered, secret string) error {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(d.body, d.header)
}

func TestEndpointsEndToEnd(t *testing.T) {
	t.Parallel()
	recv := newEndpointReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	create := func(path string, types []string) endpointJSON {
		t.Helper()
		var out struct{ Endpoint endpointJSON }
		req := map[string]any{"url": recv.URL + path, "eventTypes": types}
		if status, body := s.call(t, "EndpointService/CreateEndpoint", req, &out); status != http.StatusOK {
			t.Fatalf("CreateEndpoint: HTTP %d %s", status, body)
		}
		if !strings.HasPrefix(out.Endpoint.Secret, "whsec_") {
			t.Fatalf("CreateEndpoint: secret %q, want a generated whsec_ secret", out.Endpoint.Secret)
		}
		return out.Endpoint
	}
	type sendAnswer struct {
		MessageID   string   `json:"messageId"`
		JobIDs      []string `json:"jobIds"`
		EndpointIDs []string `json:"endpointIds"`
	}
	send := func(eventType string, extra map[string]any) sendAnswer {
		t.Helper()
		req := map[string]any{"eventType": eventType, "payload": map[string]any{"type": eventType}}
		for k, v := range extra {
			req[k] = v
		}
		var out sendAnswer
		if status, body := s.call(t, "EndpointService/SendMessage", req, &out); status != http.StatusOK {
			t.Fatalf("SendMessage: HTTP %d %s", status, body)
		}
		return out
	}
	getEndpoint := func(id string) endpointJSON {
		t.Helper()
		var out struct{ Endpoint endpointJSON }
		if status, body := s.call(t, "EndpointService/GetEndpoint", map[string]string{"id": id}, &out); status != http.StatusOK {
			t.Fatalf("GetEndpoint: HTTP %d %s", status, body)
		}
		return out.Endpoint
	}
	update := func(req map[string]any) endpointJSON {
		t.Helper()
		var out struct{ Endpoint endpointJSON }
		if status, body := s.call(t, "EndpointService/UpdateEndpoint", req, &out); status != http.StatusOK {
			t.Fatalf("UpdateEndpoint: HTTP %d %s", status, body)
		}
		return out.Endpoint
	}

	invoices := create("/invoices", []string{"invoice.paid"})
	users := create("/users", []string{"user.created"})
	all := create("/all", nil)

	t.Run("fan-out only to subscribed endpoints, each verifiable with its secret", func(t *testing.T) {
		msg := send("invoice.paid", nil)
		if !slices.Equal(sorted(msg.EndpointIDs), sorted([]string{invoices.ID, all.ID})) || len(msg.JobIDs) != 2 {
			t.Fatalf("SendMessage: endpoints %v jobs %v, want %s and %s", msg.EndpointIDs, msg.JobIDs, invoices.ID, all.ID)
		}
		for _, id := range msg.JobIDs {
			waitState(t, s, id, "JOB_STATE_SUCCEEDED", 30*time.Second)
		}
		for _, c := range []struct {
			path string
			ep   endpointJSON
		}{{"/invoices", invoices}, {"/all", all}} {
			got := recv.to(c.path)
			if len(got) != 1 {
				t.Fatalf("%s: got %d deliveries, want 1", c.path, len(got))
			}
			if err := verifyDelivery(t, got[0], c.ep.Secret); err != nil {
				t.Errorf("%s: Standard Webhooks verification with its secret: %v", c.path, err)
			}
			other := invoices.Secret
			if c.ep.ID == invoices.ID {
				other = all.Secret
			}
			if err := verifyDelivery(t, got[0], other); err == nil {
				t.Errorf("%s: verifies with another endpoint's secret", c.path)
			}
		}
		if got := recv.to("/users"); len(got) != 0 {
			t.Errorf("/users: got %d deliveries of invoice.paid, want none", len(got))
		}
	})

	t.Run("repeat with idempotency key creates nothing new", func(t *testing.T) {
		first := send("user.created", map[string]any{"idempotencyKey": "signup-42"})
		for _, id := range first.JobIDs {
			waitState(t, s, id, "JOB_STATE_SUCCEEDED", 30*time.Second)
		}
		again := send("user.created", map[string]any{"idempotencyKey": "signup-42"})
		if first.MessageID != again.MessageID || !slices.Equal(first.JobIDs, again.JobIDs) {
			t.Fatalf("repeat answered %v %v, want %v %v", again.MessageID, again.JobIDs, first.MessageID, first.JobIDs)
		}
		time.Sleep(500 * time.Millisecond)
		if got := recv.to("/users"); len(got) != 1 {
			t.Errorf("/users: got %d deliveries, want 1", len(got))
		}
	})

	t.Run("rotation signs with both secrets", func(t *testing.T) {
		var out struct{ Endpoint endpointJSON }
		if status, body := s.call(t, "EndpointService/RotateSecret", map[string]any{"id": invoices.ID}, &out); status != http.StatusOK {
			t.Fatalf("RotateSecret: HTTP %d %s", status, body)
		}
		rotated := out.Endpoint
		if rotated.Secret == invoices.Secret || rotated.PreviousSecretExpiresAt == "" {
			t.Fatalf("RotateSecret: got %+v, want a new secret and the old one's expiry", rotated)
		}
		msg := send("invoice.paid", nil)
		for _, id := range msg.JobIDs {
			waitState(t, s, id, "JOB_STATE_SUCCEEDED", 30*time.Second)
		}
		got := recv.to("/invoices")
		last := got[len(got)-1]
		if sigs := strings.Fields(last.header.Get("webhook-signature")); len(sigs) != 2 {
			t.Errorf("webhook-signature %q: want two signatures", last.header.Get("webhook-signature"))
		}
		for name, secret := range map[string]string{"new": rotated.Secret, "old": invoices.Secret} {
			if err := verifyDelivery(t, last, secret); err != nil {
				t.Errorf("during the overlap, the %s secret does not verify: %v", name, err)
			}
		}
	})

	t.Run("disabled endpoint keeps messages and delivers them once enabled", func(t *testing.T) {
		update(map[string]any{"id": users.ID, "disabled": true, "disabledReason": "maintenance"})
		var enq enqueueAnswer
		req := map[string]any{"queue": "users", "payload": map[string]any{"n": 1}, "target": map[string]string{"endpointId": users.ID}}
		if status, body := s.call(t, "JobService/Enqueue", req, &enq); status != http.StatusOK {
			t.Fatalf("Enqueue to a disabled endpoint: HTTP %d %s", status, body)
		}
		before := len(recv.to("/users"))
		time.Sleep(2 * time.Second)
		if got := len(recv.to("/users")); got != before {
			t.Fatalf("disabled endpoint got %d deliveries, want none", got-before)
		}
		waitState(t, s, enq.Job.ID, "JOB_STATE_READY", 5*time.Second)
		update(map[string]any{"id": users.ID, "disabled": false})
		waitState(t, s, enq.Job.ID, "JOB_STATE_SUCCEEDED", 30*time.Second)
		if got := len(recv.to("/users")); got != before+1 {
			t.Errorf("after enabling: got %d deliveries, want 1", got-before)
		}
	})

	t.Run("410 disables the endpoint and keeps the message", func(t *testing.T) {
		gone := create("/gone", []string{"order.shipped"})
		msg := send("order.shipped", nil)
		if len(msg.JobIDs) != 2 { // /gone and /all
			t.Fatalf("SendMessage: %d jobs, want 2", len(msg.JobIDs))
		}
		jobID := msg.JobIDs[slices.Index(msg.EndpointIDs, gone.ID)]
		deadline := time.Now().Add(30 * time.Second)
		for !getEndpoint(gone.ID).Disabled {
			if time.Now().After(deadline) {
				t.Fatal("endpoint answering 410 was not disabled within 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		ep := getEndpoint(gone.ID)
		if !strings.Contains(ep.DisabledReason, "410") {
			t.Errorf("disabled reason %q, want it to name the 410", ep.DisabledReason)
		}
		// The failed attempt leaves the job waiting (retrying, or ready and
		// parked once its next attempt came), never dead.
		var job jobJSON
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			var got struct{ Job jobJSON }
			s.call(t, "JobService/GetJob", map[string]string{"id": jobID}, &got)
			job = got.Job
			if job.Attempt == 1 && (job.State == "JOB_STATE_RETRYING" || job.State == "JOB_STATE_READY") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s: state %s attempt %d; want attempt 1, retrying or ready (parked)", jobID, job.State, job.Attempt)
			}
		}
		if !strings.Contains(job.LastError, "410") {
			t.Errorf("last error %q, want the 410", job.LastError)
		}
		recv.revive()
		update(map[string]any{"id": gone.ID, "disabled": false})
		waitState(t, s, jobID, "JOB_STATE_SUCCEEDED", 30*time.Second)
	})

	t.Run("unknown endpoint target is refused", func(t *testing.T) {
		req := map[string]any{"queue": "q", "payload": 1, "target": map[string]string{"endpointId": "ep_nope"}}
		status, body := s.call(t, "JobService/Enqueue", req, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(body), "target.endpointId") {
			t.Errorf("got HTTP %d %s, want 400 naming target.endpointId", status, body)
		}
	})

	t.Run("private address refused outside loopback", func(t *testing.T) {
		var out struct{ Endpoint endpointJSON }
		req := map[string]any{"url": "http://10.255.255.1:9/hook", "eventTypes": []string{"private.test"}}
		if status, body := s.call(t, "EndpointService/CreateEndpoint", req, &out); status != http.StatusOK {
			t.Fatalf("CreateEndpoint: HTTP %d %s", status, body)
		}
		msg := send("private.test", nil)
		job := waitState(t, s, msg.JobIDs[slices.Index(msg.EndpointIDs, out.Endpoint.ID)], "JOB_STATE_DEAD", 30*time.Second)
		if !strings.Contains(job.LastError, "not allowed") {
			t.Errorf("last error %q, want the SSRF guard's refusal", job.LastError)
		}
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
