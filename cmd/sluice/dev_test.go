package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDevDeliversSignedJobAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0")
	if s.Key == "" || !strings.HasPrefix(s.Secret, "whsec_") {
		t.Fatalf("dev printed key %q and secret %q; want both", s.Key, s.Secret)
	}
	recv.setSecret(s.Secret)

	var enq enqueueAnswer
	status, body := s.call(t, "JobService/Enqueue", map[string]any{
		"queue":   "emails",
		"payload": map[string]any{"to": "ada@example.com", "n": 1},
		"target":  map[string]string{"url": recv.URL + "/hook"},
	}, &enq)
	if status != http.StatusOK || !enq.Created || enq.Job.ID == "" {
		t.Fatalf("Enqueue: HTTP %d %s", status, body)
	}
	job := waitState(t, s, enq.Job.ID, "JOB_STATE_SUCCEEDED", 30*time.Second)
	if job.Attempt != 1 {
		t.Errorf("attempt: got %d, want 1", job.Attempt)
	}
	if got := recv.count(enq.Job.ID); got != 1 {
		t.Errorf("deliveries with webhook-id %s: got %d, want 1", enq.Job.ID, got)
	}
	if recv.badSigned != 0 {
		t.Errorf("deliveries with a bad signature: got %d, want 0", recv.badSigned)
	}
	var payload map[string]any
	if err := json.Unmarshal(recv.bodies[enq.Job.ID], &payload); err != nil || payload["to"] != "ada@example.com" {
		t.Errorf("delivered body %s: want the payload", recv.bodies[enq.Job.ID])
	}

	// A clean stop exits 0; the state comes back from the log.
	if code := s.terminate(t); code != 0 {
		t.Errorf("exit code after SIGTERM: got %d, want 0", code)
	}
	s2 := startSluice(t, "", "dev", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0")
	if s2.Key != s.Key {
		t.Errorf("key after restart: got %q, want the kept %q", s2.Key, s.Key)
	}
	waitState(t, s2, enq.Job.ID, "JOB_STATE_SUCCEEDED", 30*time.Second)
	if got := recv.count(enq.Job.ID); got != 1 {
		t.Errorf("deliveries after a clean restart: got %d, want still 1", got)
	}
}

func TestDevAuthAndBadInput(t *testing.T) {
	t.Parallel()
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--max-payload-bytes", "1024")
	t.Run("unauthenticated", func(t *testing.T) {
		for _, key := range []string{"", "sk_wrong"} {
			status, body := callWith(t, s.URL, key, "JobService/ListJobs", map[string]any{}, nil)
			if status != http.StatusUnauthorized || !strings.Contains(string(body), "unauthenticated") {
				t.Errorf("key %q: got HTTP %d %s, want 401 unauthenticated", key, status, body)
			}
		}
	})
	good := func() map[string]any {
		return map[string]any{"queue": "q", "payload": map[string]any{"a": 1}, "target": map[string]string{"url": "http://127.0.0.1:1/x"}}
	}
	cases := []struct {
		name   string
		edit   func(m map[string]any)
		status int
		code   string
		field  string
	}{
		{"missing queue", func(m map[string]any) { delete(m, "queue") }, 400, "invalid_argument", "queue"},
		{"bad queue", func(m map[string]any) { m["queue"] = "no spaces" }, 400, "invalid_argument", "queue"},
		{"missing payload", func(m map[string]any) { delete(m, "payload") }, 400, "invalid_argument", "payload"},
		{"oversized payload", func(m map[string]any) { m["payload"] = strings.Repeat("x", 2000) }, 429, "resource_exhausted", "payload"},
		{"relative url", func(m map[string]any) { m["target"] = map[string]string{"url": "/hook"} }, 400, "invalid_argument", "target.url"},
		{"ftp url", func(m map[string]any) { m["target"] = map[string]string{"url": "ftp://example.com/"} }, 400, "invalid_argument", "target.url"},
		{"unknown endpoint", func(m map[string]any) { m["target"] = map[string]string{"endpointId": "ep_nope"} }, 400, "invalid_argument", "target.endpointId"},
		{"negative attempts", func(m map[string]any) { m["maxAttempts"] = -1 }, 400, "invalid_argument", "maxAttempts"},
		{"reserved header", func(m map[string]any) { m["headers"] = map[string]string{"webhook-id": "x"} }, 400, "invalid_argument", "headers[webhook-id]"},
		{"bad schedule", func(m map[string]any) { m["retryPolicy"] = map[string]any{"schedule": []string{"soon"}} }, 400, "invalid_argument", "retryPolicy.schedule[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := good()
			c.edit(req)
			status, body := s.call(t, "JobService/Enqueue", req, nil)
			var e struct{ Code, Message string }
			_ = json.Unmarshal(body, &e)
			if status != c.status || e.Code != c.code || !strings.HasPrefix(e.Message, c.field+":") {
				t.Errorf("got HTTP %d %s, want %d %s naming %s", status, body, c.status, c.code, c.field)
			}
		})
	}
	t.Run("non-JSON body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/sluice.v1.JobService/Enqueue", strings.NewReader(`{"queue":"q","payload":`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+s.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("got HTTP %d, want 400", resp.StatusCode)
		}
	})
	t.Run("bad batch item rejects the batch", func(t *testing.T) {
		bad := good()
		bad["queue"] = ""
		status, body := s.call(t, "JobService/EnqueueBatch", map[string]any{"jobs": []any{good(), bad, good()}}, nil)
		if status != 400 || !strings.Contains(string(body), "jobs[1].queue:") {
			t.Errorf("got HTTP %d %s, want 400 naming jobs[1].queue", status, body)
		}
	})
	// Nothing of the above reached the log: the tenant has no jobs.
	time.Sleep(500 * time.Millisecond) // let projections catch up with anything that was appended
	var list struct{ Jobs []jobJSON }
	if status, body := s.call(t, "JobService/ListJobs", map[string]any{}, &list); status != 200 || len(list.Jobs) != 0 {
		t.Errorf("ListJobs after rejected requests: HTTP %d, %d jobs (%s), want 0", status, len(list.Jobs), body)
	}
}

func TestDevMetrics(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	var enq enqueueAnswer
	s.call(t, "JobService/Enqueue", map[string]any{"queue": "metered", "payload": 1, "target": map[string]string{"url": recv.URL + "/gone"}}, &enq)
	waitState(t, s, enq.Job.ID, "JOB_STATE_DEAD", 30*time.Second)
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`sluice_delivery_attempts_total{outcome="dead",queue="metered"} 1`,
		`sluice_jobs_dead_lettered_total{queue="metered"} 1`,
		`sluice_tier_backlog{tier="1s"}`,
		`sluice_tier_oldest_age_seconds{tier="6h"}`,
		`sluice_consumer_lag{group="sluice.delivery",topic="sluice.events"}`,
		`sluice_kafka_`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
