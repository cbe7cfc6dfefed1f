package eventlog

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// partition is the worker of one assigned partition: it takes fetched
// records in order and runs up to MaxInFlight handlers at once.
type partition struct {
	r  *Runner
	tp topicPartition

	win    *window // guarded by r.mu
	paused bool    // guarded by r.mu

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	queue    backlog
	wake     chan struct{}
	draining bool

	sem      chan struct{}
	handlers sync.WaitGroup
	done     chan struct{}
}

func newPartition(r *Runner, tp topicPartition) *partition {
	ctx, cancel := context.WithCancel(r.workCtx)
	p := &partition{
		r:      r,
		tp:     tp,
		win:    newWindow(),
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		sem:    make(chan struct{}, r.cfg.MaxInFlight),
		done:   make(chan struct{}),
	}
	go p.run()
	return p
}

func (p *partition) enqueue(recs []*kgo.Record) {
	p.mu.Lock()
	for _, rec := range recs {
		p.queue.push(rec, p.r.cfg.Priority)
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run starts handlers for queued records as slots free up: the highest
// priority class first, each class in offset order.
func (p *partition) run() {
	defer close(p.done)
	for {
		select {
		case p.sem <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		p.mu.Lock()
		rec := p.queue.pop()
		draining := p.draining
		p.mu.Unlock()
		if rec != nil {
			p.handlers.Add(1)
			go p.handle(rec)
			continue
		}
		<-p.sem
		if draining {
			return
		}
		select {
		case <-p.wake:
		case <-p.ctx.Done():
			return
		}
	}
}

// handle runs the handler until it succeeds or the partition stops.
func (p *partition) handle(rec *kgo.Record) {
	defer p.handlers.Done()
	defer func() { <-p.sem }()
	backoff := 100 * time.Millisecond
	for {
		outs, err := p.r.cfg.Handler(p.ctx, rec)
		if err == nil {
			p.r.finished(p, rec, outs)
			return
		}
		if p.ctx.Err() != nil {
			return
		}
		p.r.cfg.Logger.WarnContext(p.ctx, "handle record; retrying",
			"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset,
			"group", p.r.cfg.Group, "backoff", backoff, "error", err)
		select {
		case <-time.After(backoff):
		case <-p.ctx.Done():
			return
		}
		backoff = min(2*backoff, p.r.cfg.MaxBackoff)
	}
}

// drain lets queued and in-flight records finish, then returns.
func (p *partition) drain() {
	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
	p.handlers.Wait()
}

// stop cancels the partition's work and waits for its handlers to return.
func (p *partition) stop() {
	p.cancel()
	<-p.done
	p.handlers.Wait()
}
