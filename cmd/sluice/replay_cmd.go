package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/log/eventlog"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

const replayUsage = `usage: sluice replay --from TIME [--to TIME] [filters] [--dry-run | --rate N] [--to-url URL | --to-endpoint ID]

Sends the jobs created in [--from, --to) round again as new jobs, oldest
first, each linked to its original. TIME is RFC 3339 (2026-03-01T12:00:00Z)
or a duration ago (90m, 24h). Filters: --queue, --target (endpoint id or
URL prefix), --state, --event-type. --dry-run only counts. An interrupted
replay prints the flags that resume it: the same window as absolute
times, the filters, --replay-id and --cursor (--cursor needs --from and
--to as RFC 3339 times, so a resumed run selects the same jobs); replaying
a page again under the same replay id enqueues nothing twice.
`

// runReplay re-enqueues a time range of jobs: `sluice replay`.
func runReplay(ctx context.Context, args []string) error {
	fs := newFlagSet("replay")
	fs.Usage = func() { fmt.Fprint(os.Stderr, replayUsage); fs.PrintDefaults() }
	cf := addClientFlags(fs)
	from := fs.String("from", "", "replay jobs created at or after this time (required)")
	to := fs.String("to", "", "replay jobs created before this time; default: now")
	queue := fs.String("queue", "", "only jobs of this queue")
	target := fs.String("target", "", "only jobs targeting this endpoint id, or a URL starting with this http(s) URL")
	state := fs.String("state", "", "only jobs now in this state (succeeded, dead, cancelled, ...)")
	eventType := fs.String("event-type", "", "only jobs with an event of this type (job.attempted, job.cancelled, job.retried; any type when the server has ClickHouse)")
	toURL := fs.String("to-url", "", "send the new jobs to this URL instead of their targets")
	toEndpoint := fs.String("to-endpoint", "", "send the new jobs to this endpoint instead of their targets")
	rate := fs.Float64("rate", 100, "jobs enqueued per second, at most")
	pageSize := fs.Int("page-size", 100, "jobs per call (1-1000)")
	dryRun := fs.Bool("dry-run", false, "only print how many jobs match")
	replayID := fs.String("replay-id", "", "names the replay (resume with the same one); default: a new id")
	cursor := fs.String("cursor", "", "resume after this cursor (printed by an earlier run)")
	pos, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0, "sluice replay --from TIME [flags]"); err != nil {
		return err
	}
	now := time.Now()
	req := &sluicev1.ReplayJobsRequest{
		Selection: &sluicev1.ReplaySelection{Queue: *queue, Target: *target, EventType: *eventType},
		DryRun:    *dryRun, ReplayId: *replayID, Cursor: *cursor,
	}
	if *from == "" {
		return errors.New("--from: required")
	}
	after, err := parseWhen(*from, now)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	if *cursor != "" {
		// A resumed run must select the window the cursor was made in.
		if *to == "" {
			return errors.New("--to: required with --cursor (resume with the --from and --to the interrupted run printed)")
		}
		for name, v := range map[string]string{"--from": *from, "--to": *to} {
			if _, err := time.ParseDuration(v); err == nil {
				return fmt.Errorf("%s: %q is relative to now; with --cursor give the RFC 3339 time the interrupted run printed", name, v)
			}
		}
	}
	before := now
	if *to != "" {
		if before, err = parseWhen(*to, now); err != nil {
			return fmt.Errorf("--to: %w", err)
		}
	}
	req.Selection.CreatedAfter, req.Selection.CreatedBefore = timestamppb.New(after), timestamppb.New(before)
	if *state != "" {
		v, ok := sluicev1.JobState_value["JOB_STATE_"+strings.ToUpper(strings.TrimPrefix(*state, "JOB_STATE_"))]
		if !ok || v == 0 {
			return fmt.Errorf("--state: %q is not a job state", *state)
		}
		req.Selection.State = sluicev1.JobState(v)
	}
	switch {
	case *toURL != "" && *toEndpoint != "":
		return errors.New("--to-url and --to-endpoint: set one")
	case *toURL != "":
		req.TargetOverride = &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: *toURL}}
	case *toEndpoint != "":
		req.TargetOverride = &sluicev1.Target{Kind: &sluicev1.Target_EndpointId{EndpointId: *toEndpoint}}
	}
	if *rate <= 0 {
		return fmt.Errorf("--rate: %v must be positive", *rate)
	}
	if *pageSize < 1 || *pageSize > 1000 {
		return fmt.Errorf("--page-size: %d is outside 1..1000", *pageSize)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	svc := c.Replay()
	count, err := countReplay(ctx, svc, req)
	if err != nil {
		return err
	}
	if *dryRun {
		if *cf.json {
			return printJSON(os.Stdout, &sluicev1.ReplayJobsResponse{Matched: count})
		}
		fmt.Printf("%d jobs match\n", count)
		return nil
	}
	if req.ReplayId == "" {
		req.ReplayId = "r" + strings.ReplaceAll(eventlog.NewID(), "-", "")[:20]
	}
	req.PageSize = int32(min(*pageSize, max(1, int(*rate))))
	fmt.Fprintf(os.Stderr, "replaying %d jobs as replay %s\n", count, req.ReplayId)
	total, err := replayPages(ctx, svc, req, count, *rate)
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, &sluicev1.ReplayJobsResponse{Enqueued: total})
	}
	fmt.Printf("replayed %d jobs (replay id %s)\n", total, req.ReplayId)
	return nil
}

