package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/client"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const queuesUsage = `usage: sluice queues <command> [flags]

commands:
  list           list queues with their job counts
  get NAME       show a queue's settings and job counts
  pause NAME     stop delivery and claims; jobs wait, new ones are accepted
  resume NAME    let a paused queue's jobs run again
  update NAME    change settings: --max-attempts, --concurrency-limit,
                 --rate-limit, --retry-schedule 5s,1m,10m, --clear-retry-policy

Every command takes --server (SLUICE_SERVER), --api-key (SLUICE_API_KEY) and --json.
`

// runQueues dispatches `sluice queues ...`.
func runQueues(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, queuesUsage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "list":
		return runQueuesList(ctx, rest)
	case "get":
		return runQueuesGet(ctx, rest)
	case "pause", "resume":
		return runQueuesPause(ctx, cmd, rest)
	case "update":
		return runQueuesUpdate(ctx, rest)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, queuesUsage)
		return nil
	default:
		fmt.Fprint(os.Stderr, queuesUsage)
		return fmt.Errorf("unknown queues command %q", cmd)
	}
}

func runQueuesList(ctx context.Context, args []string) error {
	fs := newFlagSet("queues list")
	cf := addClientFlags(fs)
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 0, 0, "sluice queues list"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	qs, err := c.ListQueues(ctx)
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, &sluicev1.ListQueuesResponse{Queues: qs})
	}
	t := newTable(os.Stdout, "NAME", "PAUSED", "READY", "SCHEDULED", "RUNNING", "RETRYING", "SUCCEEDED", "DEAD", "OLDEST READY")
	for _, q := range qs {
		st := q.GetStats()
		t.row(q.GetQueue().GetName(), strconv.FormatBool(q.GetQueue().GetPaused()), count(st.GetReady()), count(st.GetScheduled()),
			count(st.GetRunning()), count(st.GetRetrying()), count(st.GetSucceeded()), count(st.GetDead()), oldestReady(st))
	}
	return t.flush()
}

func count(n int64) string { return strconv.FormatInt(n, 10) }

func oldestReady(st *sluicev1.QueueStats) string {
	if st.GetOldestReadyAge() == nil {
		return ""
	}
	return st.GetOldestReadyAge().AsDuration().Round(time.Millisecond).String()
}

func runQueuesGet(ctx context.Context, args []string) error {
	fs := newFlagSet("queues get")
	cf := addClientFlags(fs)
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 1, 1, "sluice queues get NAME"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	q, err := c.GetQueue(ctx, args[0])
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, &sluicev1.GetQueueResponse{Queue: q})
	}
	st := q.GetStats()
	return fieldList(os.Stdout, append(queueFields(q.GetQueue()),
		"ready", count(st.GetReady()), "scheduled", count(st.GetScheduled()), "running", count(st.GetRunning()),
		"retrying", count(st.GetRetrying()), "succeeded", count(st.GetSucceeded()), "dead", count(st.GetDead()),
		"cancelled", count(st.GetCancelled()), "oldest ready", oldestReady(st))...)
}

// queueFields are a queue's settings as field-list pairs.
func queueFields(q *client.Queue) []string {
	limit := func(n float64, unit string) string {
		if n == 0 {
			return "none"
		}
		return strconv.FormatFloat(n, 'f', -1, 64) + unit
	}
	attempts := "server default"
	if q.GetMaxAttempts() > 0 {
		attempts = strconv.Itoa(int(q.GetMaxAttempts()))
	}
	return []string{
		"name", q.GetName(),
		"paused", strconv.FormatBool(q.GetPaused()),
		"max attempts", attempts,
		"retry policy", retryPolicyString(q.GetRetryPolicy()),
		"concurrency limit", limit(float64(q.GetConcurrencyLimit()), ""),
		"rate limit", limit(q.GetRateLimit(), "/s"),
		"updated", formatTime(q.GetUpdatedAt()),
	}
}

func retryPolicyString(p *client.RetryPolicy) string {
	switch {
	case p == nil:
		return "server default"
	case p.GetExponential() != nil:
		e := p.GetExponential()
		return fmt.Sprintf("exponential %s x%g up to %s", e.GetInitial(), e.GetMultiplier(), e.GetMax())
	case len(p.GetSchedule()) > 0:
		return "schedule " + strings.Join(p.GetSchedule(), ", ")
	}
	return "server default"
}

func runQueuesPause(ctx context.Context, verb string, args []string) error {
	fs := newFlagSet("queues " + verb)
	cf := addClientFlags(fs)
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 1, 1, "sluice queues "+verb+" NAME"); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	do := c.PauseQueue
	if verb == "resume" {
		do = c.ResumeQueue
	}
	q, err := do(ctx, args[0])
	if err != nil {
		return err
	}
	return printQueue(q, *cf.json)
}

func printQueue(q *client.Queue, asJSON bool) error {
	if asJSON {
		return printJSON(os.Stdout, &sluicev1.UpdateQueueResponse{Queue: q})
	}
	return fieldList(os.Stdout, queueFields(q)...)
}

func runQueuesUpdate(ctx context.Context, args []string) error {
	fs := newFlagSet("queues update")
	cf := addClientFlags(fs)
	maxAttempts := fs.Int("max-attempts", -1, "default attempts for the queue's jobs (0: the server default)")
	concurrency := fs.Int("concurrency-limit", -1, "jobs running at once (0: no limit)")
	rate := fs.Float64("rate-limit", -1, "jobs started per second (0: no limit)")
	schedule := fs.String("retry-schedule", "", "delays between attempts, comma-separated (5s,1m,10m)")
	clear := fs.Bool("clear-retry-policy", false, "remove the queue's retry policy (the server default applies)")
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 1, 1, "sluice queues update NAME [--max-attempts N] [--concurrency-limit N] [--rate-limit R] [--retry-schedule D,D] [--clear-retry-policy]"); err != nil {
		return err
	}
	u := &client.QueueUpdate{Name: args[0], ClearRetryPolicy: *clear}
	set := false
	if *maxAttempts >= 0 {
		u.MaxAttempts, set = ptr(int32(*maxAttempts)), true
	}
	if *concurrency >= 0 {
		u.ConcurrencyLimit, set = ptr(int32(*concurrency)), true
	}
	if *rate >= 0 {
		u.RateLimit, set = ptr(*rate), true
	}
	if *schedule != "" {
		if *clear {
			return fmt.Errorf("--retry-schedule and --clear-retry-policy: set one, not both")
		}
		u.RetryPolicy, set = &client.RetryPolicy{Schedule: strings.Split(*schedule, ",")}, true
	}
	if !set && !*clear {
		return fmt.Errorf("queues update: nothing to change: set --max-attempts, --concurrency-limit, --rate-limit, --retry-schedule or --clear-retry-policy")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	q, err := c.UpdateQueue(ctx, u)
	if err != nil {
		return err
	}
	return printQueue(q, *cf.json)
}

func ptr[T any](v T) *T { return &v }
