package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// epochCheckInterval is how often a Projector looks for a reset of the
// read model while no records arrive: a FLUSHALL on an idle system is
// repaired within about this long, not only when the next event comes.
const epochCheckInterval = time.Second

// watchEpoch checks the read model's epoch every epochCheckInterval until
// ctx ends, and calls reset with ErrEpochChanged once it finds the read
// model flushed or rebuilt. While Redis cannot answer it keeps checking:
// Apply's retries report the outage.
func (p *Projector) watchEpoch(ctx context.Context, reset context.CancelCauseFunc) {
	t := time.NewTicker(epochCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := p.store.epochChanged(ctx)
		if err != nil || !changed {
			continue
		}
		p.cfg.Logger.WarnContext(ctx, "read model was flushed or rebuilt; folding the log again", "group", p.cfg.Group)
		reset(ErrEpochChanged)
		return
	}
}

// epochChanged reports whether the read model's epoch is no longer the
// one the store writes to: the key is gone (a flush) or holds another
// token (a rebuild). A store that has not written yet has no epoch to
// lose.
func (s *Store) epochChanged(ctx context.Context) (bool, error) {
	s.mu.Lock()
	tok := s.epoch
	s.mu.Unlock()
	if tok == "" {
		return false, nil
	}
	cur, err := s.rdb.Get(ctx, s.keys.epoch()).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read epoch: %w", err)
	}
	return cur != tok, nil
}
