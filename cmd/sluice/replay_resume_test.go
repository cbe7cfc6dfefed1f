package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// A resumed replay selects the window its cursor was made in: --cursor
// wants --to, and both ends as absolute times.
func TestReplayCursorNeedsAbsoluteWindow(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "2026-03-01T12:00:00Z", "--cursor", "abc"}, "--to: required with --cursor"},
		{[]string{"--from", "2026-03-01T12:00:00Z", "--to", "1h", "--cursor", "abc"}, "--to: \"1h\" is relative to now"},
		{[]string{"--from", "24h", "--to", "2026-03-01T12:00:00Z", "--cursor", "abc"}, "--from: \"24h\" is relative to now"},
	} {
		err := runReplay(context.Background(), c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("sluice replay %v: %v; want an error containing %q", c.args, err, c.want)
		}
	}
}

// The resume hint repeats the window as absolute times, the filters and
// the target override, with the replay id and the cursor.
func TestReplayResumeFlags(t *testing.T) {
	from := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	to := from.Add(90 * time.Minute)
	req := &sluicev1.ReplayJobsRequest{
		Selection: &sluicev1.ReplaySelection{
			CreatedAfter: timestamppb.New(from), CreatedBefore: timestamppb.New(to),
			Queue: "orders", Target: "ep_1", State: sluicev1.JobState_JOB_STATE_DEAD, EventType: "job.attempted",
		},
		TargetOverride: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "http://b.example/it's"}},
		ReplayId:       "r1", Cursor: "c/1=",
	}
	got := resumeFlags(req)
	want := `--from '2026-03-01T11:00:00.123456789Z' --to '2026-03-01T12:30:00.123456789Z' --queue 'orders' --target 'ep_1' ` +
		`--state 'dead' --event-type 'job.attempted' --to-url 'http://b.example/it'\''s' --replay-id 'r1' --cursor 'c/1='`
	if got != want {
		t.Errorf("resume flags:\n got %s\nwant %s", got, want)
	}
}
