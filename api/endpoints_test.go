package api_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/tenancy"
)

// kafkaLog appends to a cluster, records every AppendAtomic call and
// fails the calls fail says.
type kafkaLog struct {
	*eventlog.Appender

	mu     sync.Mutex
	atomic [][]*kgo.Record
	fail   bool
}

func (l *kafkaLog) AppendAtomic(ctx context.Context, recs []*kgo.Record) error {
	l.mu.Lock()
	fail := l.fail
	l.atomic = append(l.atomic, recs)
	l.mu.Unlock()
	if fail {
		return errors.New("broker gone")
	}
	return l.Appender.AppendAtomic(ctx, recs)
}

func (l *kafkaLog) last() []*kgo.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.atomic) == 0 {
		return nil
	}
	return l.atomic[len(l.atomic)-1]
}

// endpointFixture is the API with endpoints in a tenant directory on
// kfake.
type endpointFixture struct {
	c      *eventlogtest.Cluster
	dir    *tenancy.Directory
	log    *kafkaLog
	client sluicev1connect.EndpointServiceClient
}

func newEndpointFixture(t *testing.T) *endpointFixture {
	t.Helper()
	c := eventlogtest.NewKfake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir, err := tenancy.NewDirectory(tenancy.Config{Brokers: c.Brokers, Topic: c.Topics.Config()})
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dir.Stop(context.Background()) })
	app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	store := projections.NewStore(rdb, projections.StoreConfig{Logger: logger})
	f := &endpointFixture{c: c, dir: dir, log: &kafkaLog{Appender: app}}
	h, err := api.NewHandler(api.Config{
		Auth: testKeys, Log: f.log, Jobs: store, DeadLetters: store, Topics: c.Topics, Endpoints: dir, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.client = sluicev1connect.NewEndpointServiceClient(http.DefaultClient, srv.URL, connect.WithInterceptors(bearer("sk_acme")))
	return f
}

func (f *endpointFixture) create(t *testing.T) *sluicev1.Endpoint {
	t.Helper()
	resp, err := f.client.CreateEndpoint(context.Background(), connect.NewRequest(&sluicev1.CreateEndpointRequest{Url: "https://example.com/hook"}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.Endpoint
}

func (f *endpointFixture) get(t *testing.T, id string) *sluicev1.Endpoint {
	t.Helper()
	resp, err := f.client.GetEndpoint(context.Background(), connect.NewRequest(&sluicev1.GetEndpointRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.Endpoint
}

// autoDisable writes the health delivery writes when it disables id.
func (f *endpointFixture) autoDisable(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	settings, err := f.dir.EndpointSettings("acme", id)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec, err := f.dir.EndpointHealthRecord(&eventv1.EndpointHealth{
		TenantId: "acme", EndpointId: id, EnableId: settings.EnableId, FailingSince: timestamppb.New(now.Add(-time.Hour)),
		Disabled: true, DisabledReason: "the endpoint answered 410 Gone", DisabledAt: timestamppb.New(now),
	}, &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "delivery"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.log.Append(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := f.dir.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// endpointEvent decodes the endpoint event among recs, or nil.
func endpointEvent(t *testing.T, topic string, recs []*kgo.Record) *eventv1.Event {
	t.Helper()
	for _, r := range recs {
		if r.Topic != topic {
			continue
		}
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		return &ev
	}
	return nil
}

func TestUpdateEndpointAppendsEventAndSettingsAtomically(t *testing.T) {
	t.Parallel()
	f := newEndpointFixture(t)
	ctx := context.Background()
	ep := f.create(t)
	disable := connect.NewRequest(&sluicev1.UpdateEndpointRequest{Id: ep.Id, Disabled: new(true), DisabledReason: "maintenance"})

	f.log.mu.Lock()
	f.log.fail = true
	f.log.mu.Unlock()
	_, err := f.client.UpdateEndpoint(ctx, disable)
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("disable with the log down: got %v, want unavailable", err)
	}
	if got := f.get(t, ep.Id); got.Disabled {
		t.Fatal("the failed disable changed the endpoint")
	}
	f.log.mu.Lock()
	f.log.fail = false
	f.log.mu.Unlock()

	resp, err := f.client.UpdateEndpoint(ctx, disable)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Msg.Endpoint.Disabled || resp.Msg.Endpoint.DisabledReason != "maintenance" {
		t.Errorf("disable answered %v", resp.Msg.Endpoint)
	}
	recs := f.log.last()
	var settings bool
	for _, r := range recs {
		settings = settings || (r.Topic == f.c.Topics.Config() && string(r.Key) == tenancy.EndpointConfigKey("acme", ep.Id))
	}
	ev := endpointEvent(t, f.c.Topics.Events(), recs)
	if !settings || ev.GetEndpointDisabled().GetReason() != "maintenance" {
		t.Fatalf("one transaction of %d records: settings %v, event %v; want the settings and endpoint.disabled together", len(recs), settings, ev)
	}
}

func TestAutoDisabledEndpointStaysDisabledUntilEnabled(t *testing.T) {
	t.Parallel()
	f := newEndpointFixture(t)
	ctx := context.Background()
	ep := f.create(t)
	f.autoDisable(t, ep.Id)

	// Edits and rotations leave the automatic disable in place.
	url := "https://example.com/v2"
	if _, err := f.client.UpdateEndpoint(ctx, connect.NewRequest(&sluicev1.UpdateEndpointRequest{Id: ep.Id, Url: &url})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.RotateSecret(ctx, connect.NewRequest(&sluicev1.RotateSecretRequest{Id: ep.Id})); err != nil {
		t.Fatal(err)
	}
	got := f.get(t, ep.Id)
	if !got.Disabled || got.DisabledReason != "the endpoint answered 410 Gone" || got.Url != url || got.Secret == ep.Secret {
		t.Fatalf("after an edit and a rotation: %v; want the new url and secret, still disabled for the 410", got)
	}
	if n := len(f.dir.Endpoints("acme")); n != 1 {
		t.Fatalf("%d endpoints listed, want 1", n)
	}

	// Enabling it overrides the automatic disable and starts afresh.
	resp, err := f.client.UpdateEndpoint(ctx, connect.NewRequest(&sluicev1.UpdateEndpointRequest{Id: ep.Id, Disabled: new(false)}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.Endpoint.Disabled || f.get(t, ep.Id).Disabled {
		t.Fatal("enable by the API did not override the automatic disable")
	}
	if ev := endpointEvent(t, f.c.Topics.Events(), f.log.last()); ev.GetEndpointEnabled() == nil {
		t.Errorf("enable appended %v, want endpoint.enabled", ev)
	}
	cfg, err := f.dir.Endpoint("acme", ep.Id)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FailingSince != nil {
		t.Errorf("enabled endpoint still failing since %v", cfg.FailingSince.AsTime())
	}
}

func TestRotateSecretKeepsThreePrevious(t *testing.T) {
	t.Parallel()
	f := newEndpointFixture(t)
	ctx := context.Background()
	ep := f.create(t)
	secrets := []string{ep.Secret}
	for range 5 {
		resp, err := f.client.RotateSecret(ctx, connect.NewRequest(&sluicev1.RotateSecretRequest{Id: ep.Id, Overlap: durationpb.New(time.Hour)}))
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, resp.Msg.Endpoint.Secret)
	}
	cfg, err := f.dir.Endpoint("acme", ep.Id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range cfg.Secrets {
		got = append(got, s.Secret)
	}
	// Newest first: the current secret and the three before it.
	want := []string{secrets[5], secrets[4], secrets[3], secrets[2]}
	if len(got) != len(want) {
		t.Fatalf("after 5 rotations: %d secrets sign, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("secret %d is rotation %d's, want the newest %d", i, len(secrets)-1-i, len(want))
		}
	}
}
