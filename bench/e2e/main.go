// Command e2e measures Sluice end to end against a real Kafka broker and
// Redis: jobs enqueued over the API, delivered over HTTP to a local no-op
// receiver, and read SUCCEEDED from Redis. In the same run it measures raw
// franz-go produce and consume on the same broker, the ceiling.
//
//	go run ./bench/e2e -brokers 127.0.0.1:39092 -redis redis://127.0.0.1:36379/0
//
// Results go to stdout as a table; progress to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

var (
	brokers     = flag.String("brokers", os.Getenv("SLUICE_TEST_KAFKA_BROKERS"), "Kafka bootstrap brokers")
	redisURL    = flag.String("redis", os.Getenv("SLUICE_TEST_REDIS_URL"), "Redis URL for the projections")
	binary      = flag.String("sluice", "", "sluice binary; built from ./cmd/sluice when empty")
	partitions  = flag.Int("partitions", 4, "partitions of the events topic")
	payload     = flag.Int("payload", 512, "payload bytes per job")
	batchN      = flag.Int("batch-n", 50_000, "jobs in the EnqueueBatch throughput phase")
	batchSize   = flag.Int("batch-size", 500, "jobs per EnqueueBatch call")
	singleN     = flag.Int("single-n", 20_000, "jobs in the Enqueue throughput phase")
	clients     = flag.Int("clients", 64, "concurrent clients in the Enqueue throughput phase")
	rate        = flag.Float64("rate", 1000, "jobs/s in the latency phase")
	latDur      = flag.Duration("lat-dur", 10*time.Second, "length of the latency phase (first second is warm-up)")
	backlogN    = flag.Int("backlog", 100_000, "jobs queued before delivery starts in the memory phase (0 skips it)")
	rawN        = flag.Int("raw-n", 200_000, "records in the raw franz-go phase")
	phases      = flag.String("phases", "raw,batch,single,latency,retry,timers,workers,priority,backlog", "phases to run")
	workersN    = flag.Int("workers-n", 50_000, "jobs in the worker phase")
	workerProcs = flag.Int("worker-procs", 8, "concurrent workers in the worker phase, each claiming and completing in batches")
	workerBatch = flag.Int("worker-batch", 200, "jobs per Claim and CompleteBatch in the worker phase")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the sluice server during the batch phase here")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *brokers == "" || *redisURL == "" {
		log.Fatal("e2e: -brokers and -redis are required (or SLUICE_TEST_KAFKA_BROKERS / SLUICE_TEST_REDIS_URL)")
	}
	ctx := context.Background()
	if *binary == "" {
		dir, err := os.MkdirTemp("", "sluice-bench")
		check(err)
		defer os.RemoveAll(dir)
		*binary = filepath.Join(dir, "sluice")
		build := exec.Command("go", "build", "-o", *binary, "./cmd/sluice")
		build.Stderr = os.Stderr
		check(build.Run())
	}
	want := map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		want[p] = true
	}
	var rows []row
	if want["raw"] {
		rows = append(rows, rawFranz(ctx)...)
	}
	if want["batch"] || want["single"] || want["latency"] || want["retry"] || want["timers"] || want["workers"] || want["priority"] {
		rows = append(rows, sluicePhases(ctx, want)...)
	}
	if want["backlog"] && *backlogN > 0 {
		rows = append(rows, backlogPhase(ctx)...)
	}
	printTable(rows)
}

// row is one line of the result table.
type row struct {
	name  string
	rate  float64 // per second; 0 = not applicable
	p50   time.Duration
	p99   time.Duration
	extra string
}

func printTable(rows []row) {
	fmt.Printf("%-48s %12s %10s %10s  %s\n", "measure", "per second", "p50", "p99", "notes")
	for _, r := range rows {
		rate, p50, p99 := "-", "-", "-"
		if r.rate > 0 {
			rate = fmt.Sprintf("%.0f", r.rate)
		}
		if r.p50 > 0 {
			p50 = fmt.Sprintf("%.2fms", float64(r.p50)/1e6)
			p99 = fmt.Sprintf("%.2fms", float64(r.p99)/1e6)
		}
		fmt.Printf("%-48s %12s %10s %10s  %s\n", r.name, rate, p50, p99, r.extra)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "  "+format+"\n", args...) }

func check(err error) {
	if err != nil {
		log.Fatalf("e2e: %v", err)
	}
}

var errTimeout = errors.New("timed out")
