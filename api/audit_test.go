package api_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/analytics"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/log/eventlog"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// auditServer serves f's read model with the audit and replay services.
func auditServer(t *testing.T, f *fixture, trail api.AuditTrail) string {
	t.Helper()
	cfg := f.cfg
	cfg.Audit = api.AuditConfig{Trail: trail, Timelines: f.store, Replays: f.store}
	h, err := api.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func auditClient(url, key string) sluicev1connect.AuditServiceClient {
	return sluicev1connect.NewAuditServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearer(key)))
}

func replayClient(url, key string) sluicev1connect.ReplayServiceClient {
	return sluicev1connect.NewReplayServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearer(key)))
}

func TestJobTimelineFromTheReadModel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := auditServer(t, f, nil)
	id := f.seedDead(t, "acme", "q", "http://a.example/hook", "HTTP 500", 1)[0]
	ctx := context.Background()

	resp, err := auditClient(url, "sk_acme").GetJobTimeline(ctx, connect.NewRequest(&sluicev1.GetJobTimelineRequest{JobId: id}))
	if err != nil {
		t.Fatal(err)
	}
	ev := resp.Msg.Events
	if resp.Msg.Source != "projection" || len(ev) != 2 || ev[0].Type != "job.enqueued" || ev[1].Type != "job.attempted" ||
		ev[1].StatusCode != 500 || ev[1].Outcome != "dead" || ev[1].Reason == "" {
		t.Errorf("timeline: got %v from %q, want enqueue and a dead attempt with status 500 and reason, from projection", ev, resp.Msg.Source)
	}

	_, err = auditClient(url, "sk_globex").GetJobTimeline(ctx, connect.NewRequest(&sluicev1.GetJobTimelineRequest{JobId: id}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("another tenant's job: got %v, want not_found", err)
	}
	_, err = auditClient(url, "sk_acme").GetJobTimeline(ctx, connect.NewRequest(&sluicev1.GetJobTimelineRequest{}))
	wantError(t, err, connect.CodeInvalidArgument, "jobId")
}

func TestJobTimelineWhileClickHouseIsDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conn, err := analytics.Open(analytics.DBConfig{DSN: "clickhouse://" + addr + "/default"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := newFixture(t)
	url := auditServer(t, f, analytics.NewReader(conn, ""))
	id := f.seedDead(t, "acme", "q", "http://a.example/hook", "HTTP 500", 1)[0]

	resp, err := auditClient(url, "sk_acme").GetJobTimeline(context.Background(), connect.NewRequest(&sluicev1.GetJobTimelineRequest{JobId: id}))
	if err != nil || resp.Msg.Source != "projection" || len(resp.Msg.Events) != 2 {
		t.Fatalf("timeline with ClickHouse down: %v, %v; want 2 events from the projection", resp, err)
	}
	_, err = auditClient(url, "sk_acme").QueryAttempts(context.Background(), connect.NewRequest(&sluicev1.QueryAttemptsRequest{}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("QueryAttempts with ClickHouse down: got %v, want unavailable", err)
	}
}

func TestReplayJobs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := auditServer(t, f, nil)
	ids := f.seedDead(t, "acme", "q", "http://a.example/hook", "HTTP 500", 5) // at t0 + 0..4s
	other := f.seedDead(t, "globex", "q", "http://a.example/hook", "HTTP 500", 5)
	ctx := context.Background()
	sel := &sluicev1.ReplaySelection{
		CreatedAfter: timestamppb.New(t0.Add(time.Second)), CreatedBefore: timestamppb.New(t0.Add(4 * time.Second)),
		Queue: "q", Target: "http://a.example/", State: sluicev1.JobState_JOB_STATE_DEAD, EventType: "job.attempted",
	}
	rc := replayClient(url, "sk_acme")

	dry, err := rc.ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: sel, DryRun: true}))
	if err != nil || dry.Msg.Matched != 3 || dry.Msg.Enqueued != 0 {
		t.Fatalf("dry run: %v, %v; want 3 matched, none enqueued", dry, err)
	}
	for _, miss := range []*sluicev1.ReplaySelection{
		{CreatedAfter: sel.CreatedAfter, CreatedBefore: sel.CreatedBefore, Queue: "other"},
		{CreatedAfter: sel.CreatedAfter, CreatedBefore: sel.CreatedBefore, Target: "ep_1"},
		{CreatedAfter: sel.CreatedAfter, CreatedBefore: sel.CreatedBefore, State: sluicev1.JobState_JOB_STATE_SUCCEEDED},
		{CreatedAfter: sel.CreatedAfter, CreatedBefore: sel.CreatedBefore, EventType: "job.cancelled"},
	} {
		r, err := rc.ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: miss, DryRun: true}))
		if err != nil || r.Msg.Matched != 0 {
			t.Errorf("dry run of %v: %v, %v; want 0 matched", miss, r, err)
		}
	}

	override := &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "http://b.example/new"}}
	req := &sluicev1.ReplayJobsRequest{Selection: sel, ReplayId: "r1", PageSize: 2, TargetOverride: override}
	first, err := rc.ReplayJobs(ctx, connect.NewRequest(req))
	if err != nil || first.Msg.Enqueued != 2 || first.Msg.NextCursor == "" {
		t.Fatalf("first page: %v, %v; want 2 enqueued and a cursor", first, err)
	}
	req.Cursor = first.Msg.NextCursor
	second, err := rc.ReplayJobs(ctx, connect.NewRequest(req))
	if err != nil || second.Msg.Enqueued != 1 || second.Msg.NextCursor != "" {
		t.Fatalf("second page: %v, %v; want 1 enqueued and no cursor", second, err)
	}

	newIDs := append(first.Msg.JobIds, second.Msg.JobIds...)
	for i, orig := range ids[1:4] {
		want := eventlog.KeyedJobID("acme", "sluice-replay/r1/"+orig)
		if newIDs[i] != want {
			t.Errorf("replay %d: id %s, want %s (derived from replay id and original)", i, newIDs[i], want)
		}
	}
	calls := f.log.calls()
	for _, call := range calls[len(calls)-2:] {
		for _, rec := range call {
			ev, err := eventlog.DecodeEvent(rec)
			if err != nil {
				t.Fatal(err)
			}
			spec := ev.GetJobEnqueued().GetSpec()
			if ev.TenantId != "acme" || ev.CausationId == "" || spec.GetTarget().GetUrl() != "http://b.example/new" ||
				spec.GetIdempotencyKey() != "sluice-replay/r1/"+ev.CausationId || spec.GetQueue() != "q" {
				t.Errorf("replayed job.enqueued %v: want acme's, caused by its original, to the override, keyed by the replay", ev)
			}
		}
	}
	for _, id := range newIDs {
		if got := f.state(t, "acme", id); got != "JOB_STATE_READY" {
			t.Errorf("replayed job %s: %s, want JOB_STATE_READY", id, got)
		}
	}
	for _, id := range other {
		if got := f.state(t, "globex", id); got != "JOB_STATE_DEAD" {
			t.Errorf("globex job %s: %s, want it untouched", id, got)
		}
	}

	// A range that holds the replay's own jobs never replays them again.
	wide := &sluicev1.ReplaySelection{CreatedAfter: timestamppb.New(time.Now().Add(-time.Hour)), CreatedBefore: timestamppb.New(t0.Add(time.Hour)), Queue: "q"}
	again, err := rc.ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: wide, ReplayId: "r1", DryRun: true}))
	if err != nil || again.Msg.Matched != 5 {
		t.Errorf("dry run over the replay's own jobs: %v, %v; want the 5 originals only", again, err)
	}

	_, err = rc.ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: sel, ReplayId: "r1", Cursor: "!!"}))
	wantError(t, err, connect.CodeInvalidArgument, "cursor")
	_, err = rc.ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: sel, ReplayId: "bad id"}))
	wantError(t, err, connect.CodeInvalidArgument, "replayId")
}
