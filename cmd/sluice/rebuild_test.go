package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/tenancy"
)

// privateRedis starts a redis-server of the test's own on a free loopback
// port, so the test may FLUSHALL it, and returns its address. It skips
// loudly when there is no redis-server binary.
func privateRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("REAL REDIS NOT TESTED: no redis-server binary on PATH (deploy/testbed.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(addr.Port),
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: addr.String()})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("private redis-server did not answer within 10s")
		}
	}
	return addr.String()
}

// TestFlushAllUnderLoadAndRebuild runs a mixed workload against a server
// whose Redis is flushed (FLUSHALL) half-way: every acknowledged job must
// come back in its right state. Then `sluice projections rebuild` folds
// the log into a second, empty Redis database, which must equal the
// repaired live read model key by key: types, values and TTLs.
func TestFlushAllUnderLoadAndRebuild(t *testing.T) {
	t.Parallel()
	brokers := os.Getenv(eventlogtest.EnvBrokers)
	if brokers == "" {
		t.Skipf("REAL KAFKA NOT TESTED: %s is unset (the README's test command sets it)", eventlogtest.EnvBrokers)
	}
	redisAddr := privateRedis(t)
	liveURL, rebuiltURL := "redis://"+redisAddr+"/0", "redis://"+redisAddr+"/1"
	key := tenancy.NewKey()
	prefix := fmt.Sprintf("flush%d.", time.Now().UnixNano())
	s := startSluice(t, key, "serve", "--kafka-brokers", brokers, "--redis-url", liveURL,
		"--topic-prefix", prefix, "--partitions", "4", "--replication-factor", "1", "--create-topics",
		"--bootstrap-api-key", key, "--allow-loopback-targets", "--http-addr", "127.0.0.1:0", "--node-id", "flush")
	recv := newReceiver(t)
	recv.setSecret(s.Secret)
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })

	// The workload: each kind of job, from several clients at once, with
	// a FLUSHALL after half the enqueues were acknowledged.
	type kind struct {
		path  string
		extra map[string]any
		want  string
	}
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	fast := map[string]any{"schedule": []string{"1s"}}
	kinds := []kind{
		{"/ok", nil, "JOB_STATE_SUCCEEDED"},
		{"/fail2", map[string]any{"retryPolicy": fast}, "JOB_STATE_SUCCEEDED"},
		{"/gone", nil, "JOB_STATE_DEAD"},
		{"/ok", map[string]any{"runAt": later}, "JOB_STATE_SCHEDULED"},
		{"/ok", map[string]any{"runAt": later}, "JOB_STATE_CANCELLED"},
	}
	const perClient, clients = 40, 5
	var (
		mu    sync.Mutex
		want  = map[string]string{}
		acked int
		wg    sync.WaitGroup
	)
	flushed := make(chan struct{})
	for c := range clients {
		wg.Go(func() {
			for i := range perClient {
				k := kinds[(c+i)%len(kinds)]
				req := map[string]any{"queue": fmt.Sprintf("q%d", i%3), "payload": map[string]int{"i": i}, "target": map[string]string{"url": recv.URL + k.path}}
				maps.Copy(req, k.extra)
				var enq enqueueAnswer
				if status, body := s.call(t, "JobService/Enqueue", req, &enq); status != http.StatusOK {
					t.Errorf("Enqueue: HTTP %d %s", status, body)
					return
				}
				if k.want == "JOB_STATE_CANCELLED" && !cancelJob(t, s, enq.Job.ID) {
					return
				}
				mu.Lock()
				want[enq.Job.ID] = k.want
				acked++
				if acked == perClient*clients/2 {
					if err := rdb.FlushAll(context.Background()).Err(); err != nil {
						t.Errorf("FLUSHALL: %v", err)
					}
					close(flushed)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	<-flushed

	// Every acknowledged job reads its state again.
	for _, id := range slices.Sorted(maps.Keys(want)) {
		waitState(t, s, id, want[id], 60*time.Second)
	}

	// Rebuild into database 1 and compare with the repaired live one.
	out, err := exec.Command(binary, "projections", "rebuild", "--redis-url", rebuiltURL,
		"--kafka-brokers", brokers, "--topic-prefix", prefix).CombinedOutput()
	if err != nil {
		t.Fatalf("sluice projections rebuild: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "folded") {
		t.Errorf("sluice projections rebuild printed %q; want the number of events folded", out)
	}
	live := redis.NewClient(&redis.Options{Addr: redisAddr, DB: 0})
	rebuilt := redis.NewClient(&redis.Options{Addr: redisAddr, DB: 1})
	t.Cleanup(func() { live.Close(); rebuilt.Close() })
	// The live read model has folded everything once its checkpoints
	// match those the rebuild reached.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		l, r := readModel(t, live), readModel(t, rebuilt)
		diffs := diffReadModels(l, r)
		if len(diffs) == 0 {
			if len(l) < len(want) {
				t.Fatalf("live read model has %d keys for %d jobs", len(l), len(want))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rebuilt read model differs from the live one (%d keys):\n%s", len(l), strings.Join(diffs[:min(len(diffs), 30)], "\n"))
		}
	}
}

// cancelJob cancels a job once the read model shows it (CancelJob reads
// it there first), and reports whether it did.
func cancelJob(t *testing.T, s *server, id string) bool {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		status, body := s.call(t, "JobService/CancelJob", map[string]string{"id": id}, nil)
		if status == http.StatusOK {
			return true
		}
		if status != http.StatusNotFound || time.Now().After(deadline) {
			t.Errorf("CancelJob %s: HTTP %d %s", id, status, body)
			return false
		}
	}
}

// keyDump is a key's type, content and time to live.
type keyDump struct {
	typ, content string
	ttl          time.Duration // -1 for none
}

// readModel reads every key of the read model but its epoch token, which
// differs between any two read models.
func readModel(t *testing.T, rdb *redis.Client) map[string]keyDump {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "sluice:*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	out := make(map[string]keyDump, len(keys))
	for _, k := range keys {
		if k == "sluice:epoch" {
			continue
		}
		typ := rdb.Type(ctx, k).Val()
		var v any
		switch typ {
		case "string":
			v = rdb.Get(ctx, k).Val()
		case "hash":
			v = rdb.HGetAll(ctx, k).Val()
		case "zset":
			v = rdb.ZRangeWithScores(ctx, k, 0, -1).Val()
		case "set":
			m := rdb.SMembers(ctx, k).Val()
			slices.Sort(m)
			v = m
		case "list":
			v = rdb.LRange(ctx, k, 0, -1).Val()
		case "none":
			continue // expired or deleted since KEYS
		default:
			t.Fatalf("key %s: unexpected type %s", k, typ)
		}
		ttl := rdb.PTTL(ctx, k).Val()
		if ttl < 0 {
			ttl = -1
		}
		out[k] = keyDump{typ: typ, content: fmt.Sprint(v), ttl: ttl}
	}
	return out
}

// diffReadModels lists every difference between two read models; TTLs
// may differ by the time between the two reads.
func diffReadModels(live, rebuilt map[string]keyDump) []string {
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(live)) {
		l, r := live[k], rebuilt[k]
		switch _, ok := rebuilt[k]; {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: only live: %s %s", k, l.typ, l.content))
		case l.typ != r.typ || l.content != r.content:
			diffs = append(diffs, fmt.Sprintf("%s: live %s %s; rebuilt %s %s", k, l.typ, l.content, r.typ, r.content))
		case (l.ttl < 0) != (r.ttl < 0) || (l.ttl-r.ttl).Abs() > 5*time.Second:
			diffs = append(diffs, fmt.Sprintf("%s: live TTL %v; rebuilt %v", k, l.ttl, r.ttl))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rebuilt)) {
		if _, ok := live[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only rebuilt: %s %s", k, rebuilt[k].typ, rebuilt[k].content))
		}
	}
	return diffs
}
