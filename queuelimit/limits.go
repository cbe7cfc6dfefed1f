// Package queuelimit enforces queues' rate and concurrency limits within
// one node: a token bucket per queue for starts per second, and a count
// of the queue's jobs running on the node.
package queuelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits holds the state of every queue's limits on one node. The zero
// value is ready to use; it is safe for concurrent use.
type Limits struct {
	mu     sync.Mutex
	queues map[queueKey]*queueState
}

type queueKey struct{ tenantID, queue string }

type queueState struct {
	bucket  *rate.Limiter
	rate    float64
	running int
}

func (l *Limits) state(tenantID, queue string) *queueState {
	if l.queues == nil {
		l.queues = make(map[queueKey]*queueState)
	}
	k := queueKey{tenantID, queue}
	s, ok := l.queues[k]
	if !ok {
		s = &queueState{}
		l.queues[k] = s
	}
	return s
}

// Take takes up to n starts from a queue's bucket at now, refilled at
// perSecond (burst: one second's worth, at least 1), and returns how many
// it took. perSecond <= 0 means no limit: it returns n.
func (l *Limits) Take(tenantID, queue string, perSecond float64, n int, now time.Time) int {
	if perSecond <= 0 || n <= 0 {
		return n
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state(tenantID, queue)
	if s.bucket == nil || s.rate != perSecond {
		s.bucket = rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond))))
		s.rate = perSecond
	}
	took := 0
	for took < n && s.bucket.AllowN(now, 1) {
		took++
	}
	return took
}

// Available returns how many starts a queue's bucket holds at now, up to
// n, without taking them; perSecond <= 0 means no limit: n.
func (l *Limits) Available(tenantID, queue string, perSecond float64, n int, now time.Time) int {
	if perSecond <= 0 {
		return n
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state(tenantID, queue)
	if s.bucket == nil || s.rate != perSecond {
		return min(n, max(1, int(math.Ceil(perSecond))))
	}
	return min(n, max(0, int(s.bucket.TokensAt(now))))
}

// Acquire counts one more running job of a queue unless limit (> 0) are
// running already, and returns the func that ends it. limit <= 0 means no
// limit, and nothing is counted: queues without limits cost no memory.
func (l *Limits) Acquire(tenantID, queue string, limit int) (release func(), ok bool) {
	if limit <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state(tenantID, queue)
	if s.running >= limit {
		return nil, false
	}
	s.running++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		s.running--
	}, true
}
