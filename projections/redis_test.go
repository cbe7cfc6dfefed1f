package projections_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/projections"
)

// envRedis names the environment variable with a real Redis URL.
const envRedis = "SLUICE_TEST_REDIS_URL"

// backend is a Redis server a test runs against.
type backend struct {
	name string
	rdb  redis.UniversalClient
	mini *miniredis.Miniredis // nil for a real server
}

// runRedis runs fn as parallel subtests against an in-process miniredis
// and against the real Redis from SLUICE_TEST_REDIS_URL.
func runRedis(t *testing.T, fn func(t *testing.T, b *backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		fn(t, newMiniredis(t))
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		fn(t, newRealRedis(t))
	})
}

func newMiniredis(t *testing.T) *backend {
	t.Helper()
	m, err := miniredis.Run()
	if err != nil {
		t.Fatalf("start miniredis: %v", err)
	}
	t.Cleanup(m.Close)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return &backend{name: "miniredis", rdb: rdb, mini: m}
}

func newRealRedis(t *testing.T) *backend {
	t.Helper()
	url := os.Getenv(envRedis)
	if url == "" {
		t.Skipf("REAL REDIS NOT TESTED: %s is unset (the README's test command starts Redis and sets it)", envRedis)
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse %s: %v", envRedis, err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping redis at %s: %v", url, err)
	}
	return &backend{name: "redis", rdb: rdb}
}

var prefixSeq atomic.Int64

// newStore returns a Store with a key prefix of its own, whose keys are
// deleted when the test ends.
func newStore(t *testing.T, b *backend) (*projections.Store, string) {
	t.Helper()
	prefix := fmt.Sprintf("test:%x-%d:", time.Now().UnixNano(), prefixSeq.Add(1))
	t.Cleanup(func() { deletePrefix(t, b, prefix) })
	return projections.NewStore(b.rdb, projections.StoreConfig{Prefix: prefix, Logger: testLogger(t)}), prefix
}

// deletePrefix deletes every key under prefix: a flush of the read model
// that leaves other tests' keys alone.
func deletePrefix(t *testing.T, b *backend, prefix string) {
	t.Helper()
	ctx := context.Background()
	for _, key := range scanKeys(t, b, prefix) {
		if err := b.rdb.Del(ctx, key).Err(); err != nil {
			t.Errorf("delete %s: %v", key, err)
		}
	}
}

// flushPrefix deletes every key under a prefix at once, as FLUSHDB would.
var flushPrefix = redis.NewScript(`
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  redis.call('DEL', key)
end
return 0`)

// flush empties the read model at once, as FLUSHALL would: miniredis,
// which belongs to the test, is flushed for real; in the shared real
// Redis only the test's prefix is.
func flush(t *testing.T, b *backend, prefix string) {
	t.Helper()
	if b.mini != nil {
		b.mini.FlushAll()
		return
	}
	if err := flushPrefix.Run(context.Background(), b.rdb, nil, prefix+"*").Err(); err != nil {
		t.Fatalf("flush %s*: %v", prefix, err)
	}
}

func scanKeys(t *testing.T, b *backend, prefix string) []string {
	t.Helper()
	var keys []string
	iter := b.rdb.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan %s*: %v", prefix, err)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// dump returns every key under prefix (without it) with its content, but
// not the epoch token, which differs between stores.
func dump(t *testing.T, b *backend, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := make(map[string]string)
	for _, key := range scanKeys(t, b, prefix) {
		name := strings.TrimPrefix(key, prefix)
		if name == "epoch" {
			continue
		}
		typ, err := b.rdb.Type(ctx, key).Result()
		if err != nil {
			t.Fatalf("type of %s: %v", key, err)
		}
		var v any
		switch typ {
		case "string":
			v, err = b.rdb.Get(ctx, key).Result()
		case "hash":
			v, err = b.rdb.HGetAll(ctx, key).Result()
		case "zset":
			v, err = b.rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "set":
			var members []string
			members, err = b.rdb.SMembers(ctx, key).Result()
			slices.Sort(members)
			v = members
		default:
			t.Fatalf("key %s has unexpected type %s", key, typ)
		}
		if err != nil {
			t.Fatalf("read %s: %v", key, err)
		}
		out[name] = fmt.Sprint(v)
	}
	return out
}

// testLogger writes warnings and errors to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}
