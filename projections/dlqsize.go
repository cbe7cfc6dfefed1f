package projections

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// DeadLetterCount returns how many dead jobs the tenants in tenantIDs
// have, in all, from their dead-letter indexes: one ZCARD per tenant, in
// one pipeline.
func (s *Store) DeadLetterCount(ctx context.Context, tenantIDs []string) (int64, error) {
	if len(tenantIDs) == 0 {
		return 0, nil
	}
	cmds := make([]*redis.IntCmd, len(tenantIDs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range tenantIDs {
			cmds[i] = p.ZCard(ctx, s.keys.dlq(id, ""))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count dead letters of %d tenants: %w", len(tenantIDs), err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}
