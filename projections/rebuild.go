package projections

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/log/eventlog"
)

// rebuildLease is how long the epoch key keeps its rebuilding marker after
// the last sign of life of a Rebuild; a Rebuild that died releases the
// read model after it.
const rebuildLease = 30 * time.Second

// unmarkScript deletes the rebuilding marker if it is still the caller's.
var unmarkScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Rebuild empties the read model: it deletes every checkpoint and every
// tenant key under the store's prefix (SCAN and UNLINK in batches), so
// Projectors read the log again from its start. Projectors running
// meanwhile stop writing (their next Apply gets ErrEpochChanged), wait
// until Rebuild returns, and then re-read from the start by themselves.
// Rebuild returns the number of keys it deleted. An interrupted Rebuild
// leaves a partial read model: run it again.
func (s *Store) Rebuild(ctx context.Context) (deleted int64, err error) {
	marker := rebuildingPrefix + eventlog.NewID()
	epoch := s.keys.epoch()
	if err := s.rdb.Set(ctx, epoch, marker, rebuildLease).Err(); err != nil {
		return 0, fmt.Errorf("mark read model as rebuilding: %w", err)
	}
	// Checkpoints go first: should Rebuild die half-way, every partition
	// is read again from its start.
	for _, pattern := range []string{s.keys.prefix + "ckpt:", s.keys.prefix + "t:"} {
		n, err := s.deleteMatching(ctx, globEscape(pattern)+"*", marker)
		deleted += n
		if err != nil {
			return deleted, err
		}
	}
	// Leases fold back from job.claimed and job.lease_extended.
	n, err := s.rdb.Unlink(ctx, s.keys.leases()).Result()
	deleted += n
	if err != nil {
		return deleted, fmt.Errorf("delete leases: %w", err)
	}
	if err := unmarkScript.Run(ctx, s.rdb, []string{epoch}, marker).Err(); err != nil {
		return deleted, fmt.Errorf("end rebuilding mark: %w", err)
	}
	s.cfg.Logger.InfoContext(ctx, "emptied read model", "prefix", s.keys.prefix, "deleted_keys", deleted)
	return deleted, nil
}

// deleteMatching unlinks every key matching pattern, a batch per SCAN
// step, renewing the rebuilding marker's lease as it goes.
func (s *Store) deleteMatching(ctx context.Context, pattern, marker string) (int64, error) {
	var deleted int64
	var cursor uint64
	for {
		keys, next, err := s.rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return deleted, fmt.Errorf("scan %s: %w", pattern, err)
		}
		if len(keys) > 0 {
			n, err := s.rdb.Unlink(ctx, keys...).Result()
			if err != nil {
				return deleted, fmt.Errorf("delete %d keys matching %s: %w", len(keys), pattern, err)
			}
			deleted += n
		}
		if err := s.rdb.Set(ctx, s.keys.epoch(), marker, rebuildLease).Err(); err != nil {
			return deleted, fmt.Errorf("renew rebuilding mark: %w", err)
		}
		if cursor = next; cursor == 0 {
			return deleted, nil
		}
	}
}

// globEscape quotes the glob characters of s for SCAN MATCH.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}
