package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/tenancy"
)

// TestTimersSurviveSIGKILL kills the server while scheduled jobs wait in
// the delay lines: after a restart every job runs, and the event log holds
// exactly one job.ready per job.
func TestTimersSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	t.Run("kfake", func(t *testing.T) {
		t.Parallel()
		dataDir, key := t.TempDir(), tenancy.NewKey()
		timersCrash(t, "sluice.", func(t *testing.T) *server {
			return startSluice(t, key, "dev", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--api-key", key)
		})
	})
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		brokers, redisURL := os.Getenv(eventlogtest.EnvBrokers), os.Getenv("SLUICE_TEST_REDIS_URL")
		if brokers == "" || redisURL == "" {
			t.Skipf("REAL KAFKA NOT TESTED: %s and SLUICE_TEST_REDIS_URL must both be set", eventlogtest.EnvBrokers)
		}
		key := tenancy.NewKey()
		prefix := fmt.Sprintf("timers%d.", time.Now().UnixNano())
		timersCrash(t, prefix, func(t *testing.T) *server {
			s := startSluice(t, key, "serve", "--kafka-brokers", brokers, "--redis-url", redisURL,
				"--topic-prefix", prefix, "--partitions", "4", "--replication-factor", "1", "--create-topics",
				"--bootstrap-api-key", key, "--allow-loopback-targets", "--http-addr", "127.0.0.1:0", "--node-id", "timers")
			s.Brokers = brokers
			return s
		})
	})
}

func timersCrash(t *testing.T, prefix string, start crashTarget) {
	const n = 300
	recv := newReceiver(t)
	s := start(t)
	now := time.Now()
	jobs := make([]any, n)
	for i := range jobs {
		runAt := now.Add(2*time.Second + time.Duration(i%50)*100*time.Millisecond)
		jobs[i] = map[string]any{"queue": "timers", "payload": i,
			"target": map[string]string{"url": recv.URL + "/ok"}, "runAt": runAt.UTC().Format(time.RFC3339Nano)}
	}
	var batch struct{ Results []enqueueAnswer }
	if status, body := s.call(t, "JobService/EnqueueBatch", map[string]any{"jobs": jobs}, &batch); status != 200 {
		t.Fatalf("EnqueueBatch: HTTP %d %s", status, body)
	}
	var ids []string
	for _, r := range batch.Results {
		if r.Job.State != "JOB_STATE_SCHEDULED" {
			t.Fatalf("job %s enqueued %s, want JOB_STATE_SCHEDULED", r.Job.ID, r.Job.State)
		}
		ids = append(ids, r.Job.ID)
	}
	time.Sleep(time.Until(now.Add(3500 * time.Millisecond))) // some are due, most wait
	s.kill()
	s2 := start(t)
	for _, id := range ids {
		waitState(t, s2, id, "JOB_STATE_SUCCEEDED", 90*time.Second)
	}
	ready := readyEvents(t, s2.Brokers, eventlog.Topics{Prefix: prefix}.Events())
	for _, id := range ids {
		if got := ready[id]; got != 1 {
			t.Errorf("job %s: %d job.ready events in the log, want exactly 1", id, got)
		}
		if recv.count(id) == 0 {
			t.Errorf("job %s never delivered", id)
		}
	}
}

// readyEvents counts committed job.ready events per job in topic, reading
// every partition to the end it had when called.
func readyEvents(t *testing.T, brokers, topic string) map[string]int {
	t.Helper()
	seeds := kgo.SeedBrokers(strings.Split(brokers, ",")...)
	admCl, err := kgo.NewClient(seeds)
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A broker just restarted from its data dir can report a partition
	// empty for a moment; the jobs of the callers span every partition,
	// so wait until none reads empty.
	var ends kadm.ListedOffsets
	for {
		ends, err = kadm.NewClient(admCl).ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		empty := false
		ends.Each(func(o kadm.ListedOffset) { empty = empty || o.Offset == 0 })
		if !empty || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	remaining := make(map[int32]int64)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(seeds, kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	counts := make(map[string]int)
	for len(remaining) > 0 && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				if eventlog.RecordType(r) == eventlog.TypeJobReady {
					counts[string(r.Key)]++
				}
			}
			// Control records are never returned: the high watermark says
			// how far the partition was read.
			if end, ok := remaining[p.Partition]; ok && p.HighWatermark >= end && len(p.Records) > 0 && p.Records[len(p.Records)-1].Offset+2 >= end {
				delete(remaining, p.Partition)
			}
		})
	}
	if len(remaining) > 0 {
		t.Fatalf("read %s: partitions %v not read to their end", topic, remaining)
	}
	ends.Each(func(o kadm.ListedOffset) { t.Logf("%s partition %d: read to offset %d", topic, o.Partition, o.Offset) })
	return counts
}
