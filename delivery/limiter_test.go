package delivery

import (
	"sync"
	"testing"
	"time"
)

func TestHostLimiter(t *testing.T) {
	t.Parallel()
	l := newHostLimiter(2, 20*time.Millisecond)
	// An unknown target counts as slow: its attempts are deferred at once.
	x, y := l.acquire("h/0"), l.acquire("h/0")
	start := time.Now()
	if l.acquire("h/0") != nil || time.Since(start) > 5*time.Millisecond {
		t.Errorf("an unknown target's attempt waited %s or got a slot, want an immediate deferral", time.Since(start))
	}
	// One quick answer makes it quick.
	l.release("h/0", x, time.Millisecond)
	a, b := l.acquire("h/0"), y
	if a == nil {
		t.Fatal("acquire after a release failed")
	}
	start = time.Now()
	if l.acquire("h/0") != nil {
		t.Fatal("a third acquire beyond the share succeeded")
	}
	if waited := time.Since(start); waited < 15*time.Millisecond {
		t.Errorf("a quick target's attempt waited %s, want about the 20ms wait", waited)
	}
	if l.acquire("h/1") == nil {
		t.Error("another partition's share was full")
	}
	// Slow answers make it slow again: its attempts are deferred at once.
	l.release("h/0", a, time.Second)
	c := l.acquire("h/0")
	start = time.Now()
	if c == nil || l.acquire("h/0") != nil || time.Since(start) > 5*time.Millisecond {
		t.Errorf("a slow target's attempt waited %s, want none", time.Since(start))
	}
	l.release("h/0", b, time.Millisecond)
	l.release("h/0", c, time.Millisecond)
}

// Acquires and releases racing over one key never lose or double a slot.
func TestHostLimiterConcurrent(t *testing.T) {
	t.Parallel()
	l := newHostLimiter(4, time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	inFlight, peak := 0, 0
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				s := l.acquire("k")
				if s == nil {
					continue
				}
				mu.Lock()
				inFlight++
				peak = max(peak, inFlight)
				mu.Unlock()
				mu.Lock()
				inFlight--
				mu.Unlock()
				l.release("k", s, 0)
			}
		}()
	}
	wg.Wait()
	if peak > 4 {
		t.Errorf("peak in flight %d, want at most 4", peak)
	}
}
