package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/client/worker"
	"github.com/sluicehq/sluice/internal/devtest"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := worker.Config{Concurrency: 2000, LeaseDuration: time.Second, HeartbeatInterval: 2 * time.Second, ClaimWait: time.Minute}.WithDefaults().Validate()
	for _, field := range []string{"Config.Queue", "Config.Concurrency", "Config.HeartbeatInterval", "Config.ClaimWait"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate: got %v, want it to name %s", err, field)
		}
	}
	cfg := worker.Config{Queue: "q", LeaseDuration: 10 * time.Second}.WithDefaults()
	if cfg.HeartbeatInterval != 5*time.Second || cfg.Concurrency != 10 || cfg.WorkerID == "" {
		t.Errorf("WithDefaults: got heartbeat %s, concurrency %d, id %q; want 5s (half the lease), 10, a worker id",
			cfg.HeartbeatInterval, cfg.Concurrency, cfg.WorkerID)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate of defaults: %v", err)
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("bad payload")
	err := fmt.Errorf("job 1: %w", worker.Permanent(base))
	if !worker.IsPermanent(err) || !errors.Is(err, base) {
		t.Errorf("IsPermanent(%v) = false or the cause is lost, want true and errors.Is the cause", err)
	}
	if worker.Permanent(nil) != nil || worker.IsPermanent(base) {
		t.Error("Permanent(nil) is not nil, or a plain error reads as permanent")
	}
}

// env is a sluice dev server with a client.
type env struct {
	srv *devtest.Server
	c   *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := devtest.Start(t)
	c, err := client.New(s.URL, client.WithAPIKey(s.Key))
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: s, c: c}
}

func (e *env) enqueue(t *testing.T, queue string, payload any, opts ...client.EnqueueOption) string {
	t.Helper()
	res, err := e.c.Enqueue(context.Background(), queue, payload, opts...)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return res.Job.GetId()
}

// wait polls until the job is in state want.
func (e *env) wait(t *testing.T, id string, want client.JobState, within time.Duration) *client.Job {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		j, err := e.c.GetJob(context.Background(), id)
		if err == nil && j.GetState() == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: got state %v (%v), want %v within %s", id, j.GetState(), err, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs w until the test ends (or stop is called) and returns stop,
// which cancels Run and returns its error.
func start(t *testing.T, e *env, cfg worker.Config, h worker.Handler) (stop func() error) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if cfg.ClaimWait == 0 {
		cfg.ClaimWait = time.Second
	}
	w, err := worker.New(e.c, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return within 30s of the cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestWorkerEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			queue := fmt.Sprintf("sdk-work-%v", stream)
			var ids []string
			for i := range 40 {
				ids = append(ids, e.enqueue(t, queue, map[string]int{"n": i}))
			}
			var running, peak atomic.Int32
			start(t, e, worker.Config{Queue: queue, Concurrency: 4, Stream: stream}, worker.HandlerFunc(
				func(ctx context.Context, job *worker.Job) (any, error) {
					n := running.Add(1)
					defer running.Add(-1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					var in struct{ N int }
					if err := job.Decode(&in); err != nil {
						return nil, worker.Permanent(err)
					}
					time.Sleep(5 * time.Millisecond)
					return map[string]int{"double": 2 * in.N}, nil
				}))
			for i, id := range ids {
				j := e.wait(t, id, client.JobStateSucceeded, 30*time.Second)
				var out struct{ Double int }
				if err := client.DecodeValue(j.GetResult(), &out); err != nil || out.Double != 2*i || j.GetAttempt() != 1 {
					t.Errorf("job %d: got result %+v (%v), attempt %d; want double %d on attempt 1", i, out, err, j.GetAttempt(), 2*i)
				}
			}
			if p := peak.Load(); p > 4 || p < 2 {
				t.Errorf("handlers at once: got peak %d, want 2-4 (Concurrency 4)", p)
			}
		})
	}
}

func TestWorkerFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const queue = "sdk-fail"
	retried := e.enqueue(t, queue, "flaky", client.WithMaxAttempts(3), client.WithRetrySchedule(time.Second))
	permanent := e.enqueue(t, queue, "permanent", client.WithMaxAttempts(5))
	panics := e.enqueue(t, queue, "panic", client.WithMaxAttempts(1))
	var flakyRuns atomic.Int32
	start(t, e, worker.Config{Queue: queue, Concurrency: 3}, worker.HandlerFunc(
		func(ctx context.Context, job *worker.Job) (any, error) {
			var kind string
			_ = job.Decode(&kind)
			switch kind {
			case "flaky":
				if flakyRuns.Add(1) == 1 {
					return nil, errors.New("downstream busy")
				}
				return "ok", nil
			case "permanent":
				return nil, worker.Permanent(errors.New("malformed order"))
			case "panic":
				panic("nil map")
			}
			return nil, nil
		}))

	if j := e.wait(t, retried, client.JobStateSucceeded, 30*time.Second); j.GetAttempt() != 2 {
		t.Errorf("a job failing once: got attempt %d, want success on attempt 2", j.GetAttempt())
	}
	if j := e.wait(t, permanent, client.JobStateDead, 30*time.Second); j.GetAttempt() != 1 || !strings.Contains(j.GetLastError(), "malformed order") {
		t.Errorf("a permanent error: got attempt %d, last error %q; want dead after attempt 1 with the error", j.GetAttempt(), j.GetLastError())
	}
	if j := e.wait(t, panics, client.JobStateDead, 30*time.Second); !strings.Contains(j.GetLastError(), "panic: nil map") {
		t.Errorf("a panicking handler: got last error %q, want it to name the panic", j.GetLastError())
	}
}

func TestWorkerHeartbeatsKeepTheLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "sdk-slow", nil, client.WithMaxAttempts(1))
	start(t, e, worker.Config{Queue: "sdk-slow", LeaseDuration: 2 * time.Second}, worker.HandlerFunc(
		func(ctx context.Context, job *worker.Job) (any, error) {
			select {
			case <-time.After(5 * time.Second): // 2.5 leases
				return "done", nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}))
	if j := e.wait(t, id, client.JobStateSucceeded, 30*time.Second); j.GetAttempt() != 1 {
		t.Errorf("a job running 2.5 leases: got attempt %d, want success on attempt 1", j.GetAttempt())
	}
}

func TestWorkerDrainsOnCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const queue = "sdk-drain"
	first := e.enqueue(t, queue, nil)
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stop := start(t, e, worker.Config{Queue: queue, Concurrency: 2}, worker.HandlerFunc(
		func(ctx context.Context, job *worker.Job) (any, error) {
			once.Do(func() { close(started) })
			<-release
			return "finished", ctx.Err()
		}))
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while a handler was still running", err)
	case <-time.After(500 * time.Millisecond):
	}
	second := e.enqueue(t, queue, nil)
	close(release)
	if err := <-stopped; err != nil {
		t.Errorf("Run after a drain: got %v, want nil", err)
	}
	e.wait(t, first, client.JobStateSucceeded, 10*time.Second)
	time.Sleep(time.Second)
	if j, err := e.c.GetJob(context.Background(), second); err != nil || j.GetState() != client.JobStateReady {
		t.Errorf("a job enqueued during the drain: got %v (%v), want it left ready", j.GetState(), err)
	}
}

func TestWorkerStopsOnRefusedClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bad, err := client.New(e.srv.URL, client.WithAPIKey("sk_wrong"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(bad, worker.Config{Queue: "q", Logger: slog.New(slog.DiscardHandler)}, worker.HandlerFunc(
		func(context.Context, *worker.Job) (any, error) { return nil, nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Run(ctx); client.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("Run with a wrong key: got %v, want unauthenticated", err)
	}
}