// countReplay counts the jobs the request selects from its cursor on.
func countReplay(ctx context.Context, svc sluicev1connect.ReplayServiceClient, req *sluicev1.ReplayJobsRequest) (int32, error) {
	dry := proto.CloneOf(req)
	dry.DryRun = true
	resp, err := svc.ReplayJobs(ctx, connect.NewRequest(dry))
	if err != nil {
		return 0, fmt.Errorf("count jobs to replay: %s", client.ErrorMessage(err))
	}
	return resp.Msg.Matched, nil
}

// replayPages replays page after page at no more than rate jobs a
// second, showing progress, until the selection is exhausted. On an
// error or an interrupt it prints how to resume.
func replayPages(ctx context.Context, svc sluicev1connect.ReplayServiceClient, req *sluicev1.ReplayJobsRequest, count int32, rate float64) (int32, error) {
	bar := newProgress(int64(count), "replaying")
	defer bar.finish()
	start := time.Now()
	var total int32
	for {
		resp, err := svc.ReplayJobs(ctx, connect.NewRequest(req))
		if err != nil {
			bar.finish()
			fmt.Fprintf(os.Stderr, "replay stopped after %d jobs; resume with: sluice replay %s\n", total, resumeFlags(req))
			return total, fmt.Errorf("replay: %s", client.ErrorMessage(err))
		}
		total += resp.Msg.Enqueued
		bar.add(int(resp.Msg.Enqueued))
		if bar == nil {
			fmt.Fprintf(os.Stderr, "replayed %d/%d cursor=%s\n", total, count, resp.Msg.NextCursor)
		}
		if resp.Msg.NextCursor == "" {
			return total, nil
		}
		req.Cursor = resp.Msg.NextCursor
		// Pace: the jobs so far may not have taken less than total/rate.
		due := start.Add(time.Duration(float64(total) / rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			bar.finish()
			fmt.Fprintf(os.Stderr, "replay interrupted after %d jobs; resume with: sluice replay %s\n", total, resumeFlags(req))
			return total, ctx.Err()
		case <-time.After(time.Until(due)):
		}
	}
}

// resumeFlags are the flags that resume req where it stands, shell-quoted:
// its window as absolute times, its filters, its target override, its
// replay id and its cursor.
func resumeFlags(req *sluicev1.ReplayJobsRequest) string {
	sel := req.GetSelection()
	var b strings.Builder
	flag := func(name, v string) {
		if v != "" {
			fmt.Fprintf(&b, " --%s %s", name, shellQuote(v))
		}
	}
	flag("from", sel.GetCreatedAfter().AsTime().UTC().Format(time.RFC3339Nano))
	flag("to", sel.GetCreatedBefore().AsTime().UTC().Format(time.RFC3339Nano))
	flag("queue", sel.GetQueue())
	flag("target", sel.GetTarget())
	if st := sel.GetState(); st != sluicev1.JobState_JOB_STATE_UNSPECIFIED {
		flag("state", strings.ToLower(strings.TrimPrefix(st.String(), "JOB_STATE_")))
	}
	flag("event-type", sel.GetEventType())
	flag("to-url", req.GetTargetOverride().GetUrl())
	flag("to-endpoint", req.GetTargetOverride().GetEndpointId())
	flag("replay-id", req.GetReplayId())
	flag("cursor", req.GetCursor())
	return strings.TrimPrefix(b.String(), " ")
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
