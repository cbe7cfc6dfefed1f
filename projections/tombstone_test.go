package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/projections"
)

// TestTombstoneExpiresAfterThePurge checks that a purged job's tombstone
// expires TombstoneTTL after the purge event, not after the fold: a read
// model rebuilt days later keeps it exactly as long as the live one.
func TestTombstoneExpiresAfterThePurge(t *testing.T) {
	t.Parallel()
	runRedis(t, func(t *testing.T, b *backend) {
		store, prefix := newStore(t, b)
		l := &partitionLog{partition: 0}
		// Purged a day ago (the fold happens now).
		purgedAt := time.Now().Add(-24 * time.Hour)
		spec := deadSpec("emails", urlTarget("https://a.example.com/hook"), purgedAt.Add(-time.Hour))
		mustApply(t, store, l.records(t, deadHistory("acme", "job-1", spec, purgedAt.Add(-time.Minute), 500, "HTTP 500", "exhausted")...)...)
		mustApply(t, store, l.records(t, purged("acme", "job-1", purgedAt))...)
		ttl, err := b.rdb.PTTL(context.Background(), prefix+"t:acme:job:job-1").Result()
		if err != nil {
			t.Fatalf("PTTL: %v", err)
		}
		want := time.Until(purgedAt.Add(projections.TombstoneTTL))
		if (ttl - want).Abs() > ttlTolerance {
			t.Errorf("tombstone TTL: got %v, want %v (30 days after the purge)", ttl, want)
		}
	})
}
