package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/delivery"
	"github.com/sluicehq/sluice/inbound/verify"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/tenancy"
)

// TestInboundWebhooks runs signed GitHub and Stripe deliveries through a
// server: accepted, routed to a queue once per delivery id, visible with
// GetJob and in the log; forged and stale ones refused; a replay routes
// again under fresh ids.
func TestInboundWebhooks(t *testing.T) {
	t.Parallel()
	t.Run("kfake", func(t *testing.T) {
		t.Parallel()
		s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
		inboundEndToEnd(t, s, s.Brokers, eventlog.DefaultPrefix)
	})
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		brokers, redisURL := os.Getenv(eventlogtest.EnvBrokers), os.Getenv("SLUICE_TEST_REDIS_URL")
		if brokers == "" || redisURL == "" {
			t.Skipf("REAL KAFKA NOT TESTED: %s and SLUICE_TEST_REDIS_URL must both be set (the README's test command sets them)", eventlogtest.EnvBrokers)
		}
		key := tenancy.NewKey()
		prefix := fmt.Sprintf("inbound%d.", time.Now().UnixNano())
		s := startSluice(t, key, "serve", "--kafka-brokers", brokers, "--redis-url", redisURL,
			"--topic-prefix", prefix, "--partitions", "4", "--replication-factor", "1", "--create-topics",
			"--bootstrap-api-key", key, "--http-addr", "127.0.0.1:0", "--node-id", "inbound")
		inboundEndToEnd(t, s, brokers, prefix)
	})
}

type sourceAnswer struct {
	Source struct {
		ID        string `json:"id"`
		IngestURL string `json:"ingestUrl"`
	} `json:"source"`
}

