package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/projections"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/tenancy"
)

// env is what the Sluice phases share.
type env struct {
	proc    *sluiceProc
	client  sluicev1connect.JobServiceClient
	workers sluicev1connect.WorkerServiceClient
	recv    *receiver
	store   *projections.Store
}

func newEnv(proc *sluiceProc, key string, recv *receiver) *env {
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	auth := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+key)
			return next(ctx, req)
		}
	})
	opt, err := redis.ParseURL(*redisURL)
	check(err)
	return &env{
		proc:    proc,
		client:  sluicev1connect.NewJobServiceClient(httpc, proc.url, connect.WithInterceptors(auth)),
		workers: sluicev1connect.NewWorkerServiceClient(httpc, proc.url, connect.WithInterceptors(auth)),
		recv:    recv,
		store:   projections.NewStore(redis.NewClient(opt), projections.StoreConfig{}),
	}
}

// warmUp runs jobs through until consumer groups have joined and
// connections are open, so phases measure the steady state.
func (e *env) warmUp(ctx context.Context) {
	const n = 2000
	rec := newRecorder(n)
	e.recv.cur.Store(rec)
	for from := 0; from < n; from += 200 {
		req := &sluicev1.EnqueueBatchRequest{}
		for i := from; i < from+200; i++ {
			req.Jobs = append(req.Jobs, e.job("warmup", i))
		}
		_, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req))
		check(err)
	}
	if !rec.wait(2 * time.Minute) {
		check(fmt.Errorf("warm-up: %d of %d delivered", rec.received.Load(), n))
	}
	time.Sleep(time.Second)
}

// job is the request for job seq of a phase on queue.
func (e *env) job(queue string, seq int) *sluicev1.EnqueueRequest {
	payload, _ := structpb.NewValue(map[string]any{
		"seq": seq, "sent": time.Now().UnixNano(), "pad": padding(*payload - 60),
	})
	return &sluicev1.EnqueueRequest{
		Queue:   queue,
		Payload: payload,
		Target:  &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: e.recv.url}},
	}
}

var padOnce sync.Once
var padStr string

func padding(n int) string {
	padOnce.Do(func() {
		b := make([]byte, max(n, 0))
		for i := range b {
			b[i] = 'a' + byte(i%26)
		}
		padStr = string(b)
	})
	return padStr
}

// finish waits for a phase's jobs, all enqueued by now, to be delivered
// and to read SUCCEEDED, and returns how long each took from start.
func (e *env) finish(ctx context.Context, phase, queue string, rec *recorder, start time.Time) (acked, delivered, succeeded time.Duration) {
	n := len(rec.lat)
	acked = time.Since(start)
	ok := rec.wait(5 * time.Minute)
	delivered = time.Since(start)
	doneAt, err := e.waitSucceeded(ctx, queue, n, 5*time.Minute)
	succeeded = doneAt.Sub(start)
	logf("%s: %d jobs acked in %s, delivered in %s (all=%v, dups %d), SUCCEEDED in %s (%v)",
		phase, n, acked, delivered, ok, rec.dups.Load(), succeeded, err)
	return acked, delivered, succeeded
}

