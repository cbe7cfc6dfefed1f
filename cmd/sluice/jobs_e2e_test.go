package main

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestIdempotentEnqueueRunsOnce(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	recv.setSecret(s.Secret)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = make(map[string]bool)
		created int
	)
	for i := range 16 {
		wg.Go(func() {
			var enq enqueueAnswer
			status, body := s.call(t, "JobService/Enqueue", map[string]any{
				"queue": "orders", "payload": map[string]any{"n": i}, "idempotencyKey": "order-7",
				"target": map[string]string{"url": recv.URL + "/ok"},
			}, &enq)
			if status != http.StatusOK {
				t.Errorf("Enqueue %d: HTTP %d %s", i, status, body)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[enq.Job.ID] = true
			if enq.Created {
				created++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || created != 1 {
		t.Fatalf("16 concurrent enqueues with one key: %d ids, %d created; want 1 and 1", len(ids), created)
	}
	var id string
	for id = range ids {
	}
	waitState(t, s, id, "JOB_STATE_SUCCEEDED", 30*time.Second)
	time.Sleep(time.Second) // room for a duplicate delivery to show up
	if n := recv.count(id); n != 1 {
		t.Fatalf("job %s delivered %d times, want exactly once", id, n)
	}
}

func TestExpiredLeaseIsClaimableAgainWithAHigherAttempt(t *testing.T) {
	t.Parallel()
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	var enq enqueueAnswer
	if status, body := s.call(t, "JobService/Enqueue", map[string]any{
		"queue": "work", "payload": "x", "retryPolicy": map[string]any{"schedule": []string{"0s"}},
	}, &enq); status != http.StatusOK {
		t.Fatalf("Enqueue: HTTP %d %s", status, body)
	}
	type claimed struct {
		Jobs []struct {
			Job        jobJSON `json:"job"`
			LeaseToken string  `json:"leaseToken"`
		} `json:"jobs"`
	}
	claimOne := func(t *testing.T) (jobJSON, string) {
		t.Helper()
		var c claimed
		if status, body := s.call(t, "WorkerService/Claim", map[string]any{
			"queue": "work", "workerId": "crashy", "leaseDuration": "1s", "wait": "20s",
		}, &c); status != http.StatusOK || len(c.Jobs) != 1 {
			t.Fatalf("Claim: HTTP %d %s", status, body)
		}
		return c.Jobs[0].Job, c.Jobs[0].LeaseToken
	}
	first, oldToken := claimOne(t)
	if first.ID != enq.Job.ID || first.Attempt != 1 {
		t.Fatalf("first claim: job %s attempt %d; want %s attempt 1", first.ID, first.Attempt, enq.Job.ID)
	}
	// The worker crashes: no heartbeat, no completion. The lease expires
	// and the job comes round again.
	second, newToken := claimOne(t)
	if second.ID != first.ID || second.Attempt != 2 {
		t.Fatalf("second claim: job %s attempt %d; want %s attempt 2", second.ID, second.Attempt, first.ID)
	}
	if status, body := s.call(t, "WorkerService/Complete", map[string]any{"jobId": first.ID, "leaseToken": oldToken}, nil); status != http.StatusPreconditionFailed && status != http.StatusBadRequest {
		t.Fatalf("Complete with the expired token: HTTP %d %s; want failed_precondition", status, body)
	} else if !jsonCode(body, "failed_precondition") {
		t.Fatalf("Complete with the expired token: %s; want failed_precondition", body)
	}
	if status, body := s.call(t, "WorkerService/Complete", map[string]any{"jobId": first.ID, "leaseToken": newToken}, nil); status != http.StatusOK {
		t.Fatalf("Complete: HTTP %d %s", status, body)
	}
	job := waitState(t, s, first.ID, "JOB_STATE_SUCCEEDED", 10*time.Second)
	if job.Attempt != 2 {
		t.Fatalf("attempt %d, want 2", job.Attempt)
	}
}

func TestPausedQueueHoldsDeliveriesUntilResumed(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	recv.setSecret(s.Secret)
	if status, body := s.call(t, "QueueService/PauseQueue", map[string]any{"name": "held"}, nil); status != http.StatusOK {
		t.Fatalf("PauseQueue: HTTP %d %s", status, body)
	}
	ids := make([]string, 20)
	for i := range ids {
		var enq enqueueAnswer
		if status, body := s.call(t, "JobService/Enqueue", map[string]any{
			"queue": "held", "payload": i, "target": map[string]string{"url": recv.URL + "/ok"},
		}, &enq); status != http.StatusOK {
			t.Fatalf("Enqueue: HTTP %d %s", status, body)
		}
		ids[i] = enq.Job.ID
	}
	time.Sleep(1500 * time.Millisecond)
	for _, id := range ids {
		if n := recv.count(id); n != 0 {
			t.Fatalf("job %s of a paused queue delivered %d times", id, n)
		}
	}
	if status, body := s.call(t, "QueueService/ResumeQueue", map[string]any{"name": "held"}, nil); status != http.StatusOK {
		t.Fatalf("ResumeQueue: HTTP %d %s", status, body)
	}
	for _, id := range ids {
		waitState(t, s, id, "JOB_STATE_SUCCEEDED", 20*time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	for _, id := range ids {
		if n := recv.count(id); n != 1 {
			t.Errorf("job %s delivered %d times after resuming, want 1", id, n)
		}
	}
}

// jsonCode reports whether a Connect JSON error body carries code.
func jsonCode(body []byte, code string) bool {
	var e struct {
		Code string `json:"code"`
	}
	return json.Unmarshal(body, &e) == nil && e.Code == code
}

func TestIdempotentScheduledEnqueueRunsOnce(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	recv.setSecret(s.Secret)
	runAt := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = make(map[string]bool)
	)
	// Every racer that loses still wrote its runAt timer: those timers
	// must not deliver the job again.
	for i := range 16 {
		wg.Go(func() {
			var enq enqueueAnswer
			status, body := s.call(t, "JobService/Enqueue", map[string]any{
				"queue": "later", "payload": i, "idempotencyKey": "remind-9", "runAt": runAt,
				"target": map[string]string{"url": recv.URL + "/ok"},
			}, &enq)
			if status != http.StatusOK {
				t.Errorf("Enqueue %d: HTTP %d %s", i, status, body)
				return
			}
			mu.Lock()
			ids[enq.Job.ID] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("%d ids, want 1", len(ids))
	}
	var id string
	for id = range ids {
	}
	waitState(t, s, id, "JOB_STATE_SUCCEEDED", 30*time.Second)
	time.Sleep(2 * time.Second) // every racer's timer is due by now
	if n := recv.count(id); n != 1 {
		t.Fatalf("scheduled job %s delivered %d times, want once", id, n)
	}
}
