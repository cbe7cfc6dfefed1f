package eventlog

import (
	"testing"
	"time"
)

func TestRetryBackoffBounds(t *testing.T) {
	t.Parallel()
	for fails := 0; fails < 30; fails++ {
		want := min(5*time.Millisecond<<min(fails, 10), 2*time.Second)
		for i := 0; i < 100; i++ {
			if got := retryBackoff(fails); got < want/2 || got > want {
				t.Fatalf("fails %d: backoff %s outside [%s, %s]", fails, got, want/2, want)
			}
		}
	}
}