// waitSucceeded polls Redis until n jobs of queue read SUCCEEDED.
func (e *env) waitSucceeded(ctx context.Context, queue string, n int, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		counts, err := e.store.QueueCounts(ctx, e.proc.tenant, queue)
		if err == nil && counts[sluicev1.JobState_JOB_STATE_SUCCEEDED] >= int64(n) {
			return time.Now(), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("%d jobs of %s SUCCEEDED: %w", n, queue, errTimeout)
}

// sluicePhases runs the throughput and latency phases on one server.
func sluicePhases(ctx context.Context, want map[string]bool) []row {
	key := tenancy.NewKey()
	prefix := fmt.Sprintf("bench%d.", time.Now().UnixNano())
	var extra []string
	if *cpuProfile != "" {
		extra = append(extra, "--debug-addr", "127.0.0.1:6061")
	}
	proc := startSluice(prefix, "api,delivery,projections,tiers", key, extra...)
	defer proc.stop()
	recv := startReceiver()
	e := newEnv(proc, key, recv)
	e.warmUp(ctx)
	var rows []row
	peak := &rssSampler{proc: proc}
	peak.start()
	if want["batch"] {
		stopProfile := profile(*cpuProfile, "http://127.0.0.1:6061")
		rows = append(rows, e.batchPhase(ctx))
		stopProfile()
	}
	if want["single"] {
		rows = append(rows, e.singlePhase(ctx))
	}
	if want["latency"] {
		rows = append(rows, e.latencyPhase(ctx)...)
	}
	if want["retry"] {
		rows = append(rows, e.retryPhase(ctx))
	}
	if want["timers"] {
		rows = append(rows, e.timersPhase(ctx))
	}
	if want["workers"] {
		stopProfile := func() {}
		if !want["batch"] {
			stopProfile = profile(*cpuProfile, "http://127.0.0.1:6061")
		}
		rows = append(rows, e.workersPhase(ctx))
		stopProfile()
	}
	if want["priority"] {
		rows = append(rows, e.priorityPhase(ctx)...)
	}
	rows = append(rows, row{name: "sluice RSS, peak during the phases above", extra: fmt.Sprintf("%.0f MiB", peak.stop())})
	return rows
}

func (e *env) batchPhase(ctx context.Context) row {
	queue := "batch"
	n := *batchN
	rec := newRecorder(n)
	e.recv.cur.Store(rec)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				from := int(next.Add(int64(*batchSize))) - *batchSize
				if from >= n {
					return
				}
				req := &sluicev1.EnqueueBatchRequest{}
				for i := from; i < min(from+*batchSize, n); i++ {
					req.Jobs = append(req.Jobs, e.job(queue, i))
				}
				if _, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req)); err != nil {
					failed.Add(int64(len(req.Jobs)))
					logf("EnqueueBatch: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	acked, delivered, succeeded := e.finish(ctx, "batch", queue, rec, start)
	logf("batch: %d enqueues failed", failed.Load())
	return row{
		name: "sluice EnqueueBatch -> HTTP delivered -> SUCCEEDED", rate: float64(n) / succeeded.Seconds(),
		extra: fmt.Sprintf("%d jobs, batches of %d; enqueue %.0f/s, delivered %.0f/s", n, *batchSize, float64(n)/acked.Seconds(), float64(n)/delivered.Seconds()),
	}
}

func (e *env) singlePhase(ctx context.Context) row {
	queue := "single"
	n := *singleN
	rec := newRecorder(n)
	e.recv.cur.Store(rec)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if _, err := e.client.Enqueue(ctx, connect.NewRequest(e.job(queue, i))); err != nil {
					logf("Enqueue: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	acked, delivered, succeeded := e.finish(ctx, "single", queue, rec, start)
	return row{
		name: "sluice Enqueue -> HTTP delivered -> SUCCEEDED", rate: float64(n) / succeeded.Seconds(),
		extra: fmt.Sprintf("%d jobs, %d clients; enqueue %.0f/s, delivered %.0f/s", n, *clients, float64(n)/acked.Seconds(), float64(n)/delivered.Seconds()),
	}
}

// latencyPhase enqueues at a steady rate (open loop) and measures the ack
// and enqueue-to-delivery latencies; the first second is warm-up.
func (e *env) latencyPhase(ctx context.Context) []row {
	queue := "latency"
	n := int(latDur.Seconds() * *rate)
	warm := int(*rate)
	rec := newRecorder(n)
	e.recv.cur.Store(rec)
	acks := make([]int64, n)
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	late := 0
	start := time.Now()
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		} else if d < -5*time.Millisecond {
			late++
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			if _, err := e.client.Enqueue(ctx, connect.NewRequest(e.job(queue, i))); err != nil {
				acks[i] = -1
				logf("Enqueue: %v", err)
				return
			}
			acks[i] = time.Since(t0).Nanoseconds()
		}(i)
	}
	wg.Wait()
	offered := float64(n) / time.Since(start).Seconds()
	ok := rec.wait(time.Minute)
	if !ok {
		logf("latency: %d of %d delivered after a minute", rec.received.Load(), n)
	}
	ackP50, ackP99 := percentiles(acks[warm:])
	delP50, delP99 := rec.percentiles(warm)
	logf("latency: offered %.0f/s (%d sends >5ms late), delivered all=%v", offered, late, ok)
	note := fmt.Sprintf("open loop at %.0f/s for %s, first second dropped", *rate, *latDur)
	return []row{
		{name: "sluice enqueue ack latency", rate: offered, p50: ackP50, p99: ackP99, extra: note},
		{name: "sluice enqueue -> delivery latency", rate: offered, p50: delP50, p99: delP99, extra: note},
	}
}

// retryPhase is the batch phase with every tenth job failing its first
// attempt (503) and retried after 1s.
func (e *env) retryPhase(ctx context.Context) row {
	queue := "retry"
	n := *batchN
	rec := newRecorder(n)
	e.recv.cur.Store(rec)
	e.recv.failFirst.Store(true)
	defer e.recv.failFirst.Store(false)
	start := time.Now()
	for from := 0; from < n; from += *batchSize {
		req := &sluicev1.EnqueueBatchRequest{}
		for i := from; i < min(from+*batchSize, n); i++ {
			j := e.job(queue, i)
			j.RetryPolicy = &sluicev1.RetryPolicy{Schedule: []string{"1s"}}
			req.Jobs = append(req.Jobs, j)
		}
		_, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req))
		check(err)
	}
	ok := rec.wait(5 * time.Minute)
	delivered := time.Since(start)
	doneAt, err := e.waitSucceeded(ctx, queue, n, 5*time.Minute)
	succeeded := doneAt.Sub(start)
	logf("retry: %d jobs (10%% failing once) delivered in %s (all=%v), SUCCEEDED in %s (%v)", n, delivered, ok, succeeded, err)
	return row{
		name: "sluice EnqueueBatch, 10% fail once -> SUCCEEDED", rate: float64(n) / succeeded.Seconds(),
		extra: fmt.Sprintf("%d jobs; failed attempts retried after 1s (the wait is in the time)", n),
	}
}

