package delivery

import (
	"context"
	"sync"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
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
	state sluicev1.JobState
	err   error
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

// state returns the current state of one job.
func (b *stateBatcher) state(ctx context.Context, tenantID, jobID string) (sluicev1.JobState, error) {
	req := stateReq{tenantID: tenantID, jobID: jobID, reply: make(chan stateReply, 1)}
	select {
	case b.reqs <- req:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-b.quit:
		return 0, context.Canceled
	}
	select {
	case r := <-req.reply:
		return r.state, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
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
			states, err := b.states.JobStates(ctx, tenant, ids)
			for _, r := range reqs {
				r.reply <- stateReply{state: states[r.jobID], err: err}
			}
		}()
	}
	wg.Wait()
}

func (b *stateBatcher) close() {
	close(b.quit)
	<-b.done
}
