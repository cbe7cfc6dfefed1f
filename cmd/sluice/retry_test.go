package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRetriesAndDeadLetters(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	recv.setSecret(s.Secret)
	enqueue := func(t *testing.T, req map[string]any) string {
		t.Helper()
		var enq enqueueAnswer
		if status, body := s.call(t, "JobService/Enqueue", req, &enq); status != http.StatusOK {
			t.Fatalf("Enqueue: HTTP %d %s", status, body)
		}
		return enq.Job.ID
	}
	fast := map[string]any{"schedule": []string{"1s"}}

	t.Run("fails twice then succeeds on attempt 3", func(t *testing.T) {
		t.Parallel()
		id := enqueue(t, map[string]any{"queue": "q", "payload": 1, "target": map[string]string{"url": recv.URL + "/fail2"}, "retryPolicy": fast})
		job := waitState(t, s, id, "JOB_STATE_SUCCEEDED", 30*time.Second)
		if job.Attempt != 3 {
			t.Errorf("attempt: got %d, want 3", job.Attempt)
		}
		if got := recv.count(id); got != 3 {
			t.Errorf("deliveries with webhook-id %s: got %d, want 3 (one stable id)", id, got)
		}
		times := recv.arrivals(id)
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < 700*time.Millisecond {
				t.Errorf("retry %d came %s after the previous attempt, want about 1s", i, gap)
			}
		}
	})
	t.Run("410 dead-letters after one attempt", func(t *testing.T) {
		t.Parallel()
		id := enqueue(t, map[string]any{"queue": "q", "payload": 1, "target": map[string]string{"url": recv.URL + "/gone"}})
		job := waitState(t, s, id, "JOB_STATE_DEAD", 30*time.Second)
		if job.Attempt != 1 || !strings.Contains(job.LastError, "410") {
			t.Errorf("got attempt %d, lastError %q; want 1 and HTTP 410", job.Attempt, job.LastError)
		}
		time.Sleep(1500 * time.Millisecond)
		if got := recv.count(id); got != 1 {
			t.Errorf("deliveries: got %d, want 1", got)
		}
	})
	t.Run("always failing dead-letters after maxAttempts", func(t *testing.T) {
		t.Parallel()
		id := enqueue(t, map[string]any{"queue": "q", "payload": 1, "target": map[string]string{"url": recv.URL + "/fail"},
			"maxAttempts": 3, "retryPolicy": fast})
		job := waitState(t, s, id, "JOB_STATE_DEAD", 30*time.Second)
		if job.Attempt != 3 || recv.count(id) != 3 {
			t.Errorf("got attempt %d and %d deliveries; want 3 and 3", job.Attempt, recv.count(id))
		}
	})
	t.Run("runAt delays delivery", func(t *testing.T) {
		t.Parallel()
		due := time.Now().Add(2500 * time.Millisecond)
		var enq enqueueAnswer
		if status, body := s.call(t, "JobService/Enqueue", map[string]any{"queue": "q", "payload": 1,
			"target": map[string]string{"url": recv.URL + "/ok"}, "runAt": due.UTC().Format(time.RFC3339Nano)}, &enq); status != 200 {
			t.Fatalf("Enqueue: HTTP %d %s", status, body)
		}
		if enq.Job.State != "JOB_STATE_SCHEDULED" {
			t.Errorf("state at enqueue: got %s, want JOB_STATE_SCHEDULED", enq.Job.State)
		}
		waitState(t, s, enq.Job.ID, "JOB_STATE_SUCCEEDED", 30*time.Second)
		arr := recv.arrivals(enq.Job.ID)
		if len(arr) != 1 {
			t.Fatalf("deliveries: got %d, want 1", len(arr))
		}
		if late := arr[0].Sub(due); late < -50*time.Millisecond || late > time.Second {
			t.Errorf("delivered %s after runAt, want within [0, 1s]", late)
		}
	})
	t.Run("cancel a scheduled job", func(t *testing.T) {
		t.Parallel()
		var enq enqueueAnswer
		s.call(t, "JobService/Enqueue", map[string]any{"queue": "q", "payload": 1,
			"target": map[string]string{"url": recv.URL + "/ok"}, "runAt": time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)}, &enq)
		waitState(t, s, enq.Job.ID, "JOB_STATE_SCHEDULED", 10*time.Second)
		if status, body := s.call(t, "JobService/CancelJob", map[string]string{"id": enq.Job.ID}, nil); status != 200 {
			t.Fatalf("CancelJob: HTTP %d %s", status, body)
		}
		time.Sleep(4 * time.Second)
		waitState(t, s, enq.Job.ID, "JOB_STATE_CANCELLED", 5*time.Second)
		if got := recv.count(enq.Job.ID); got != 0 {
			t.Errorf("deliveries of a cancelled job: got %d, want 0", got)
		}
		status, body := s.call(t, "JobService/CancelJob", map[string]string{"id": enq.Job.ID}, nil)
		if status != http.StatusBadRequest || !strings.Contains(string(body), "failed_precondition") {
			t.Errorf("second cancel: got HTTP %d %s, want failed_precondition", status, body)
		}
	})
}