// timersPhase schedules jobs with runAt spread over 1-30s while a batch
// load runs, and measures how late each ran against its runAt.
func (e *env) timersPhase(ctx context.Context) row {
	const n = 2000
	rec := newRecorder(n)
	e.recv.cur.Store(rec)
	now := time.Now()
	delays := make([]time.Duration, n)
	for from := 0; from < n; from += 200 {
		req := &sluicev1.EnqueueBatchRequest{}
		for i := from; i < from+200; i++ {
			delays[i] = time.Second + time.Duration(i)*29*time.Second/n
			due := now.Add(delays[i])
			j := e.job("timers", i)
			// The receiver records arrival minus "sent": make it the due time.
			j.Payload.GetStructValue().Fields["sent"] = structpb.NewNumberValue(float64(due.UnixNano()))
			j.RunAt = timestamppb.New(due)
			req.Jobs = append(req.Jobs, j)
		}
		_, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req))
		check(err)
	}
	// Load beside the timers: about 5,000 plain jobs/s for 20s.
	for seq, stop := n, time.Now().Add(20*time.Second); time.Now().Before(stop); seq += 500 {
		req := &sluicev1.EnqueueBatchRequest{}
		for i := seq; i < seq+500; i++ {
			req.Jobs = append(req.Jobs, e.job("timers-load", i))
		}
		_, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req))
		check(err)
		time.Sleep(100 * time.Millisecond)
	}
	ok := rec.wait(2 * time.Minute)
	within, early := 0, 0
	for i, late := range rec.lat {
		switch l := time.Duration(late); {
		case late == -1:
		case l < -50*time.Millisecond:
			early++
		case l <= max(time.Second, delays[i]/20):
			within++
		}
	}
	p50, p99 := rec.percentiles(0)
	logf("timers: %d scheduled over 1-30s beside ~5,000 jobs/s of load; all ran=%v; %d within max(1s, 5%%), %d early", n, ok, within, early)
	return row{name: "runAt precision under load (lateness)", p50: p50, p99: p99,
		extra: fmt.Sprintf("%d jobs due over 1-30s beside ~5k jobs/s; %d within max(1s, 5%% of the delay), %d early", n, within, early)}
}

// backlogPhase queues jobs with no delivery role running, then starts a
// delivery-only node and watches its memory while it drains the backlog.
func backlogPhase(ctx context.Context) []row {
	key := tenancy.NewKey()
	prefix := fmt.Sprintf("backlog%d.", time.Now().UnixNano())
	api := startSluice(prefix, "api,projections", key)
	defer api.stop()
	recv := startReceiver()
	e := newEnv(api, key, recv)
	n := *backlogN
	rec := newRecorder(n)
	recv.cur.Store(rec)
	for from := 0; from < n; from += *batchSize {
		req := &sluicev1.EnqueueBatchRequest{}
		for i := from; i < min(from+*batchSize, n); i++ {
			req.Jobs = append(req.Jobs, e.job("backlog", i))
		}
		_, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req))
		check(err)
	}
	logf("backlog: %d jobs queued; api node RSS %.0f MiB", n, api.rssMiB())
	start := time.Now()
	del := startSluice(prefix, "delivery,tiers", key)
	defer del.stop()
	peak := &rssSampler{proc: del}
	peak.start()
	ok := rec.wait(10 * time.Minute)
	drain := time.Since(start)
	p := peak.stop()
	logf("backlog: delivery node drained %d in %s (all=%v), peak RSS %.0f MiB", n, drain, ok, p)
	return []row{
		{name: fmt.Sprintf("delivery node draining a %dk backlog", n/1000), rate: float64(n) / drain.Seconds(),
			extra: fmt.Sprintf("peak RSS %.0f MiB (delivery role only)", p)},
	}
}

// rssSampler records a process's peak RSS.
type rssSampler struct {
	proc *sluiceProc
	peak float64
	quit chan struct{}
	done chan struct{}
}

func (s *rssSampler) start() {
	s.quit, s.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.peak = max(s.peak, s.proc.rssMiB())
			select {
			case <-t.C:
			case <-s.quit:
				return
			}
		}
	}()
}

func (s *rssSampler) stop() float64 {
	close(s.quit)
	<-s.done
	return s.peak
}

// profile fetches a CPU profile of the server into path while the phase
// runs; the returned func waits for it.
func profile(path, base string) func() {
	if path == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(base + "/debug/pprof/profile?seconds=6")
		if err != nil {
			logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		check(err)
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}
