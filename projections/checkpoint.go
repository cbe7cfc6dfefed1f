package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// checkpoints returns the next offset to read of each partition of topic
// that has a checkpoint. It first reads the epoch again (creating one for
// a new or flushed Redis), so that what it returns belongs to the epoch
// Apply writes to next, and returns ErrRebuilding while Rebuild runs.
func (s *Store) checkpoints(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	s.mu.Lock()
	s.epoch = ""
	s.mu.Unlock()
	if _, err := s.epochToken(ctx); err != nil {
		return nil, err
	}
	if len(partitions) == 0 {
		return nil, nil
	}
	keys := make([]string, len(partitions))
	for i, p := range partitions {
		keys[i] = s.keys.checkpoint(topic, p)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of %s: %w", topic, err)
	}
	offsets := make(map[int32]int64, len(vals))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue // no checkpoint
		}
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("read checkpoint %s: %w", keys[i], err)
		}
		offsets[partitions[i]] = n
	}
	return offsets, nil
}

// Checkpoint returns the next offset of topic's partition to read into the
// read model, and false when the partition has none (reading starts at
// the beginning of the log).
func (s *Store) Checkpoint(ctx context.Context, topic string, partition int32) (int64, bool, error) {
	n, err := s.rdb.Get(ctx, s.keys.checkpoint(topic, partition)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read checkpoint of %s/%d: %w", topic, partition, err)
	}
	return n, true, nil
}
