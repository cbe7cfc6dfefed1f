package delivery

import "sync"

// hostLimiter caps the attempts in flight per key (a target's host:port and
// the source partition). A slow or hanging target fills its own share of a
// partition's slots, not all of them: an attempt that finds its share full
// is deferred, and healthy targets' jobs behind it go ahead.
type hostLimiter struct {
	max      int
	mu       sync.Mutex
	inFlight map[string]int
}

func newHostLimiter(max int) *hostLimiter {
	return &hostLimiter{max: max, inFlight: make(map[string]int)}
}

// acquire takes a slot for host, or reports false when it has none free.
func (l *hostLimiter) acquire(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[host] >= l.max {
		return false
	}
	l.inFlight[host]++
	return true
}

func (l *hostLimiter) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[host]--; l.inFlight[host] <= 0 {
		delete(l.inFlight, host)
	}
}
