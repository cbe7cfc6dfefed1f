package delivery

import (
	"sync"
	"time"
)

// hostLimiter caps the attempts in flight per key (a target's host:port and
// the source partition). A slow or hanging target fills its own share of a
// partition's slots, not all of them: an attempt that finds its share full
// is deferred, so healthy targets' jobs behind it go ahead. A target that
// answers quickly frees slots quickly: there the attempt waits up to the
// limiter's wait for one rather than being deferred.
type hostLimiter struct {
	max  int
	wait time.Duration

	mu    sync.Mutex
	slots map[string]*hostSlots
}

type hostSlots struct {
	sem     chan struct{}
	waiting int           // attempts waiting for a slot; guarded by the limiter's mu
	latency time.Duration // moving average of the target's recent attempts
}

func newHostLimiter(max int, wait time.Duration) *hostLimiter {
	return &hostLimiter{max: max, wait: wait, slots: make(map[string]*hostSlots)}
}

// acquire takes a slot for key and returns it for release; it returns
// nil when the share is full and the target is too slow to free one within
// the limiter's wait.
func (l *hostLimiter) acquire(key string) *hostSlots {
	l.mu.Lock()
	h := l.slots[key]
	if h == nil {
		// Unknown targets count as slow until an attempt comes back
		// quicker: a target failing slowly must not make its first
		// attempts wait on slots healthy targets need.
		h = &hostSlots{sem: make(chan struct{}, l.max), latency: l.wait}
		l.slots[key] = h
	}
	select {
	case h.sem <- struct{}{}:
		l.mu.Unlock()
		return h
	default:
	}
	if h.latency >= l.wait {
		l.mu.Unlock()
		return nil
	}
	h.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		h.waiting--
		l.mu.Unlock()
	}()
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case h.sem <- struct{}{}:
		return h
	case <-t.C:
		return nil
	}
}

// release frees key's slot and folds the attempt's latency into the
// target's average.
func (l *hostLimiter) release(key string, h *hostSlots, latency time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	<-h.sem
	h.latency += (latency - h.latency) / 8
	if len(h.sem) == 0 && h.waiting == 0 && l.slots[key] == h {
		delete(l.slots, key) // idle: the target starts over as unknown
	}
}
