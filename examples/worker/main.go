// Command worker is a runnable example of the Go SDK: it enqueues jobs on
// a Sluice server and works them with the worker runtime until every one
// is done, then drains and exits.
//
//	go run ./cmd/sluice dev                         # prints the API key
//	SLUICE_API_KEY=sk_... go run ./examples/worker -jobs 100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/client/worker"
)

// Greeting is the payload of the example's jobs.
type Greeting struct {
	Name string `json:"name"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "worker:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	server := fs.String("server", envOr("SLUICE_SERVER", "http://127.0.0.1:8080"), "Sluice server (SLUICE_SERVER)")
	apiKey := fs.String("api-key", os.Getenv("SLUICE_API_KEY"), "API key (SLUICE_API_KEY)")
	queue := fs.String("queue", "greetings", "queue to enqueue to and work")
	jobs := fs.Int("jobs", 20, "jobs to enqueue and process")
	concurrency := fs.Int("concurrency", 8, "handlers running at once")
	stream := fs.Bool("stream", false, "claim over the server-streaming ClaimStream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *apiKey == "" {
		return errors.New("-api-key or SLUICE_API_KEY is required (sluice dev prints one)")
	}
	c, err := client.New(*server, client.WithAPIKey(*apiKey))
	if err != nil {
		return err
	}

	// Enqueue the jobs in all-or-nothing batches of up to client.MaxBatch.
	reqs := make([]*client.EnqueueRequest, *jobs)
	for i := range reqs {
		if reqs[i], err = client.NewEnqueueRequest(*queue, Greeting{Name: fmt.Sprintf("user-%d", i)}); err != nil {
			return err
		}
	}
	for start := 0; start < len(reqs); start += client.MaxBatch {
		if _, err := c.EnqueueBatch(ctx, reqs[start:min(start+client.MaxBatch, len(reqs))]); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "enqueued %d jobs on %s\n", *jobs, *queue)

	// Work them; stop once every job has been handled.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	handler := worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (any, error) {
		var g Greeting
		if err := job.Decode(&g); err != nil {
			return nil, worker.Permanent(err)
		}
		if done.Add(1) == int64(*jobs) {
			cancel()
		}
		return map[string]string{"greeting": "hello, " + g.Name}, nil
	})
	w, err := worker.New(c, worker.Config{
		Queue: *queue, Concurrency: *concurrency, Stream: *stream, ClaimWait: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, handler)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := w.Run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "processed %d jobs in %s\n", done.Load(), time.Since(start).Round(time.Millisecond))
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
