package api_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/inbound/sources"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/projections"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// newSourcesServer serves the API with a source catalog on kfake.
func newSourcesServer(t *testing.T) string {
	t.Helper()
	c := eventlogtest.NewKfake(t)
	cat, err := sources.New(sources.Config{Brokers: c.Brokers, Topic: c.Topics.Config()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cat.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cat.Stop(context.Background()) })
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	store := projections.NewStore(rdb, projections.StoreConfig{Logger: logger})
	h, err := api.NewHandler(api.Config{
		Auth: testKeys, Log: &foldingLog{store: store}, Jobs: store, DeadLetters: store, Topics: topics,
		Sources: api.SourceConfig{Store: cat, PublicURL: "https://hooks.example.com/"},
		Logger:  logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func sourceClient(url, key string) sluicev1connect.SourceServiceClient {
	return sluicev1connect.NewSourceServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearer(key)))
}

func githubVerification(secret string) *sluicev1.Verification {
	return &sluicev1.Verification{Kind: &sluicev1.Verification_Github{Github: &sluicev1.GitHubVerification{Secret: secret}}}
}

func TestSourceServiceLifecycle(t *testing.T) {
	t.Parallel()
	url := newSourcesServer(t)
	ctx := context.Background()
	acme, globex := sourceClient(url, "sk_acme"), sourceClient(url, "sk_globex")

	created, err := acme.CreateSource(ctx, connect.NewRequest(&sluicev1.CreateSourceRequest{
		Name: "github", Verification: githubVerification("gh-secret-1"),
		Routes: []*sluicev1.Route{{EventTypes: []string{"push"}, Queue: "pushes"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	src := created.Msg.Source
	if !strings.HasPrefix(src.Id, "src_") || src.IngestUrl != "https://hooks.example.com/in/"+src.Id || src.CreatedAt == nil {
		t.Fatalf("created: got id %q ingestUrl %q createdAt %v; want src_..., https://hooks.example.com/in/<id>, set", src.Id, src.IngestUrl, src.CreatedAt)
	}

	got, err := acme.GetSource(ctx, connect.NewRequest(&sluicev1.GetSourceRequest{Id: src.Id}))
	if err != nil || got.Msg.Source.Name != "github" || got.Msg.Source.IngestUrl != src.IngestUrl {
		t.Fatalf("GetSource: got %v, %v; want the source", got, err)
	}
	_, err = globex.GetSource(ctx, connect.NewRequest(&sluicev1.GetSourceRequest{Id: src.Id}))
	wantCode(t, err, connect.CodeNotFound)
	if list, err := globex.ListSources(ctx, connect.NewRequest(&sluicev1.ListSourcesRequest{})); err != nil || len(list.Msg.Sources) != 0 {
		t.Fatalf("another tenant's ListSources: got %v, %v; want none", list, err)
	}

	updated, err := acme.UpdateSource(ctx, connect.NewRequest(&sluicev1.UpdateSourceRequest{
		Id: src.Id, Name: "github-renamed", Verification: githubVerification("gh-secret-2"),
		Routes: []*sluicev1.Route{{Queue: "all"}},
	}))
	if err != nil || updated.Msg.Source.Name != "github-renamed" || !updated.Msg.Source.CreatedAt.AsTime().Equal(src.CreatedAt.AsTime()) {
		t.Fatalf("UpdateSource: got %v, %v; want the renamed source with its creation time", updated, err)
	}
	list, err := acme.ListSources(ctx, connect.NewRequest(&sluicev1.ListSourcesRequest{}))
	if err != nil || len(list.Msg.Sources) != 1 || list.Msg.Sources[0].Routes[0].Queue != "all" {
		t.Fatalf("ListSources after update: got %v, %v", list, err)
	}

	_, err = globex.DeleteSource(ctx, connect.NewRequest(&sluicev1.DeleteSourceRequest{Id: src.Id}))
	wantCode(t, err, connect.CodeNotFound)
	if _, err := acme.DeleteSource(ctx, connect.NewRequest(&sluicev1.DeleteSourceRequest{Id: src.Id})); err != nil {
		t.Fatal(err)
	}
	_, err = acme.GetSource(ctx, connect.NewRequest(&sluicev1.GetSourceRequest{Id: src.Id}))
	wantCode(t, err, connect.CodeNotFound)

	// A deleted source cannot be replayed.
	_, err = acme.ReplayInbox(ctx, connect.NewRequest(&sluicev1.ReplayInboxRequest{SourceId: src.Id}))
	wantCode(t, err, connect.CodeNotFound)
}

func TestCreateSourceNamesBadFields(t *testing.T) {
	t.Parallel()
	url := newSourcesServer(t)
	acme := sourceClient(url, "sk_acme")
	cases := []struct {
		name   string
		req    *sluicev1.CreateSourceRequest
		fields []string
	}{
		{"no name, no verification", &sluicev1.CreateSourceRequest{}, []string{"name", "verification"}},
		{"short secret", &sluicev1.CreateSourceRequest{Name: "x", Verification: githubVerification("short")}, []string{"verification.github.secret"}},
		{"bad hmac", &sluicev1.CreateSourceRequest{Name: "x", Verification: &sluicev1.Verification{Kind: &sluicev1.Verification_Hmac{Hmac: &sluicev1.HMACVerification{
			Secret: "long enough secret", Header: "X-Sig", Algorithm: "md5"}}}}, []string{"verification.hmac.algorithm"}},
		{"bad routes", &sluicev1.CreateSourceRequest{Name: "x", Verification: githubVerification("gh-secret-1"), Routes: []*sluicev1.Route{
			{}, {Queue: "bad queue!"}, {EndpointIds: []string{""}}, {Queue: "ok", EventTypes: []string{"has space"}},
		}}, []string{"routes[0]", "routes[1].queue", "routes[2].endpointIds[0]", "routes[3].eventTypes[0]"}},
		{"bad event type header", &sluicev1.CreateSourceRequest{Name: "x", Verification: githubVerification("gh-secret-1"), EventTypeHeader: "X Event"}, []string{"eventTypeHeader"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := acme.CreateSource(context.Background(), connect.NewRequest(c.req))
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
				t.Fatalf("got %v, want invalid_argument", err)
			}
			for _, f := range c.fields {
				if !strings.Contains(cerr.Message(), f+": ") {
					t.Errorf("message %q does not name %s", cerr.Message(), f)
				}
			}
		})
	}
	if list, _ := acme.ListSources(context.Background(), connect.NewRequest(&sluicev1.ListSourcesRequest{})); len(list.Msg.Sources) != 0 {
		t.Fatalf("after refused creates: got %d sources, want none", len(list.Msg.Sources))
	}
}

func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Errorf("got %v, want %v", err, code)
	}
}

func TestReplayInboxValidates(t *testing.T) {
	t.Parallel()
	url := newSourcesServer(t)
	ctx := context.Background()
	acme := sourceClient(url, "sk_acme")
	created, err := acme.CreateSource(ctx, connect.NewRequest(&sluicev1.CreateSourceRequest{
		Name: "github", Verification: githubVerification("gh-secret-1"), Routes: []*sluicev1.Route{{Queue: "q"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := created.Msg.Source.Id
	now := time.Now()
	cases := []struct {
		name  string
		req   *sluicev1.ReplayInboxRequest
		code  connect.Code
		field string
	}{
		{"no source", &sluicev1.ReplayInboxRequest{}, connect.CodeInvalidArgument, "sourceId"},
		{"unknown source", &sluicev1.ReplayInboxRequest{SourceId: "src_nope", From: timestamppb.New(now)}, connect.CodeNotFound, ""},
		{"no from", &sluicev1.ReplayInboxRequest{SourceId: id}, connect.CodeInvalidArgument, "from"},
		{"to before from", &sluicev1.ReplayInboxRequest{SourceId: id, From: timestamppb.New(now), To: timestamppb.New(now.Add(-time.Minute))}, connect.CodeInvalidArgument, "to"},
		{"bad replay id", &sluicev1.ReplayInboxRequest{SourceId: id, From: timestamppb.New(now.Add(-time.Hour)), ReplayId: "has space"}, connect.CodeInvalidArgument, "replayId"},
		{"no replayer on this node", &sluicev1.ReplayInboxRequest{SourceId: id, From: timestamppb.New(now.Add(-time.Hour))}, connect.CodeFailedPrecondition, ""},
	}
	for _, c := range cases {
		_, err := acme.ReplayInbox(ctx, connect.NewRequest(c.req))
		var cerr *connect.Error
		if !errors.As(err, &cerr) || cerr.Code() != c.code || !strings.HasPrefix(cerr.Message(), c.field) {
			t.Errorf("%s: got %v, want %v naming %q", c.name, err, c.code, c.field)
		}
	}
}
