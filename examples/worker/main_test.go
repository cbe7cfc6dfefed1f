package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/internal/devtest"
)

// TestExampleRunsAgainstDev runs the example against `sluice dev` and
// checks that it processed every job it enqueued, and that the server
// has them succeeded with the example's result.
func TestExampleRunsAgainstDev(t *testing.T) {
	s := devtest.Start(t)
	c, err := client.New(s.URL, client.WithAPIKey(s.Key))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"-server", s.URL, "-api-key", s.Key, "-jobs", "25", "-queue", "example"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "enqueued 25 jobs") || !strings.Contains(out.String(), "processed 25 jobs") {
		t.Errorf("output: got %q, want 25 enqueued and 25 processed", out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		jobs, _, err := c.ListJobs(ctx, client.JobQuery{Queue: "example", State: client.JobStateSucceeded, PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 25 {
			var res struct{ Greeting string }
			if err := client.DecodeValue(jobs[0].GetResult(), &res); err != nil || !strings.HasPrefix(res.Greeting, "hello, user-") {
				t.Errorf("result: got %+v (%v), want a greeting", res, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("succeeded jobs on queue example: got %d, want 25", len(jobs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
