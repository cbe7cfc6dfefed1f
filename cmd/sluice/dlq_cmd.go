package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/client"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const dlqUsage = `usage: sluice dlq <command> [flags]

commands:
  list                          list dead letters, newest death first
  retry ID... | --all | FILTER  send dead jobs round again (--reason, --payload)
  purge ID... | --all | FILTER  delete dead jobs for good (needs --yes)

FILTER is any of --queue, --target, --error, --died-after, --died-before.
Every command takes --server (SLUICE_SERVER), --api-key (SLUICE_API_KEY) and --json.
`

// dlqPage is the dead letters fetched per ListDeadLetters call, and the
// ids sent per retry or purge call, when working by filter.
const dlqPage = 1000

// runDLQ dispatches `sluice dlq ...`.
func runDLQ(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, dlqUsage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "list":
		return runDLQList(ctx, rest)
	case "retry", "purge":
		return runDLQAmend(ctx, cmd, rest)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, dlqUsage)
		return nil
	default:
		fmt.Fprint(os.Stderr, dlqUsage)
		return fmt.Errorf("unknown dlq command %q", cmd)
	}
}

// dlqFilterFlags select dead letters.
type dlqFilterFlags struct {
	queue, target, errorText, diedAfter, diedBefore *string
}

func addDLQFilterFlags(fs flagSet) dlqFilterFlags {
	return dlqFilterFlags{
		queue:      fs.String("queue", "", "only dead letters of this queue"),
		target:     fs.String("target", "", "only dead letters whose target URL starts with this, or with this endpoint id"),
		errorText:  fs.String("error", "", "only dead letters whose error contains this text (any case)"),
		diedAfter:  fs.String("died-after", "", "only dead letters that died at or after this RFC 3339 time"),
		diedBefore: fs.String("died-before", "", "only dead letters that died before this RFC 3339 time"),
	}
}

// filter returns the filter the flags set, or nil when none is set.
func (f dlqFilterFlags) filter() (*client.DeadLetterFilter, error) {
	out := &client.DeadLetterFilter{Queue: *f.queue, Target: *f.target, ErrorContains: *f.errorText}
	for _, tf := range []struct {
		name string
		val  string
		dst  **timestamppb.Timestamp
	}{{"--died-after", *f.diedAfter, &out.DiedAfter}, {"--died-before", *f.diedBefore, &out.DiedBefore}} {
		if tf.val == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, tf.val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tf.name, err)
		}
		*tf.dst = timestamppb.New(t)
	}
	if out.Queue == "" && out.Target == "" && out.ErrorContains == "" && out.DiedAfter == nil && out.DiedBefore == nil {
		return nil, nil
	}
	return out, nil
}

func runDLQList(ctx context.Context, args []string) error {
	fs := newFlagSet("dlq list")
	cf := addClientFlags(fs)
	ff := addDLQFilterFlags(fs)
	limit := fs.Int("limit", 50, "dead letters to show (1-1000)")
	token := fs.String("page-token", "", "continue a previous listing")
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(args, 0, 0, "sluice dlq list [FILTER] [--limit N]"); err != nil {
		return err
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("--limit: %d is not within 1-1000", *limit)
	}
	filter, err := ff.filter()
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	dls, next, err := c.ListDeadLetters(ctx, client.DeadLetterQuery{Filter: filter, PageSize: *limit, PageToken: *token})
	if err != nil {
		return err
	}
	if *cf.json {
		return printJSON(os.Stdout, &sluicev1.ListDeadLettersResponse{DeadLetters: dls, NextPageToken: next})
	}
	t := newTable(os.Stdout, "ID", "QUEUE", "ATTEMPTS", "DIED", "TARGET", "REASON")
	for _, d := range dls {
		t.row(d.GetJob().GetId(), d.GetJob().GetQueue(), strconv.Itoa(len(d.GetAttempts())), formatTime(d.GetDiedAt()),
			truncate(targetString(d.GetJob().GetTarget()), 40), truncate(d.GetReason(), 60))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(os.Stderr, "more: --page-token %s\n", next)
	}
	return nil
}

// runDLQAmend retries or purges dead letters named by id, or selected by
// a filter (or --all): those are listed page by page first, then sent in
// chunks with a progress bar.
func runDLQAmend(ctx context.Context, verb string, args []string) error {
	fs := newFlagSet("dlq " + verb)
	cf := addClientFlags(fs)
	ff := addDLQFilterFlags(fs)
	all := fs.Bool("all", false, "select every dead letter")
	var reason, payload *string
	var yes *bool
	if verb == "retry" {
		reason = fs.String("reason", "", "why, kept with each retried job")
		payload = fs.String("payload", "", "replace each retried job's payload with this JSON")
	} else {
		yes = fs.Bool("yes", false, "confirm: purging cannot be undone")
	}
	args, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	filter, err := ff.filter()
	if err != nil {
		return err
	}
	switch {
	case len(args) > 0 && (filter != nil || *all):
		return errors.New("name dead letters by ID or select them with a filter or --all, not both")
	case len(args) == 0 && filter == nil && !*all:
		return fmt.Errorf("usage: sluice dlq %s ID... | --all | [--queue Q] [--target T] [--error TEXT] [--died-after T] [--died-before T]", verb)
	case yes != nil && !*yes:
		return errors.New("purge cannot be undone: pass --yes to confirm")
	}
	var opts []client.RetryOption
	if reason != nil && *reason != "" {
		opts = append(opts, client.WithReason(*reason))
	}
	if payload != nil && *payload != "" {
		opts = append(opts, client.WithPayloadOverride(jsonArg(*payload)))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}

	// The ids to work: as given, or every dead letter the filter selects.
	ids := args
	if len(ids) == 0 {
		if filter == nil {
			filter = &client.DeadLetterFilter{}
		}
		if ids, err = selectDeadLetters(ctx, c, filter); err != nil {
			return err
		}
	}

	done, err := amendDeadLetters(ctx, c, verb, ids, opts)
	if *cf.json {
		var m proto.Message = &sluicev1.RetryDeadLettersResponse{Retried: int32(done)}
		if verb == "purge" {
			m = &sluicev1.PurgeDeadLettersResponse{Purged: int32(done)}
		}
		if jerr := printJSON(os.Stdout, m); jerr != nil {
			return jerr
		}
		return err
	}
	past := map[string]string{"retry": "retried", "purge": "purged"}[verb]
	fmt.Fprintf(os.Stdout, "%s %d of %d dead letters\n", past, done, len(ids))
	return err
}

// selectDeadLetters lists the ids of every dead letter filter selects.
func selectDeadLetters(ctx context.Context, c *client.Client, filter *client.DeadLetterFilter) ([]string, error) {
	bar := newProgress(-1, "selecting dead letters")
	defer bar.finish()
	var ids []string
	for d, err := range c.DeadLetters(ctx, client.DeadLetterQuery{Filter: filter, PageSize: dlqPage}) {
		if err != nil {
			return nil, err
		}
		ids = append(ids, d.GetJob().GetId())
		bar.add(1)
	}
	return ids, nil
}

// amendDeadLetters retries or purges ids in chunks and returns how many
// were retried or purged; on an error, the chunks before it stay done.
func amendDeadLetters(ctx context.Context, c *client.Client, verb string, ids []string, opts []client.RetryOption) (int, error) {
	bar := newProgress(int64(len(ids)), verb+" dead letters")
	defer bar.finish()
	done := 0
	for start := 0; start < len(ids); start += dlqPage {
		chunk := ids[start:min(start+dlqPage, len(ids))]
		var n int
		var err error
		if verb == "retry" {
			n, err = c.RetryDeadLetters(ctx, client.Selection{IDs: chunk}, opts...)
		} else {
			n, err = c.PurgeDeadLetters(ctx, client.Selection{IDs: chunk})
		}
		if err != nil {
			return done, fmt.Errorf("after %d of %d: %w", start, len(ids), err)
		}
		done += n
		bar.add(len(chunk))
	}
	return done, nil
}