func inboundEndToEnd(t *testing.T, s *server, brokers, prefix string) {
	const ghSecret, stripeSecret = "gh-e2e-secret", "whsec_e2e_stripe_secret"
	start := time.Now()
	var gh, st sourceAnswer
	if status, body := s.call(t, "SourceService/CreateSource", map[string]any{
		"name":         "github",
		"verification": map[string]any{"github": map[string]any{"secret": ghSecret}},
		"routes":       []any{map[string]any{"eventTypes": []string{"push"}, "queue": "gh-pushes"}},
	}, &gh); status != http.StatusOK {
		t.Fatalf("CreateSource github: %d %s", status, body)
	}
	if gh.Source.IngestURL != s.URL+"/in/"+gh.Source.ID {
		t.Errorf("ingestUrl: got %q, want %s/in/%s", gh.Source.IngestURL, s.URL, gh.Source.ID)
	}
	if status, body := s.call(t, "SourceService/CreateSource", map[string]any{
		"name":         "stripe",
		"verification": map[string]any{"stripe": map[string]any{"secret": stripeSecret}},
		"routes":       []any{map[string]any{"eventTypes": []string{"invoice.*"}, "queue": "billing"}},
	}, &st); status != http.StatusOK {
		t.Fatalf("CreateSource stripe: %d %s", status, body)
	}

	push := func(delivery string, sign func([]byte) string) (int, time.Duration) {
		body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","delivery":%q}`, delivery))
		return postInbound(t, gh.Source.IngestURL, body, "X-Hub-Signature-256", sign(body),
			"X-GitHub-Event", "push", "X-GitHub-Delivery", delivery, "Content-Type", "application/json")
	}
	valid := func(b []byte) string { return verify.SignGitHub([]byte(ghSecret), b) }

	// A signed delivery is accepted; the same delivery again too.
	status, took := push("d-1", valid)
	if status != http.StatusAccepted {
		t.Fatalf("signed delivery: got %d, want 202", status)
	}
	t.Logf("signed delivery accepted in %s", took)
	if status, _ := push("d-1", valid); status != http.StatusAccepted {
		t.Fatalf("repeated delivery: got %d, want 202", status)
	}
	// Forged and unsigned ones are refused.
	if status, _ := push("d-forged", func(b []byte) string { return verify.SignGitHub([]byte("not the secret"), b) }); status != http.StatusUnauthorized {
		t.Errorf("forged delivery: got %d, want 401", status)
	}
	if status, _ := push("d-unsigned", func([]byte) string { return "" }); status != http.StatusUnauthorized {
		t.Errorf("unsigned delivery: got %d, want 401", status)
	}
	if status, _ := push("d-2", valid); status != http.StatusAccepted {
		t.Fatalf("second delivery: got %d, want 202", status)
	}

	// Stripe: a stale signature is refused, a fresh one routed by type.
	invoice := []byte(`{"id":"evt_e2e_1","type":"invoice.paid","data":{}}`)
	stale := verify.SignStripe(time.Now().Add(-10*time.Minute), invoice, []byte(stripeSecret))
	if status, _ := postInbound(t, st.Source.IngestURL, invoice, "Stripe-Signature", stale); status != http.StatusUnauthorized {
		t.Errorf("stale Stripe delivery: got %d, want 401", status)
	}
	if status, _ := postInbound(t, st.Source.IngestURL, invoice, "Stripe-Signature", verify.SignStripe(time.Now(), invoice, []byte(stripeSecret))); status != http.StatusAccepted {
		t.Errorf("Stripe delivery: got %d, want 202", status)
	}

	// d-1 and d-2 become one job each: the repeat is not processed again.
	jobs := waitJobs(t, s, "gh-pushes", 2)
	byKey := map[string]jobJSON{}
	for _, j := range jobs {
		byKey[j.IdempotencyKey] = j.jobJSON
	}
	for _, d := range []string{"d-1", "d-2"} {
		key := "inbound/" + gh.Source.ID + "/" + d + "/queue/gh-pushes"
		j, ok := byKey[key]
		if !ok {
			t.Fatalf("no job keyed %s among %+v", key, jobs)
		}
		var got struct {
			Job struct {
				State   string            `json:"state"`
				Payload map[string]any    `json:"payload"`
				Headers map[string]string `json:"headers"`
			} `json:"job"`
		}
		if status, body := s.call(t, "JobService/GetJob", map[string]string{"id": j.ID}, &got); status != http.StatusOK {
			t.Fatalf("GetJob %s: %d %s", j.ID, status, body)
		}
		if got.Job.Payload["delivery"] != d || got.Job.Headers["x-github-delivery"] != d || got.Job.State != "JOB_STATE_READY" {
			t.Errorf("job of %s: got %+v; want the JSON body, the request's headers, ready", d, got.Job)
		}
	}
	if billing := waitJobs(t, s, "billing", 1); billing[0].IdempotencyKey != "inbound/"+st.Source.ID+"/evt_e2e_1/queue/billing" {
		t.Errorf("Stripe job: got key %q, want it keyed by the event id", billing[0].IdempotencyKey)
	}

	// The log holds the three accepted GitHub requests and the jobs.
	inbox := countRecords(t, brokers, prefix+"inbox", func(r *kgo.Record) bool { return string(r.Key) == gh.Source.ID })
	if inbox != 3 {
		t.Errorf("inbox: got %d records of the GitHub source, want 3 (d-1 twice, d-2)", inbox)
	}
	enqueued := countRecords(t, brokers, prefix+"events", func(r *kgo.Record) bool {
		return string(r.Key) == byKey["inbound/"+gh.Source.ID+"/d-1/queue/gh-pushes"].ID && eventlog.RecordType(r) == eventlog.TypeJobEnqueued
	})
	if enqueued == 0 {
		t.Error("events: no job.enqueued for d-1's job")
	}

	// A replay routes the range again under fresh ids, once per delivery.
	var replay struct {
		ReplayID string `json:"replayId"`
		Requests string `json:"requests"`
		Jobs     string `json:"jobs"`
	}
	if status, body := s.call(t, "SourceService/ReplayInbox", map[string]any{
		"sourceId": gh.Source.ID, "from": start.Add(-time.Second).UTC().Format(time.RFC3339Nano), "replayId": "e2e",
	}, &replay); status != http.StatusOK || replay.Requests != "3" || replay.Jobs != "2" {
		t.Fatalf("ReplayInbox: got %d %s, want 3 requests and 2 jobs", status, body)
	}
	waitJobs(t, s, "gh-pushes", 4)

	// The same through the command line, under another replay id.
	out, err := exec.Command(binary, "inbox", "replay", "--server", s.URL, "--api-key", s.Key,
		"--source", gh.Source.ID, "--from", "10m", "--replay-id", "cli").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "replay cli: 3 requests, 2 jobs enqueued") {
		t.Fatalf("sluice inbox replay: %v: %s", err, out)
	}
	waitJobs(t, s, "gh-pushes", 6)
}

