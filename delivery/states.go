package delivery

import (
	"context"
	"sync"
	"time"
)

// stateBatcher gathers the state lookups of concurrent deliveries into one
// StateReader call per tenant every window, so checking for cancellation
// costs one Redis round trip per batch instead of one per job.
type stateBatcher struct {
	states StateReader
	window time.Duration
	max    int

	reqs chan stateReq
	quit chan struct{}
	done chan struct{}
}

type stateReq struct {
	tenantID string
	jobID    string
	reply    chan stateReply
}

type stateReply struct {
	run JobRun
	err error
}

func newStateBatcher(states StateReader, window time.Duration, max int) *stateBatcher {
	b := &stateBatcher{
		states: states, window: window, max: max,
		reqs: make(chan stateReq, max),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go b.run()
	return b
}

// state returns where one job stands.
func (b *stateBatcher) state(ctx context.Context, tenantID, jobID string) (JobRun, error) {
	req := stateReq{tenantID: tenantID, jobID: jobID, reply: make(chan stateReply, 1)}
	select {
	case b.reqs <- req:
	case <-ctx.Done():
		return JobRun{}, ctx.Err()
	case <-b.quit:
		return JobRun{}, context.Canceled
	}
	select {
	case r := <-req.reply:
		return r.run, r.err
	case <-ctx.Done():
		return JobRun{}, ctx.Err()
	}
}

func (b *stateBatcher) run() {
	defer close(b.done)
	for {
		var batch []stateReq
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.quit:
			return
		}
		timer := time.NewTimer(b.window)
	gather:
		for len(batch) < b.max {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		b.lookup(batch)
	}
}

// lookup answers a batch with one call per tenant, concurrently.
func (b *stateBatcher) lookup(batch []stateReq) {
	byTenant := make(map[string][]stateReq)
	for _, r := range batch {
		byTenant[r.tenantID] = append(byTenant[r.tenantID], r)
	}
	var wg sync.WaitGroup
	for tenant, reqs := range byTenant {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]string, len(reqs))
			for i, r := range reqs {
				ids[i] = r.jobID
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			runs, err := b.states.JobRuns(ctx, tenant, ids)
			for _, r := range reqs {
				r.reply <- stateReply{run: runs[r.jobID], err: err}
			}
		}()
	}
	wg.Wait()
}

func (b *stateBatcher) close() {
	close(b.quit)
	<-b.done
}
