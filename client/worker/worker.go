// Package worker runs Sluice jobs in this process: it claims jobs of a
// queue from the server's WorkerService, runs a Handler on each with
// bounded concurrency, keeps their leases alive with heartbeats at half
// the lease, and reports each outcome (completions batched).
//
//	err := worker.Run(ctx, c, "emails", worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (any, error) {
//		var msg Email
//		if err := job.Decode(&msg); err != nil {
//			return nil, worker.Permanent(err)
//		}
//		return nil, send(ctx, msg)
//	}))
//
// Cancelling Run's context drains the worker: it stops claiming, lets the
// running handlers finish (see Config.DrainTimeout), reports their
// outcomes, then returns nil. A claim cut short by the cancel may have been
// granted by the server without reaching the worker; such a lease expires
// and counts as a failed attempt, like a worker crash.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/client"
)

// Worker claims and runs the jobs of one queue.
type Worker struct {
	c       *client.Client
	cfg     Config
	h       Handler
	log     *slog.Logger
	running sync.Mutex
}

// New returns a Worker for cfg (defaults applied) running h.
func New(c *client.Client, cfg Config, h Handler) (*Worker, error) {
	if c == nil || h == nil {
		return nil, errors.New("worker: New needs a client and a handler")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Worker{c: c, cfg: cfg, h: h, log: cfg.Logger.With("queue", cfg.Queue, "worker_id", cfg.WorkerID)}, nil
}

// Run works queue with the default Config until ctx is cancelled.
func Run(ctx context.Context, c *client.Client, queue string, h Handler) error {
	w, err := New(c, Config{Queue: queue}, h)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// Run claims and runs jobs until ctx is cancelled, then drains and
// returns nil. It returns an error, after draining, when the server
// refuses claims for good (a bad API key, a bad queue name, a server
// without a WorkerService). One Run at a time per Worker.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.TryLock() {
		return errors.New("worker: Run is already running")
	}
	defer w.running.Unlock()

	// Handlers outlive ctx during the drain; jobs cancels them.
	jobs, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(nil)
	done := newCompleter(w.c, w.cfg.CompleteBatch, w.log)
	var handlers sync.WaitGroup
	slots := make(chan struct{}, w.cfg.Concurrency)
	start := func(cj *client.ClaimedJob) {
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			defer func() { <-slots }()
			w.work(jobs, cj, done)
		}()
	}

	w.log.InfoContext(ctx, "worker started", "concurrency", w.cfg.Concurrency, "stream", w.cfg.Stream)
	var err error
	if w.cfg.Stream {
		err = w.streamLoop(ctx, slots, start)
	} else {
		err = w.claimLoop(ctx, slots, start)
	}

	// Drain: no more claims; wait for the handlers, then the completions.
	w.log.InfoContext(ctx, "worker draining")
	w.waitHandlers(&handlers, cancelJobs)
	done.close()
	w.log.InfoContext(ctx, "worker stopped")
	return err
}

// waitHandlers waits for every handler, cancelling their contexts once
// DrainTimeout passes (when set).
func (w *Worker) waitHandlers(handlers *sync.WaitGroup, cancel context.CancelCauseFunc) {
	finished := make(chan struct{})
	go func() { handlers.Wait(); close(finished) }()
	if w.cfg.DrainTimeout > 0 {
		t := time.NewTimer(w.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-finished:
			return
		case <-t.C:
			w.log.Warn("drain timeout passed; cancelling running handlers", "drain_timeout", w.cfg.DrainTimeout)
			cancel(errors.New("worker: drain timeout"))
		}
	}
	<-finished
}

// claimLoop polls Claim for as many jobs as there are free slots.
func (w *Worker) claimLoop(ctx context.Context, slots chan struct{}, start func(*client.ClaimedJob)) error {
	var backoff backoff
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		n := 1 + takeFree(slots)
		claimed, err := w.c.Claim(ctx, w.cfg.Queue, client.ClaimOptions{
			WorkerID: w.cfg.WorkerID, Max: n, LeaseDuration: w.cfg.LeaseDuration, Wait: w.cfg.ClaimWait,
		})
		for range n - len(claimed) {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if fatal(err) {
				w.log.ErrorContext(ctx, "claim refused; worker stops", "error", err)
				return fmt.Errorf("worker: %w", err)
			}
			w.log.WarnContext(ctx, "claim failed; retrying", "error", err)
			if !backoff.wait(ctx) {
				return nil
			}
			continue
		}
		backoff.reset()
		for _, cj := range claimed {
			start(cj)
		}
	}
}