// postInbound posts body with headers (pairs; empty values skipped) and
// returns the status and how long the answer took.
func postInbound(t *testing.T, url string, body []byte, headers ...string) (int, time.Duration) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] != "" {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, took
}

type listedJob struct {
	jobJSON
	IdempotencyKey string `json:"idempotencyKey"`
}

// waitJobs polls ListJobs until queue holds want jobs, and fails if it
// holds more.
func waitJobs(t *testing.T, s *server, queue string, want int) []listedJob {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got struct{ Jobs []listedJob }
		status, body := s.call(t, "JobService/ListJobs", map[string]any{"queue": queue, "pageSize": 1000}, &got)
		switch {
		case status != http.StatusOK:
			t.Fatalf("ListJobs %s: %d %s", queue, status, body)
		case len(got.Jobs) > want:
			t.Fatalf("queue %s: got %d jobs, want %d", queue, len(got.Jobs), want)
		case len(got.Jobs) == want:
			// Hold on a moment: a duplicate would show up now.
			time.Sleep(300 * time.Millisecond)
			status, _ = s.call(t, "JobService/ListJobs", map[string]any{"queue": queue, "pageSize": 1000}, &got)
			if status == http.StatusOK && len(got.Jobs) != want {
				t.Fatalf("queue %s: got %d jobs, want %d", queue, len(got.Jobs), want)
			}
			return got.Jobs
		case time.Now().After(deadline):
			t.Fatalf("queue %s: %d jobs after 30s, want %d", queue, len(got.Jobs), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countRecords reads a topic from the start to its current end and counts
// the committed records match accepts.
func countRecords(t *testing.T, brokers, topic string, match func(*kgo.Record) bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 0
	for {
		pollCtx, cancelPoll := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pollCtx)
		cancelPoll()
		if ctx.Err() != nil {
			t.Fatalf("read %s: %v", topic, ctx.Err())
		}
		if fs.Empty() {
			return n // nothing for 2s: the end
		}
		fs.EachRecord(func(r *kgo.Record) {
			if match(r) {
				n++
			}
		})
	}
}

// TestInboundToSignedEndpoint forwards a signed GitHub delivery to an
// endpoint: the body byte-exact with its content type, signed with the
// endpoint's secret, once for a repeated delivery id.
func TestInboundToSignedEndpoint(t *testing.T) {
	t.Parallel()
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")

	type arrival struct {
		body        []byte
		contentType string
		id          string
		verified    bool
	}
	arrivals := make(chan arrival, 16)
	var signer *delivery.Signer
	var signerMu sync.Mutex
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts, _ := strconv.ParseInt(r.Header.Get(delivery.HeaderTimestamp), 10, 64)
		signerMu.Lock()
		ok := signer != nil && signer.Verify(r.Header.Get(delivery.HeaderID), ts, body, r.Header.Get(delivery.HeaderSignature))
		signerMu.Unlock()
		arrivals <- arrival{body, r.Header.Get("Content-Type"), r.Header.Get(delivery.HeaderID), ok}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)

	var ep struct {
		Endpoint struct {
			ID     string `json:"id"`
			Secret string `json:"secret"`
		} `json:"endpoint"`
	}
	if status, body := s.call(t, "EndpointService/CreateEndpoint", map[string]any{"url": recv.URL + "/hook"}, &ep); status != http.StatusOK {
		t.Fatalf("CreateEndpoint: %d %s", status, body)
	}
	sg, err := delivery.NewSigner(ep.Endpoint.Secret)
	if err != nil {
		t.Fatalf("endpoint secret %q: %v", ep.Endpoint.Secret, err)
	}
	signerMu.Lock()
	signer = sg
	signerMu.Unlock()

	const ghSecret = "gh-forward-secret"
	status, answer := s.call(t, "SourceService/CreateSource", map[string]any{
		"name":         "github",
		"verification": map[string]any{"github": map[string]any{"secret": ghSecret}},
		"routes":       []any{map[string]any{"endpointIds": []string{"ep_missing"}}},
	}, nil)
	if status != http.StatusBadRequest || !strings.Contains(string(answer), "routes[0].endpointIds[0]") {
		t.Errorf("route to an unknown endpoint: got %d %s, want 400 naming routes[0].endpointIds[0]", status, answer)
	}
	var src sourceAnswer
	if status, body := s.call(t, "SourceService/CreateSource", map[string]any{
		"name":         "github",
		"verification": map[string]any{"github": map[string]any{"secret": ghSecret}},
		"routes":       []any{map[string]any{"endpointIds": []string{ep.Endpoint.ID}}},
	}, &src); status != http.StatusOK {
		t.Fatalf("CreateSource: %d %s", status, body)
	}
	// GitHub's form encoding: not JSON, forwarded as it came.
	body := []byte("payload=%7B%22zen%22%3A%22Design+for+failure.%22%7D")
	const contentType = "application/x-www-form-urlencoded"
	for range 2 {
		status, _ := postInbound(t, src.Source.IngestURL, body, "X-Hub-Signature-256", verify.SignGitHub([]byte(ghSecret), body),
			"X-GitHub-Event", "ping", "X-GitHub-Delivery", "fwd-1", "Content-Type", contentType)
		if status != http.StatusAccepted {
			t.Fatalf("signed delivery: got %d, want 202", status)
		}
	}
	select {
	case a := <-arrivals:
		if !bytes.Equal(a.body, body) || a.contentType != contentType || !a.verified {
			t.Fatalf("forwarded: got body %q content type %q verified %v; want the body byte-exact, %s, a valid signature",
				a.body, a.contentType, a.verified, contentType)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nothing forwarded to the endpoint within 30s")
	}
	select {
	case a := <-arrivals:
		t.Fatalf("a second delivery (webhook-id %s) arrived for a repeated delivery id", a.id)
	case <-time.After(2 * time.Second):
	}
}

// TestInboundSurvivesRouterOutage accepts deliveries while no router
// runs, then starts one, kills it (SIGKILL) once it has begun and starts
// another: every accepted request becomes exactly one job.
func TestInboundSurvivesRouterOutage(t *testing.T) {
	t.Parallel()
	brokers, redisURL := os.Getenv(eventlogtest.EnvBrokers), os.Getenv("SLUICE_TEST_REDIS_URL")
	if brokers == "" || redisURL == "" {
		t.Skipf("REAL KAFKA NOT TESTED: %s and SLUICE_TEST_REDIS_URL must both be set (the README's test command sets them)", eventlogtest.EnvBrokers)
	}
	key := tenancy.NewKey()
	prefix := fmt.Sprintf("inoutage%d.", time.Now().UnixNano())
	common := []string{"serve", "--kafka-brokers", brokers, "--redis-url", redisURL,
		"--topic-prefix", prefix, "--partitions", "4", "--replication-factor", "1"}
	api := startSluice(t, key, append(common, "--roles", "api,projections", "--create-topics",
		"--bootstrap-api-key", key, "--http-addr", "127.0.0.1:0", "--node-id", "api")...)

	const secret, n = "gh-outage-secret", 200
	var src sourceAnswer
	if status, body := api.call(t, "SourceService/CreateSource", map[string]any{
		"name": "github", "verification": map[string]any{"github": map[string]any{"secret": secret}},
		"routes": []any{map[string]any{"queue": "outage"}},
	}, &src); status != http.StatusOK {
		t.Fatalf("CreateSource: %d %s", status, body)
	}
	for i := range n {
		body := []byte(fmt.Sprintf(`{"n":%d}`, i))
		status, _ := postInbound(t, src.Source.IngestURL, body, "X-Hub-Signature-256", verify.SignGitHub([]byte(secret), body),
			"X-GitHub-Event", "push", "X-GitHub-Delivery", fmt.Sprintf("outage-%d", i))
		if status != http.StatusAccepted {
			t.Fatalf("delivery %d without a router: got %d, want 202", i, status)
		}
	}
	var got struct{ Jobs []listedJob }
	if api.call(t, "JobService/ListJobs", map[string]any{"queue": "outage"}, &got); len(got.Jobs) != 0 {
		t.Fatalf("without a router: got %d jobs, want none yet", len(got.Jobs))
	}
	router := startSluice(t, key, append(common, "--roles", "router", "--node-id", "router")...)
	// Kill the router once it has begun, then start another.
	deadline := time.Now().Add(30 * time.Second)
	for len(got.Jobs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no job routed within 30s of the router's start")
		}
		time.Sleep(10 * time.Millisecond)
		api.call(t, "JobService/ListJobs", map[string]any{"queue": "outage", "pageSize": 1000}, &got)
	}
	router.kill()
	startSluice(t, key, append(common, "--roles", "router", "--node-id", "router")...)
	waitJobs(t, api, "outage", n)
}
