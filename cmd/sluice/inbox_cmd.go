package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const inboxUsage = `usage: sluice inbox replay --source ID --from TIME [--to TIME] [--replay-id ID]

Routes a source's inbound requests received in [from, to) again, under the
source's current routes. TIME is RFC 3339 (2026-01-02T15:04:05Z) or a
duration before now (90m). Repeating a replay with the same --replay-id
enqueues nothing twice. Takes --server (SLUICE_SERVER), --api-key
(SLUICE_API_KEY) and --json.
`

// runInbox dispatches `sluice inbox ...`.
func runInbox(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "replay" {
		fmt.Fprint(os.Stderr, inboxUsage)
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			return flag.ErrHelp
		}
		return fmt.Errorf("unknown inbox command %q", args[0])
	}
	fs := newFlagSet("inbox replay")
	cf := addClientFlags(fs)
	source := fs.String("source", "", "source id (src_...)")
	fromFlag := fs.String("from", "", "start of the range: RFC 3339 time or a duration before now")
	toFlag := fs.String("to", "", "end of the range (exclusive); default now")
	replayID := fs.String("replay-id", "", "names the replay; default: a new id")
	args, err := parseClientArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if err := wantArgs(args, 0, 0, "sluice inbox replay --source ID --from TIME"); err != nil {
		return err
	}
	now := time.Now()
	req := &sluicev1.ReplayInboxRequest{SourceId: *source, ReplayId: *replayID}
	if *source == "" {
		return errors.New("--source: required")
	}
	if *fromFlag == "" {
		return errors.New("--from: required")
	}
	from, err := parseWhen(*fromFlag, now)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	req.From = timestamppb.New(from)
	if *toFlag != "" {
		to, err := parseWhen(*toFlag, now)
		if err != nil {
			return fmt.Errorf("--to: %w", err)
		}
		req.To = timestamppb.New(to)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := c.Sources().ReplayInbox(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, resp.Msg)
	}
	fmt.Printf("replay %s: %d requests, %d jobs enqueued\n", resp.Msg.ReplayId, resp.Msg.Requests, resp.Msg.Jobs)
	return nil
}

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
	}
	return t, nil
}
