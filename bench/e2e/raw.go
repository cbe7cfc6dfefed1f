package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// rawFranz is the ceiling: franz-go producing (acks=all, idempotent) and
// consuming 512-byte records on the same broker, no Sluice in between.
func rawFranz(ctx context.Context) []row {
	topic := fmt.Sprintf("bench-raw-%d", time.Now().UnixNano())
	seeds := kgo.SeedBrokers(splitBrokers()...)
	admCl, err := kgo.NewClient(seeds)
	check(err)
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	_, err = adm.CreateTopic(ctx, int32(*partitions), 1, nil, topic)
	check(err)
	defer adm.DeleteTopics(context.Background(), topic)

	values := make([][]byte, 1024)
	for i := range values {
		values[i] = make([]byte, *payload)
		_, _ = rand.Read(values[i])
	}
	prod, err := kgo.NewClient(seeds, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	check(err)
	var wg sync.WaitGroup
	var failed atomic.Int64
	wg.Add(*rawN)
	start := time.Now()
	for i := 0; i < *rawN; i++ {
		prod.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "%d", i), Value: values[i%len(values)]}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	produce := time.Since(start)
	prod.Close()

	cons, err := kgo.NewClient(seeds, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(topic+"-g"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	check(err)
	defer cons.Close()
	got := 0
	start = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for got < *rawN && cctx.Err() == nil {
		fs := cons.PollFetches(cctx)
		got += fs.NumRecords()
	}
	consume := time.Since(start)
	check(cons.CommitUncommittedOffsets(ctx))
	logf("raw franz-go: produced %d in %s (%d failed), consumed %d in %s", *rawN, produce, failed.Load(), got, consume)
	return []row{
		{name: "raw franz-go produce (acks=all, idempotent)", rate: float64(*rawN) / produce.Seconds(), extra: fmt.Sprintf("%d x %dB, %d partitions", *rawN, *payload, *partitions)},
		{name: "raw franz-go consume (group, read_committed)", rate: float64(got) / consume.Seconds()},
		{name: "raw franz-go produce+consume, serial", rate: float64(got) / (produce + consume).Seconds(), extra: "the ceiling for one record per job"},
	}
}
