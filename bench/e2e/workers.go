package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// workersPhase is the peers' "processed/s": n no-op jobs enqueued first,
// then workers claim and complete them in batches until every job is
// done, timed from the first claim to the last completion acknowledged
// (and, separately, to the read model showing all SUCCEEDED).
func (e *env) workersPhase(ctx context.Context) row {
	queue := "workers"
	n := *workersN
	e.enqueueWorkerJobs(ctx, queue, n, func(int) sluicev1.Priority { return 0 })
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range *workerProcs {
		wg.Go(func() {
			id := fmt.Sprintf("bench-%d", w)
			for done.Load() < int64(n) {
				res, err := e.workers.Claim(ctx, connect.NewRequest(&sluicev1.ClaimRequest{
					Queue: queue, WorkerId: id, Max: int32(*workerBatch),
					LeaseDuration: durationpb.New(time.Minute), Wait: durationpb.New(time.Second),
				}))
				if err != nil {
					logf("Claim: %v", err)
					continue
				}
				if len(res.Msg.Jobs) == 0 {
					continue
				}
				items := make([]*sluicev1.CompleteRequest, len(res.Msg.Jobs))
				for i, j := range res.Msg.Jobs {
					items[i] = &sluicev1.CompleteRequest{JobId: j.Job.Id, LeaseToken: j.LeaseToken}
				}
				cres, err := e.workers.CompleteBatch(ctx, connect.NewRequest(&sluicev1.CompleteBatchRequest{Items: items}))
				if err != nil {
					logf("CompleteBatch: %v", err)
					continue
				}
				for _, r := range cres.Msg.Results {
					if r.Error == "" {
						done.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	completed := time.Since(start)
	doneAt, err := e.waitSucceeded(ctx, queue, n, 5*time.Minute)
	succeeded := doneAt.Sub(start)
	logf("workers: %d jobs completed in %s, SUCCEEDED in %s (%v)", n, completed, succeeded, err)
	return row{
		name: "sluice workers: Claim + CompleteBatch (no-op)", rate: float64(n) / completed.Seconds(),
		extra: fmt.Sprintf("%d pre-enqueued jobs, %d workers, batches of %d; all SUCCEEDED in the read model %.0f/s",
			n, *workerProcs, *workerBatch, float64(n)/succeeded.Seconds()),
	}
}

// enqueueWorkerJobs enqueues n jobs without a target, in batches of 500.
func (e *env) enqueueWorkerJobs(ctx context.Context, queue string, n int, prio func(i int) sluicev1.Priority) {
	for from := 0; from < n; from += 500 {
		req := &sluicev1.EnqueueBatchRequest{}
		for i := from; i < min(from+500, n); i++ {
			j := e.job(queue, i)
			j.Target = nil
			j.Priority = prio(i)
			req.Jobs = append(req.Jobs, j)
		}
		_, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req))
		check(err)
	}
	_, err := e.waitReady(ctx, queue, n)
	check(err)
}

// waitReady polls until n jobs of queue read READY.
func (e *env) waitReady(ctx context.Context, queue string, n int) (time.Time, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		counts, err := e.store.QueueCounts(ctx, e.proc.tenant, queue)
		if err == nil && counts[sluicev1.JobState_JOB_STATE_READY] >= int64(n) {
			return time.Now(), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("%d jobs of %s READY: %w", n, queue, errTimeout)
}

// priorityPhase measures that higher classes go first under backlog, for
// workers and for HTTP delivery: a backlog of low-priority jobs, then a
// few high-priority ones; the rank at which each class is served (claims)
// and each class's enqueue-to-delivery latency (delivery).
func (e *env) priorityPhase(ctx context.Context) []row {
	const lows, highs = 10_000, 500
	// Claims: the backlog is in the read model before any claim.
	queue := "prio-claims"
	e.enqueueWorkerJobs(ctx, queue, lows+highs, func(i int) sluicev1.Priority {
		if i >= lows {
			return sluicev1.Priority_PRIORITY_HIGH
		}
		return sluicev1.Priority_PRIORITY_LOW
	})
	var highRanks []int
	rank := 0
	for rank < lows+highs {
		res, err := e.workers.Claim(ctx, connect.NewRequest(&sluicev1.ClaimRequest{
			Queue: queue, WorkerId: "prio", Max: 500, LeaseDuration: durationpb.New(time.Minute),
		}))
		check(err)
		if len(res.Msg.Jobs) == 0 {
			break
		}
		items := make([]*sluicev1.CompleteRequest, len(res.Msg.Jobs))
		for i, j := range res.Msg.Jobs {
			if j.Job.Priority == sluicev1.Priority_PRIORITY_HIGH {
				highRanks = append(highRanks, rank)
			}
			rank++
			items[i] = &sluicev1.CompleteRequest{JobId: j.Job.Id, LeaseToken: j.LeaseToken}
		}
		_, err = e.workers.CompleteBatch(ctx, connect.NewRequest(&sluicev1.CompleteBatchRequest{Items: items}))
		check(err)
	}
	last := -1
	if len(highRanks) > 0 {
		last = slices.Max(highRanks)
	}
	claims := row{
		name:  "sluice priority: claims under backlog",
		extra: fmt.Sprintf("%d low enqueued before %d high: all %d high claimed within the first %d claims", lows, highs, len(highRanks), last+1),
	}

	// Delivery: a burst of low jobs, then high ones while the low backlog
	// drains.
	queue = "prio-delivery"
	rec := newRecorder(lows + highs)
	e.recv.cur.Store(rec)
	send := func(from, to int, p sluicev1.Priority) {
		for b := from; b < to; b += 500 {
			req := &sluicev1.EnqueueBatchRequest{}
			for i := b; i < min(b+500, to); i++ {
				j := e.job(queue, i)
				j.Priority = p
				req.Jobs = append(req.Jobs, j)
			}
			_, err := e.client.EnqueueBatch(ctx, connect.NewRequest(req))
			check(err)
		}
	}
	start := time.Now()
	send(0, lows, sluicev1.Priority_PRIORITY_LOW)
	send(lows, lows+highs, sluicev1.Priority_PRIORITY_HIGH)
	e.finish(ctx, "priority", queue, rec, start)
	lowLat, highLat := pct(rec.lat[:lows], 0.5), pct(rec.lat[lows:], 0.5)
	delivery := row{
		name: "sluice priority: delivery under backlog", p50: highLat, p99: pct(rec.lat[lows:], 0.99),
		extra: fmt.Sprintf("high-priority p50/p99 shown; the %d low jobs enqueued just before: p50 %.1fms", lows, float64(lowLat)/1e6),
	}
	return []row{claims, delivery}
}

// pct is the p-th quantile of latencies in nanoseconds (0 = missing).
func pct(lat []int64, p float64) time.Duration {
	var xs []int64
	for _, v := range lat {
		if v > 0 {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return time.Duration(xs[min(len(xs)-1, int(p*float64(len(xs))))])
}
