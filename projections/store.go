package projections

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/log/eventlog"
)

// DefaultPrefix starts every key unless StoreConfig.Prefix says otherwise.
const DefaultPrefix = "sluice:"

// StoreConfig configures a Store.
type StoreConfig struct {
	// Prefix starts every key of the read model. Default "sluice:".
	Prefix string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c StoreConfig) WithDefaults() StoreConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

//go:embed fold.lua
var foldSource string

// foldScript folds one event, or advances one checkpoint.
var foldScript = redis.NewScript(foldSource)

// Store is the Redis read model of jobs: Apply folds event records into
// it, the query methods read it. It is safe for concurrent use.
type Store struct {
	rdb  redis.UniversalClient
	cfg  StoreConfig
	keys keys
	// deadScan is the most dead letters a ListDeadLetters page examines:
	// MaxDeadLetterScan, less in tests.
	deadScan int

	mu     sync.Mutex
	epoch  string // token of the read model this store writes to; "" = unknown
	loaded bool   // foldScript is in Redis's script cache
}

// NewStore returns a Store over rdb, which it does not close. rdb must be
// a single Redis server (or a failover client), not a cluster.
func NewStore(rdb redis.UniversalClient, cfg StoreConfig) *Store {
	if rdb == nil {
		panic("projections: NewStore: nil redis client")
	}
	cfg = cfg.WithDefaults()
	return &Store{rdb: rdb, cfg: cfg, keys: keys{prefix: cfg.Prefix}, deadScan: MaxDeadLetterScan}
}

// rebuildingPrefix starts the epoch key's value while Rebuild runs.
const rebuildingPrefix = "rebuilding:"

// epochToken returns the token of the read model, creating one when Redis
// has none (a new or flushed Redis).
func (s *Store) epochToken(ctx context.Context) (string, error) {
	s.mu.Lock()
	tok := s.epoch
	s.mu.Unlock()
	if tok != "" {
		return tok, nil
	}
	key := s.keys.epoch()
	if err := s.rdb.SetNX(ctx, key, eventlog.NewID(), 0).Err(); err != nil {
		return "", fmt.Errorf("create epoch %s: %w", key, err)
	}
	tok, err := s.rdb.Get(ctx, key).Result()
	if err != nil {
		return "", fmt.Errorf("read epoch %s: %w", key, err)
	}
	if strings.HasPrefix(tok, rebuildingPrefix) {
		return "", ErrRebuilding
	}
	s.mu.Lock()
	s.epoch = tok
	s.mu.Unlock()
	return tok, nil
}

// forgetEpoch drops tok after Redis refused it.
func (s *Store) forgetEpoch(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == tok {
		s.epoch = ""
	}
}

// loadScript puts foldScript into Redis's script cache, once, or again
// when force is set (after NOSCRIPT: Redis restarted or was flushed).
func (s *Store) loadScript(ctx context.Context, force bool) error {
	s.mu.Lock()
	loaded := s.loaded && !force
	s.mu.Unlock()
	if loaded {
		return nil
	}
	if err := foldScript.Load(ctx, s.rdb).Err(); err != nil {
		return fmt.Errorf("load fold script: %w", err)
	}
	s.mu.Lock()
	s.loaded = true
	s.mu.Unlock()
	return nil
}

// isNoScript reports whether err says Redis lacks a script.
func isNoScript(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(rerr.Error(), "NOSCRIPT")
}
