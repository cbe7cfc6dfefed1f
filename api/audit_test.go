package api_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/analytics"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/tenancy"
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

// auditServerWith serves f's read model with the audit and replay
// services configured by audit (its stores default to f's) and the
// endpoints store eps.
func auditServerWith(t *testing.T, f *fixture, audit api.AuditConfig, eps api.EndpointStore) string {
	t.Helper()
	cfg := f.cfg
	audit.Timelines, audit.Replays = f.store, f.store
	cfg.Audit, cfg.Endpoints = audit, eps
	h, err := api.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// hungTrail is an audit trail that never answers: it returns only when
// the caller gives up.
type hungTrail struct{}

func (hungTrail) JobTimeline(ctx context.Context, _, _ string) ([]*sluicev1.TimelineEvent, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (hungTrail) QueryAttempts(ctx context.Context, _ string, _ analytics.AttemptQuery) ([]*sluicev1.AttemptRecord, string, error) {
	<-ctx.Done()
	return nil, "", ctx.Err()
}

func (hungTrail) JobsWithEvent(ctx context.Context, _, _ string, _ []string) (map[string]bool, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestJobTimelineWhileClickHouseHangs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := auditServerWith(t, f, api.AuditConfig{Trail: hungTrail{}, TrailTimeout: 200 * time.Millisecond}, nil)
	id := f.seedDead(t, "acme", "q", "http://a.example/hook", "HTTP 500", 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := auditClient(url, "sk_acme").GetJobTimeline(ctx, connect.NewRequest(&sluicev1.GetJobTimelineRequest{JobId: id}))
	if err != nil || resp.Msg.Source != "projection" || len(resp.Msg.Events) != 2 {
		t.Fatalf("timeline with ClickHouse hung: %v, %v; want 2 events from the projection", resp, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("timeline with ClickHouse hung took %s; want about the 200ms trail timeout", took)
	}
}

// TestJobTimelineWhileClickHouseLags reads a real ClickHouse that holds
// only part of a job's history: the read model answers until ClickHouse
// has caught up.
func TestJobTimelineWhileClickHouseLags(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("SLUICE_TEST_CLICKHOUSE_DSN")
	if dsn == "" {
		t.Skip("CLICKHOUSE NOT TESTED: SLUICE_TEST_CLICKHOUSE_DSN is unset (the README's test command starts ClickHouse and sets it)")
	}
	db := fmt.Sprintf("sluice_api_audit_%d", time.Now().UnixNano())
	conn, err := analytics.Open(analytics.DBConfig{DSN: dsn, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		conn.Close()
	})
	if _, err := analytics.Migrate(ctx, conn, db, time.Now()); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	url := auditServerWith(t, f, api.AuditConfig{Trail: analytics.NewReader(conn, db)}, nil)
	id := f.seedDead(t, "acme", "q", "http://a.example/hook", "HTTP 500", 1)[0] // enqueued and attempted at t0
	insert := func(offset int64, typ string, attempt int32, at time.Time) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".sluice_events (topic, partition, offset, tenant_id, event_id, type, job_id, attempt, "+
			"status_code, outcome, actor_kind, actor_id, occurred_at, occurred_at_us, inserted_at)")
		if err != nil {
			t.Fatal(err)
		}
		status, outcome := int32(0), ""
		if attempt > 0 {
			status, outcome = 500, "DEAD"
		}
		if err := b.Append("sluice.events", int32(0), offset, "acme", fmt.Sprintf("ev%d", offset), typ, id, attempt,
			status, outcome, "system", "delivery", at, at.UnixMicro(), time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	timeline := func() *sluicev1.GetJobTimelineResponse {
		t.Helper()
		resp, err := auditClient(url, "sk_acme").GetJobTimeline(ctx, connect.NewRequest(&sluicev1.GetJobTimelineRequest{JobId: id}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}

	insert(0, "job.enqueued", 0, t0)
	if got := timeline(); got.Source != "projection" || len(got.Events) != 2 {
		t.Errorf("ClickHouse holding the enqueue only: %d events from %s; want the read model's 2 (enqueue, dead attempt)", len(got.Events), got.Source)
	}
	insert(1, "job.attempted", 1, t0.Add(time.Millisecond))
	if got := timeline(); got.Source != "clickhouse" || len(got.Events) != 2 || got.Events[1].EventId != "ev1" {
		t.Errorf("ClickHouse caught up: %v from %s; want its 2 events", got.Events, got.Source)
	}
}

// tenantEndpoints is an endpoint store holding endpoint ids per tenant;
// replay validation only reads single endpoints, and the embedded nil
// store answers nothing else.
type tenantEndpoints struct {
	api.EndpointStore
	ids map[string][]string
}

func (e tenantEndpoints) Endpoint(tenantID, id string) (*eventv1.EndpointConfig, error) {
	if !slices.Contains(e.ids[tenantID], id) {
		return nil, fmt.Errorf("endpoint %s: %w", id, tenancy.ErrUnknownEndpoint)
	}
	return &eventv1.EndpointConfig{TenantId: tenantID, Endpoint: &sluicev1.Endpoint{Id: id, Url: "http://a.example/" + id}}, nil
}

func TestReplayTargetOverrideEndpoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := auditServerWith(t, f, api.AuditConfig{}, tenantEndpoints{ids: map[string][]string{"acme": {"ep_1"}}})
	f.seedDead(t, "acme", "q", "http://a.example/hook", "HTTP 500", 2)
	f.seedDead(t, "globex", "q", "http://a.example/hook", "HTTP 500", 2)
	sel := &sluicev1.ReplaySelection{CreatedAfter: timestamppb.New(t0.Add(-time.Second)), CreatedBefore: timestamppb.New(t0.Add(time.Hour))}
	to := func(id string) *sluicev1.Target {
		return &sluicev1.Target{Kind: &sluicev1.Target_EndpointId{EndpointId: id}}
	}
	ctx := context.Background()
	before := len(f.log.calls())

	_, err := replayClient(url, "sk_acme").ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: sel, ReplayId: "r1", TargetOverride: to("ep_missing")}))
	wantError(t, err, connect.CodeInvalidArgument, "targetOverride.target.endpointId")
	_, err = replayClient(url, "sk_globex").ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: sel, ReplayId: "r1", TargetOverride: to("ep_1")}))
	wantError(t, err, connect.CodeInvalidArgument, "targetOverride.target.endpointId") // acme's endpoint
	if got := len(f.log.calls()); got != before {
		t.Errorf("%d appends after rejected replays; want none", got-before)
	}

	resp, err := replayClient(url, "sk_acme").ReplayJobs(ctx, connect.NewRequest(&sluicev1.ReplayJobsRequest{Selection: sel, ReplayId: "r1", TargetOverride: to("ep_1")}))
	if err != nil || resp.Msg.Enqueued != 2 {
		t.Fatalf("replay to acme's ep_1: %v, %v; want 2 enqueued", resp, err)
	}
	for _, id := range resp.Msg.JobIds {
		snaps, err := f.store.JobSnapshots(ctx, "acme", []string{id})
		if err != nil || snaps[id].Spec.GetTarget().GetEndpointId() != "ep_1" {
			t.Errorf("replayed job %s: %v, %v; want it sent to ep_1", id, snaps[id], err)
		}
	}
}
