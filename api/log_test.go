package api_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestDeadLettersThroughTheLog retries and purges dead letters against
// Kafka (kfake and a real broker): the events land in the events topic,
// visible to committed readers, and the projections role folds them.
func TestDeadLettersThroughTheLog(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		t.Parallel()
		ctx := context.Background()
		srv, store, app := startOnCluster(t, c)
		dl := (&fixture{url: srv.URL}).deadLetters("sk_acme")
		retried, purged := eventlog.NewID(), eventlog.NewID()
		for _, id := range []string{retried, purged} {
			appendDead(t, app, c.Topics, id)
		}
		waitFor(t, "dead jobs in the read model", func() bool {
			return stateIs(store, retried, sluicev1.JobState_JOB_STATE_DEAD) && stateIs(store, purged, sluicev1.JobState_JOB_STATE_DEAD)
		})

		resp, err := dl.RetryDeadLetters(ctx, connect.NewRequest(&sluicev1.RetryDeadLettersRequest{
			Ids: []string{retried}, Reason: "receiver fixed", PayloadOverride: structpb.NewStringValue("new"),
		}))
		if err != nil || resp.Msg.Retried != 1 {
			t.Fatalf("RetryDeadLetters = %v, %v; want 1 retried", resp, err)
		}
		if _, err := dl.PurgeDeadLetters(ctx, connect.NewRequest(&sluicev1.PurgeDeadLettersRequest{Ids: []string{purged}})); err == nil {
			t.Fatalf("PurgeDeadLetters without confirm: got no error")
		}
		presp, err := dl.PurgeDeadLetters(ctx, connect.NewRequest(&sluicev1.PurgeDeadLettersRequest{Ids: []string{purged}, Confirm: true}))
		if err != nil || presp.Msg.Purged != 1 {
			t.Fatalf("PurgeDeadLetters = %v, %v; want 1 purged", presp, err)
		}

		evs := readEvents(t, c, 7) // two jobs enqueued and attempted; retried and ready; purged
		checkRetryEvents(t, evs[retried])
		if got := evs[purged]; len(got) != 3 || got[2].GetJobPurged() == nil || got[2].GetActor().GetId() != "key_acme" {
			t.Errorf("events of the purged job: got %v; want enqueued, attempted, purged by key_acme", got)
		}
		waitFor(t, "the retry and the purge in the read model", func() bool {
			_, err := store.GetJob(ctx, "acme", purged)
			return stateIs(store, retried, sluicev1.JobState_JOB_STATE_READY) && errors.Is(err, projections.ErrNotFound)
		})
		j, err := store.GetJob(ctx, "acme", retried)
		if err != nil || j.Payload.GetStringValue() != "new" || j.LastRetry.GetReason() != "receiver fixed" || j.Attempt != 1 {
			t.Errorf("retried job in the read model = %v, %v; want the new payload, the reason, attempt 1", j, err)
		}
	})
}

// checkRetryEvents checks a retried job's events in log order.
func checkRetryEvents(t *testing.T, evs []*eventv1.Event) {
	t.Helper()
	if len(evs) != 4 {
		t.Fatalf("events of the retried job: got %d, want enqueued, attempted, retried, ready", len(evs))
	}
	r, ready := evs[2], evs[3]
	body := r.GetJobRetried()
	if body == nil || r.Type != eventlog.TypeJobRetried || r.GetActor().GetKind() != eventv1.Actor_KIND_API_KEY ||
		r.GetActor().GetId() != "key_acme" || body.Reason != "receiver fixed" || string(body.PayloadOverride) != `"new"` ||
		body.BudgetStart != 2 || body.FromState != sluicev1.JobState_JOB_STATE_DEAD {
		t.Errorf("third event: got %v; want job.retried by key_acme with the reason, the payload and budget 2", r)
	}
	rb := ready.GetJobReady()
	if rb == nil || rb.Attempt != 2 || rb.BudgetStart != 2 || string(rb.Spec.GetPayload()) != `"new"` ||
		len(rb.History) != 1 || ready.CausationId != r.EventId {
		t.Errorf("fourth event: got %v; want job.ready of attempt 2 caused by the retry, with the new payload", ready)
	}
}

// startOnCluster runs the API over an appender on c and a read model
// kept by a projector, and returns the server, the store and the
// appender.
func startOnCluster(t *testing.T, c *eventlogtest.Cluster) (*httptest.Server, *projections.Store, *eventlog.Appender) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { rdb.Close() })
	store := projections.NewStore(rdb, projections.StoreConfig{Logger: logger})
	proj, err := projections.NewProjector(store, projections.Config{
		Brokers: c.Brokers, Topic: c.Topics.Events(), Group: c.Group("projections"), Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := proj.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proj.Stop(context.Background()) })
	h, err := api.NewHandler(api.Config{Auth: testKeys, Log: app, Jobs: store, DeadLetters: store, Topics: c.Topics, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, store, app
}

// appendDead appends the history of a job of tenant acme that died on
// its first attempt.
func appendDead(t *testing.T, app *eventlog.Appender, topics eventlog.Topics, id string) {
	t.Helper()
	meta := eventlog.Meta{TenantID: "acme", JobID: id, OccurredAt: time.Now()}
	var recs []*kgo.Record
	for _, body := range []any{
		&eventv1.JobEnqueued{Spec: &eventv1.JobSpec{
			Queue: "q", Payload: []byte(`{"n":1}`), MaxAttempts: 1, CreatedAt: timestamppb.Now(),
			Target: &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "https://example.com/"}},
		}},
		&eventv1.JobAttempted{Attempt: 1, StatusCode: 500, Error: "HTTP 500", Outcome: eventv1.Outcome_OUTCOME_DEAD, Reason: "exhausted"},
	} {
		rec, err := eventlog.EncodeEvent(topics.Events(), eventlog.NewEvent(meta, body))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if err := app.Append(context.Background(), recs...); err != nil {
		t.Fatalf("append dead job: %v", err)
	}
}

// readEvents reads want committed events of the events topic and returns
// them by job, in log order.
func readEvents(t *testing.T, c *eventlogtest.Cluster, want int) map[string][]*eventv1.Event {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(c.Topics.Events()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	byJob := make(map[string][]*eventv1.Event)
	n := 0
	deadline := time.Now().Add(30 * time.Second)
	for n < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := eventlog.DecodeEvent(r)
			if err != nil {
				t.Fatal(err)
			}
			byJob[ev.JobId] = append(byJob[ev.JobId], ev)
			n++
		})
	}
	if n != want {
		t.Fatalf("read %d committed events, want %d", n, want)
	}
	return byJob
}

func stateIs(store *projections.Store, id string, want sluicev1.JobState) bool {
	j, err := store.GetJob(context.Background(), "acme", id)
	return err == nil && j.State == want
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
