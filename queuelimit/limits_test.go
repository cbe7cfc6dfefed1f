package queuelimit

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestTakeRefillsAtTheRate(t *testing.T) {
	var l Limits
	now := time.Unix(1_700_000_000, 0)
	if got := l.Take("t", "q", 10, 100, now); got != 10 {
		t.Fatalf("first take: got %d, want the burst of 10", got)
	}
	if got := l.Take("t", "q", 10, 100, now); got != 0 {
		t.Fatalf("second take at the same instant: got %d, want 0", got)
	}
	if got := l.Take("t", "q", 10, 100, now.Add(500*time.Millisecond)); got != 5 {
		t.Fatalf("after 500ms: got %d, want 5", got)
	}
	if got := l.Take("t", "other", 10, 3, now); got != 3 {
		t.Fatalf("another queue: got %d, want 3", got)
	}
	if got := l.Take("t", "q", 0, 7, now); got != 7 {
		t.Fatalf("no limit: got %d, want 7", got)
	}
}

func TestAcquireHoldsTheLimit(t *testing.T) {
	var l Limits
	var releases []func()
	for i := range 3 {
		release, ok := l.Acquire("t", "q", 3)
		if !ok {
			t.Fatalf("acquire %d refused below the limit", i)
		}
		releases = append(releases, release)
	}
	if _, ok := l.Acquire("t", "q", 3); ok {
		t.Fatal("acquire above the limit allowed")
	}
	releases[0]()
	if _, ok := l.Acquire("t", "q", 3); !ok {
		t.Fatal("acquire after a release refused")
	}
	for range 100 {
		if _, ok := l.Acquire("t", fmt.Sprint("unlimited-", rand.Int()), 0); !ok {
			t.Fatal("no limit refused")
		}
	}
	if n := len(l.queues); n != 1 {
		t.Fatalf("%d queues tracked; queues without a limit must not be", n)
	}
}

func TestAvailableDoesNotSpend(t *testing.T) {
	var l Limits
	now := time.Unix(1_700_000_000, 0)
	if got := l.Available("t", "q", 4, 100, now); got != 4 {
		t.Fatalf("fresh bucket: %d available, want 4", got)
	}
	if got := l.Take("t", "q", 4, 3, now); got != 3 {
		t.Fatalf("take: %d, want 3", got)
	}
	for range 3 {
		if got := l.Available("t", "q", 4, 100, now); got != 1 {
			t.Fatalf("after taking 3 of 4: %d available, want 1", got)
		}
	}
}
