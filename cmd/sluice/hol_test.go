package main

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestFailingTargetDoesNotSlowHealthyOnes interleaves 1,000 jobs to a
// target that fails slowly with 100 jobs to a healthy one: the healthy
// jobs' delivery latency stays within 2× of the same traffic without
// failures (the 1,000 jobs going to a target that answers at once).
//
// It measures latency, so it does not run in parallel with the package's
// other tests.
func TestFailingTargetDoesNotSlowHealthyOnes(t *testing.T) {
	healthy := newReceiver(t)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	fine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(fine.Close)
	// 64 slots per partition: the failing target's 250 jobs per partition
	// would take them all without its share.
	s := startSluice(t, "", "dev", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--delivery-concurrency", "64")

	// run enqueues healthyN healthy jobs, with ten jobs to other before
	// each, and returns the healthy jobs' delivery latencies.
	run := func(t *testing.T, queue, other string) []time.Duration {
		const healthyN = 100
		sent := make(map[string]time.Time)
		var acks []time.Duration
		defer func() {
			slices.Sort(acks)
			t.Logf("%s: enqueue ack p50 %s p90 %s", queue, acks[len(acks)/2], acks[len(acks)*9/10])
		}()
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := 0; i < healthyN; i++ {
			for f := 0; f < 10; f++ {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					s.call(t, "JobService/Enqueue", map[string]any{"queue": queue, "payload": f,
						"target": map[string]string{"url": other + "/x"}, "maxAttempts": 2,
						"retryPolicy": map[string]any{"schedule": []string{"1s"}}}, nil)
				}()
			}
			var enq enqueueAnswer
			at := time.Now()
			if status, body := s.call(t, "JobService/Enqueue", map[string]any{"queue": queue, "payload": i,
				"target": map[string]string{"url": healthy.URL + "/ok"}}, &enq); status != 200 {
				t.Fatalf("Enqueue: HTTP %d %s", status, body)
			}
			mu.Lock()
			sent[enq.Job.ID] = at
			acks = append(acks, time.Since(at))
			mu.Unlock()
		}
		wg.Wait()
		var lat []time.Duration
		deadline := time.Now().Add(60 * time.Second)
		for id, at := range sent {
			for len(healthy.arrivals(id)) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			arr := healthy.arrivals(id)
			if len(arr) == 0 {
				t.Fatalf("healthy job %s never delivered", id)
			}
			lat = append(lat, arr[0].Sub(at))
		}
		slices.Sort(lat)
		return lat
	}
	baseline := run(t, "baseline", fine.URL)
	mixed := run(t, "mixed", failing.URL)
	p50b, p90b := baseline[len(baseline)/2], baseline[len(baseline)*9/10]
	p50m, p90m := mixed[len(mixed)/2], mixed[len(mixed)*9/10]
	t.Logf("healthy delivery latency beside 1,000 jobs: succeeding p50 %s p90 %s; failing slowly p50 %s p90 %s", p50b, p90b, p50m, p90m)
	// 2× the baseline, with 10ms of slack for a shared 2-core machine.
	if p50m > 2*p50b+10*time.Millisecond || p90m > 2*p90b+10*time.Millisecond {
		t.Errorf("healthy jobs slowed by failing ones: p50 %s (baseline %s), p90 %s (baseline %s)", p50m, p50b, p90m, p90b)
	}
}