// streamLoop keeps a ClaimStream open, reopening it after errors.
func (w *Worker) streamLoop(ctx context.Context, slots chan struct{}, start func(*client.ClaimedJob)) error {
	var backoff backoff
	for ctx.Err() == nil {
		err := w.stream(ctx, slots, start, &backoff)
		switch {
		case ctx.Err() != nil:
			return nil
		case fatal(err):
			w.log.ErrorContext(ctx, "claim stream refused; worker stops", "error", err)
			return fmt.Errorf("worker: %w", err)
		}
		w.log.WarnContext(ctx, "claim stream ended; reopening", "error", err)
		if !backoff.wait(ctx) {
			return nil
		}
	}
	return nil
}

func (w *Worker) stream(ctx context.Context, slots chan struct{}, start func(*client.ClaimedJob), b *backoff) error {
	s, err := w.c.OpenClaimStream(ctx, w.cfg.Queue, client.StreamOptions{
		WorkerID: w.cfg.WorkerID, MaxInFlight: w.cfg.Concurrency, LeaseDuration: w.cfg.LeaseDuration,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		claimed, err := s.Next()
		if err != nil {
			return err
		}
		b.reset()
		for _, cj := range claimed {
			// The server keeps at most Concurrency leases outstanding;
			// a slot frees as soon as a handler returns.
			slots <- struct{}{}
			start(cj)
		}
	}
}

// takeFree takes every slot free right now and returns how many.
func takeFree(slots chan struct{}) int {
	n := 0
	for {
		select {
		case slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
}

// fatal reports whether a claim error will not go away by retrying.
func fatal(err error) bool {
	switch client.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument,
		connect.CodeUnimplemented, connect.CodeNotFound:
		return true
	}
	return false
}

// backoff waits 100ms doubling to 5s between failed attempts.
type backoff struct{ next time.Duration }

func (b *backoff) reset() { b.next = 0 }

func (b *backoff) wait(ctx context.Context) bool {
	b.next = min(max(2*b.next, 100*time.Millisecond), 5*time.Second)
	t := time.NewTimer(b.next)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// work runs one claimed job and reports its outcome.
func (w *Worker) work(parent context.Context, cj *client.ClaimedJob, done *completer) {
	job, err := newJob(cj)
	log := w.log.With("job_id", cj.GetJob().GetId(), "attempt", cj.GetJob().GetAttempt())
	if err != nil {
		w.fail(log, cj.GetJob().GetId(), cj.GetLeaseToken(), Permanent(err))
		return
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	hb := w.heartbeat(ctx, job, cancel, log)
	result, err := w.call(ctx, job)
	hb.stop()
	if errors.Is(context.Cause(ctx), ErrLeaseLost) {
		log.Warn("lease lost while the handler ran; outcome dropped", "error", err)
		return
	}
	if err != nil {
		w.fail(log, job.ID, job.leaseToken, err)
		return
	}
	done.add(client.Completion{JobID: job.ID, LeaseToken: job.leaseToken, Result: result})
}

// call runs the handler, turning a panic into an error.
func (w *Worker) call(ctx context.Context, job *Job) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("handler panicked", "job_id", job.ID, "panic", r, "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return w.h.Work(ctx, job)
}

// fail reports a failed attempt, retrying transient errors a few times.
func (w *Worker) fail(log *slog.Logger, jobID, token string, cause error) {
	retryable := !IsPermanent(cause)
	msg := cause.Error()
	var pe *PermanentError
	if errors.As(cause, &pe) {
		msg = pe.Err.Error()
	}
	err := retryCall(func(ctx context.Context) error {
		_, err := w.c.Fail(ctx, jobID, token, msg, retryable)
		return err
	})
	if err != nil {
		log.Error("report failed attempt", "error", err)
		return
	}
	log.Info("attempt failed", "error", msg, "retryable", retryable)
}

// retryCall runs call up to 4 times while it fails with unavailable or a
// deadline, each try bounded to 10s.
func retryCall(call func(ctx context.Context) error) error {
	var err error
	delay := 100 * time.Millisecond
	for try := 0; try < 4; try++ {
		if try > 0 {
			time.Sleep(delay)
			delay *= 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = call(ctx)
		cancel()
		if c := client.CodeOf(err); err == nil || (c != connect.CodeUnavailable && c != connect.CodeDeadlineExceeded) {
			return err
		}
	}
	return err
}
