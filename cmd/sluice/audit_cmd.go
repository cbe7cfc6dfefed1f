package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/client"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const auditUsage = "sluice audit JOB_ID [--json] [--server URL] [--api-key KEY]"

// runAudit prints a job's timeline: `sluice audit JOB_ID`.
func runAudit(ctx context.Context, args []string) error {
	fs := newFlagSet("audit")
	cf := addClientFlags(fs)
	pos, err := parseClientArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, auditUsage); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := c.Audit().GetJobTimeline(ctx,
		connect.NewRequest(&sluicev1.GetJobTimelineRequest{JobId: pos[0]}))
	if err != nil {
		return fmt.Errorf("audit %s: %s", pos[0], client.ErrorMessage(err))
	}
	if *cf.json {
		return printJSON(os.Stdout, resp.Msg)
	}
	fmt.Printf("job %s: %d events (from %s)\n", pos[0], len(resp.Msg.Events), resp.Msg.Source)
	t := newTable(os.Stdout, "#", "TIME (UTC)", "EVENT", "ATTEMPT", "STATUS", "LATENCY", "OUTCOME", "ACTOR", "ERROR / REASON")
	for i, e := range resp.Msg.Events {
		t.row(strconv.Itoa(i+1), formatMillis(e.At), e.Type, blankZero(e.Attempt), blankZero(e.StatusCode),
			formatLatency(e), e.Outcome, e.Actor, truncate(strings.TrimSpace(e.Error+" "+e.Reason), 80))
	}
	return t.flush()
}

// formatMillis prints a timestamp in UTC to the millisecond.
func formatMillis(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04:05.000")
}

func formatLatency(e *sluicev1.TimelineEvent) string {
	if e.Latency == nil {
		return ""
	}
	return e.Latency.AsDuration().Round(100 * time.Microsecond).String()
}

func blankZero(n int32) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(int(n))
}
