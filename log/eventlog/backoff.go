package eventlog

import (
	"math/rand/v2"
	"time"
)

// retryBackoff replaces franz-go's default retry backoff (250ms to 5s) for
// Sluice's clients. After a transaction ends, the broker may answer the
// next transaction's first produce with CONCURRENT_TRANSACTIONS while it
// writes the previous markers; that is retried with this backoff, so a
// 250ms floor would stall every busy transactional pipeline.
func retryBackoff(fails int) time.Duration {
	const floor, ceiling = 5 * time.Millisecond, 2 * time.Second
	d := floor << min(fails, 10)
	d = min(d, ceiling)
	return d/2 + rand.N(d/2+1) // jitter: [d/2, d]
}
