package main

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/tenancy"
)

// crashTarget starts a server and can start it again on the same data.
type crashTarget func(t *testing.T) *server

func TestCrashSafety(t *testing.T) {
	t.Parallel()
	t.Run("kfake", func(t *testing.T) {
		t.Parallel()
		dataDir := t.TempDir()
		key := tenancy.NewKey()
		crashAndRecover(t, func(t *testing.T) *server {
			return startSluice(t, key, "dev", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--api-key", key)
		})
	})
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		brokers, redisURL := os.Getenv(eventlogtest.EnvBrokers), os.Getenv("SLUICE_TEST_REDIS_URL")
		if brokers == "" || redisURL == "" {
			t.Skipf("REAL KAFKA NOT TESTED: %s and SLUICE_TEST_REDIS_URL must both be set (the README's test command sets them)", eventlogtest.EnvBrokers)
		}
		key := tenancy.NewKey()
		prefix := fmt.Sprintf("crash%d.", time.Now().UnixNano())
		crashAndRecover(t, func(t *testing.T) *server {
			return startSluice(t, key, "serve", "--kafka-brokers", brokers, "--redis-url", redisURL,
				"--topic-prefix", prefix, "--partitions", "4", "--replication-factor", "1", "--create-topics",
				"--bootstrap-api-key", key, "--allow-loopback-targets", "--http-addr", "127.0.0.1:0", "--node-id", "crash")
		})
	})
}

// crashAndRecover enqueues jobs from many clients, SIGKILLs the server
// part way, restarts it, and checks every acknowledged job was delivered
// and reads SUCCEEDED.
func crashAndRecover(t *testing.T, start crashTarget) {
	const total, clients, killAfter = 3000, 16, 2000
	recv := newReceiver(t)
	s := start(t)
	recv.setSecret(s.Secret)

	var (
		mu    sync.Mutex
		acked []string
		sent  atomic.Int64
		wg    sync.WaitGroup
	)
	killed := make(chan struct{})
	var killOnce sync.Once
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Add(1) <= total {
				var enq enqueueAnswer
				status, _ := s.call(t, "JobService/Enqueue", map[string]any{
					"queue": "crash", "payload": map[string]any{"n": sent.Load()},
					"target": map[string]string{"url": recv.URL + "/hook"},
				}, &enq)
				if status != http.StatusOK {
					continue // not acknowledged: no promise was made
				}
				mu.Lock()
				acked = append(acked, enq.Job.ID)
				n := len(acked)
				mu.Unlock()
				if n == killAfter {
					killOnce.Do(func() { s.kill(); close(killed) })
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("only %d enqueues were acknowledged; the kill never happened", len(acked))
	}
	t.Logf("acknowledged %d of %d enqueues before and around the SIGKILL", len(acked), total)

	s2 := start(t)
	recv.setSecret(s2.Secret)
	deadline := time.Now().Add(3 * time.Minute)
	for _, id := range acked {
		for recv.count(id) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if recv.count(id) == 0 {
			t.Fatalf("acknowledged job %s was never delivered", id)
		}
	}
	for _, id := range acked {
		waitState(t, s2, id, "JOB_STATE_SUCCEEDED", time.Until(deadline))
	}
	if recv.badSigned != 0 {
		t.Errorf("deliveries with a bad signature: %d", recv.badSigned)
	}
	redelivered := 0
	for _, id := range acked {
		if recv.count(id) > 1 {
			redelivered++
		}
	}
	t.Logf("all %d acknowledged jobs delivered and SUCCEEDED; %d delivered more than once (at-least-once after a crash)", len(acked), redelivered)
}
