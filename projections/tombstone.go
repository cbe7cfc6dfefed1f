package projections

import "time"

// TombstoneTTL is how long a purged job's tombstone outlives the purge:
// 30 days, long after any late event of the job. The tombstone expires at the
// purge event's time plus TombstoneTTL, not at the time it was folded, so
// a read model rebuilt later expires it at the same moment as the live
// one did.
const TombstoneTTL = 30 * 24 * time.Hour
