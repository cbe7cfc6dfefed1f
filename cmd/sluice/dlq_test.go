package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// deadLetterJSON is a dead letter as ListDeadLetters answers it.
type deadLetterJSON struct {
	Job struct {
		ID    string `json:"id"`
		Queue string `json:"queue"`
		State string `json:"state"`
	} `json:"job"`
	Attempts []struct {
		Attempt    int    `json:"attempt"`
		StatusCode int    `json:"statusCode"`
		Error      string `json:"error"`
		StartedAt  string `json:"startedAt"`
		Latency    string `json:"latency"`
	} `json:"attempts"`
	Reason string `json:"reason"`
	DiedAt string `json:"diedAt"`
}

// retriedJobJSON is a job with what a retry by hand adds to it.
type retriedJobJSON struct {
	jobJSON
	Payload   json.RawMessage `json:"payload"`
	Retries   int             `json:"retries"`
	LastRetry struct {
		Reason            string `json:"reason"`
		Actor             string `json:"actor"`
		FromState         string `json:"fromState"`
		PayloadOverridden bool   `json:"payloadOverridden"`
		BudgetStart       int    `json:"budgetStart"`
	} `json:"lastRetry"`
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	recv.setSecret(s.Secret)
	enqueue := func(queue, path string, extra map[string]any) string {
		t.Helper()
		req := map[string]any{"queue": queue, "payload": map[string]any{"v": 1}, "target": map[string]string{"url": recv.URL + path}}
		for k, v := range extra {
			req[k] = v
		}
		var enq enqueueAnswer
		if status, body := s.call(t, "JobService/Enqueue", req, &enq); status != http.StatusOK {
			t.Fatalf("Enqueue: HTTP %d %s", status, body)
		}
		return enq.Job.ID
	}
	list := func(req map[string]any) []deadLetterJSON {
		t.Helper()
		var out struct {
			DeadLetters []deadLetterJSON `json:"deadLetters"`
		}
		if status, body := s.call(t, "DeadLetterService/ListDeadLetters", req, &out); status != http.StatusOK {
			t.Fatalf("ListDeadLetters: HTTP %d %s", status, body)
		}
		return out.DeadLetters
	}

	// A job that fails on its only attempt, and one whose target is gone.
	flaky := enqueue("dlq", "/flaky", map[string]any{"maxAttempts": 1})
	gone := enqueue("gone", "/gone", nil)
	waitState(t, s, flaky, "JOB_STATE_DEAD", 30*time.Second)
	waitState(t, s, gone, "JOB_STATE_DEAD", 30*time.Second)

	t.Run("listed with attempts and reason", func(t *testing.T) {
		all := list(map[string]any{})
		if ids := deadIDs(all); !slices.Equal(ids, []string{gone, flaky}) && !slices.Equal(ids, []string{flaky, gone}) {
			t.Fatalf("ListDeadLetters: got %v, want %s and %s", ids, flaky, gone)
		}
		dl := list(map[string]any{"queue": "dlq"})
		if len(dl) != 1 || dl[0].Job.ID != flaky {
			t.Fatalf("ListDeadLetters(queue dlq): got %v, want only %s", deadIDs(dl), flaky)
		}
		d := dl[0]
		if d.Job.State != "JOB_STATE_DEAD" || d.Reason != "attempts exhausted: 1 of 1 failed" || d.DiedAt == "" {
			t.Errorf("dead letter: got state %s, reason %q, died at %q; want dead, attempts exhausted, a time", d.Job.State, d.Reason, d.DiedAt)
		}
		if len(d.Attempts) != 1 || d.Attempts[0].Attempt != 1 || d.Attempts[0].StatusCode != 503 ||
			d.Attempts[0].Error != "HTTP 503" || d.Attempts[0].StartedAt == "" || d.Attempts[0].Latency == "" {
			t.Errorf("attempts: got %+v; want attempt 1 answered 503 with its time and latency", d.Attempts)
		}
		if got := deadIDs(list(map[string]any{"filter": map[string]any{"errorContains": "410 gone"}})); !slices.Equal(got, []string{gone}) {
			t.Errorf("ListDeadLetters(errorContains 410 gone): got %v, want %s", got, gone)
		}
		if got := deadIDs(list(map[string]any{"filter": map[string]any{"errorContains": "HTTP 503", "queue": "dlq"}})); !slices.Equal(got, []string{flaky}) {
			t.Errorf("ListDeadLetters(errorContains HTTP 503, queue dlq): got %v, want %s", got, flaky)
		}
	})

	t.Run("retried with a new payload", func(t *testing.T) {
		recv.heal()
		var out struct{ Retried int }
		status, body := s.call(t, "DeadLetterService/RetryDeadLetters", map[string]any{
			"ids": []string{flaky}, "payloadOverride": map[string]any{"v": 2}, "reason": "receiver fixed",
		}, &out)
		if status != http.StatusOK || out.Retried != 1 {
			t.Fatalf("RetryDeadLetters: HTTP %d %s; want 1 retried", status, body)
		}
		waitState(t, s, flaky, "JOB_STATE_SUCCEEDED", 30*time.Second)
		if got := string(recv.body(flaky)); got != `{"v":2}` {
			t.Errorf("delivered body after the retry: got %s, want the new payload {\"v\":2}", got)
		}
		if got := recv.count(flaky); got != 2 {
			t.Errorf("deliveries: got %d, want 2 (the failed one and the retry)", got)
		}
		var got struct{ Job retriedJobJSON }
		s.call(t, "JobService/GetJob", map[string]string{"id": flaky}, &got)
		j, r := got.Job, got.Job.LastRetry
		if j.Attempt != 2 || j.Retries != 1 || strings.ReplaceAll(string(j.Payload), " ", "") != `{"v":2}` {
			t.Errorf("job: got attempt %d, retries %d, payload %s; want 2, 1, {\"v\":2}", j.Attempt, j.Retries, j.Payload)
		}
		if r.Reason != "receiver fixed" || !strings.HasPrefix(r.Actor, "api_key:") || len(r.Actor) <= len("api_key:") ||
			r.FromState != "JOB_STATE_DEAD" || !r.PayloadOverridden || r.BudgetStart != 2 {
			t.Errorf("lastRetry: got %+v; want the reason, the API key as actor, from dead, overridden, budget from 2", r)
		}
		if dl := list(map[string]any{"queue": "dlq"}); len(dl) != 0 {
			t.Errorf("ListDeadLetters(queue dlq) after the retry: got %v, want none", deadIDs(dl))
		}
	})

	t.Run("purged", func(t *testing.T) {
		status, body := s.call(t, "DeadLetterService/PurgeDeadLetters", map[string]any{"ids": []string{gone}}, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(body), `"confirm:`) {
			t.Errorf("purge without confirm: got HTTP %d %s, want 400 naming confirm", status, body)
		}
		waitState(t, s, gone, "JOB_STATE_DEAD", time.Second)
		var out struct{ Purged int }
		status, body = s.call(t, "DeadLetterService/PurgeDeadLetters", map[string]any{"ids": []string{gone}, "confirm": true}, &out)
		if status != http.StatusOK || out.Purged != 1 {
			t.Fatalf("PurgeDeadLetters: HTTP %d %s; want 1 purged", status, body)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			status, body = s.call(t, "JobService/GetJob", map[string]string{"id": gone}, nil)
			if status == http.StatusNotFound || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if status != http.StatusNotFound || !strings.Contains(string(body), "not_found") {
			t.Errorf("GetJob of a purged job: got HTTP %d %s, want 404 not_found", status, body)
		}
	})

	t.Run("RetryJob", func(t *testing.T) {
		// A cancelled job runs again; cancelled after its timer fired, so
		// nothing but the retry can run it.
		runAt := time.Now().Add(time.Second)
		cancelled := enqueue("dlq", "/ok", map[string]any{"runAt": runAt.UTC().Format(time.RFC3339Nano)})
		waitState(t, s, cancelled, "JOB_STATE_SCHEDULED", 10*time.Second)
		if status, body := s.call(t, "JobService/CancelJob", map[string]string{"id": cancelled}, nil); status != http.StatusOK {
			t.Fatalf("CancelJob: HTTP %d %s", status, body)
		}
		time.Sleep(time.Until(runAt) + 2*time.Second)
		waitState(t, s, cancelled, "JOB_STATE_CANCELLED", time.Second)
		var out struct{ Job retriedJobJSON }
		status, body := s.call(t, "JobService/RetryJob", map[string]string{"id": cancelled}, &out)
		if status != http.StatusOK || out.Job.State != "JOB_STATE_READY" || out.Job.LastRetry.FromState != "JOB_STATE_CANCELLED" {
			t.Fatalf("RetryJob of a cancelled job: HTTP %d %s; want it ready again", status, body)
		}
		waitState(t, s, cancelled, "JOB_STATE_SUCCEEDED", 30*time.Second)
		if got := recv.count(cancelled); got != 1 {
			t.Errorf("deliveries of the retried cancelled job: got %d, want 1", got)
		}

		// A succeeded job is refused, naming its state.
		status, body = s.call(t, "JobService/RetryJob", map[string]string{"id": flaky}, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(body), "failed_precondition") || !strings.Contains(string(body), "JOB_STATE_SUCCEEDED") {
			t.Errorf("RetryJob of a succeeded job: got HTTP %d %s, want failed_precondition naming JOB_STATE_SUCCEEDED", status, body)
		}
	})
}

func deadIDs(dls []deadLetterJSON) []string {
	ids := make([]string, len(dls))
	for i, d := range dls {
		ids[i] = d.Job.ID
	}
	return ids
}
