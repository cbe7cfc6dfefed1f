package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/projections"
)

// runProjectionsRebuild empties the Redis read model and folds the events
// topic into it again, up to the end of the log as it stood when the fold
// began. Projections roles running meanwhile pause while it empties the
// read model, then re-read from the checkpoints it writes. With
// --empty-only it only empties, and the running projections roles refold
// the log by themselves.
func runProjectionsRebuild(ctx context.Context, args []string) error {
	fs := newFlagSet("projections rebuild")
	redisURL := fs.String("redis-url", "redis://127.0.0.1:6379/0", "Redis holding the projections")
	redisPrefix := fs.String("redis-prefix", projections.DefaultPrefix, "prefix of every Redis key of the read model")
	kafka := addKafkaFlags(fs)
	emptyOnly := fs.Bool("empty-only", false, "only empty the read model; running projections roles fold the log again")
	logs := addLogFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	logger, err := logs.logger()
	if err != nil {
		return err
	}
	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		return fmt.Errorf("--redis-url: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	store := projections.NewStore(rdb, projections.StoreConfig{Prefix: *redisPrefix, Logger: logger})
	deleted, err := store.Rebuild(ctx)
	if err != nil {
		return fmt.Errorf("rebuild projections: %w", err)
	}
	if *emptyOnly {
		fmt.Printf("deleted %d keys; running projections roles rebuild from the start of the log\n", deleted)
		return nil
	}
	topic := kafka.topics().Events()
	res, err := store.CatchUp(ctx, projections.CatchUpConfig{Brokers: kafka.brokerList(), Topic: topic})
	if err != nil {
		return fmt.Errorf("rebuild projections from %s: %w", topic, err)
	}
	fmt.Printf("deleted %d keys; folded %d events from %d partitions of %s\n", deleted, res.Records, res.Partitions, topic)
	return nil
}
