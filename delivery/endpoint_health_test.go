package delivery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/tenancy"
)

// directorySource is an EndpointSource over a tenant directory, as cmd
// wires it.
type directorySource struct{ dir *tenancy.Directory }

func (s directorySource) Endpoint(tenantID, endpointID string) (*eventv1.EndpointConfig, bool) {
	cfg, err := s.dir.Endpoint(tenantID, endpointID)
	return cfg, err == nil
}

func (s directorySource) EndpointHealthRecord(h *eventv1.EndpointHealth, actor *eventv1.Actor, now time.Time) (*kgo.Record, error) {
	return s.dir.EndpointHealthRecord(h, actor, now)
}

func (s directorySource) EndpointEnableOffset() (int64, <-chan struct{}) {
	return s.dir.EndpointEnableOffset()
}

// TestDeliveryKeepsEndpointSettings checks that what delivery records
// about an endpoint never undoes an API change made while its request
// was in flight.
func TestDeliveryKeepsEndpointSettings(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
		apiActor := &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: "key_1"}

		// during runs as the receiver handles a delivery: the API's change.
		var during func()
		status := http.StatusGone
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			during()
			w.WriteHeader(status)
		}))
		t.Cleanup(srv.Close)
		d, err := New(Config{Topics: c.Topics, Secrets: secrets{}, Guard: Guard{AllowLoopback: true}, Endpoints: directorySource{dir}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		deliver := func(offset int64) {
			t.Helper()
			outs, err := d.Handle(ctx, record(t, &eventv1.JobEnqueued{Spec: endpointSpec("ep_1", "", []byte("{}"))}, offset))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range outs {
				if o.Topic == c.Topics.Config() && !strings.HasPrefix(string(o.Key), "endpointhealth/") {
					t.Errorf("delivery wrote config record %s: it may write only endpoint health", o.Key)
				}
			}
			if err := app.AppendAtomic(ctx, outs); err != nil {
				t.Fatal(err)
			}
			if err := dir.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		settings := &eventv1.EndpointConfig{
			TenantId: "ten_1", EnableId: "en_1",
			Endpoint: &sluicev1.Endpoint{Id: "ep_1", Url: srv.URL + "/v1", Secret: testSecret},
			Secrets:  []*eventv1.EndpointSecret{{Secret: testSecret}},
		}
		if err := dir.PutEndpoint(ctx, settings, apiActor, now); err != nil {
			t.Fatal(err)
		}

		// A 410 disables the endpoint while the API rotates its secret
		// and moves its URL.
		moved := proto.CloneOf(settings)
		moved.Endpoint.Url, moved.Endpoint.Secret = srv.URL+"/v2", otherSecret
		moved.Secrets = []*eventv1.EndpointSecret{{Secret: otherSecret}, {Secret: testSecret, ExpiresAt: timestamppb.New(now.Add(time.Hour))}}
		during = func() {
			if err := dir.PutEndpoint(ctx, moved, apiActor, now); err != nil {
				t.Error(err)
			}
		}
		deliver(1)
		got, err := dir.Endpoint("ten_1", "ep_1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Endpoint.Url != srv.URL+"/v2" || got.Endpoint.Secret != otherSecret || len(got.Secrets) != 2 {
			t.Errorf("after the disable: url %s secret %s.., %d secrets; want the API's /v2, rotated secret and 2 secrets",
				got.Endpoint.Url, got.Endpoint.Secret[:12], len(got.Secrets))
		}
		if !got.Endpoint.Disabled || !strings.Contains(got.Endpoint.DisabledReason, "410") {
			t.Errorf("after a 410: disabled %v reason %q, want disabled naming the 410", got.Endpoint.Disabled, got.Endpoint.DisabledReason)
		}
		if s, _ := dir.EndpointSettings("ten_1", "ep_1"); s.Endpoint.Disabled {
			t.Error("the automatic disable was written into the endpoint's settings")
		}

		// The API enables it (a new enable); an attempt succeeds while the
		// API disables it again: the success must not undo that disable.
		enabled := proto.CloneOf(moved)
		enabled.EnableId = "en_2"
		if err := dir.PutEndpoint(ctx, enabled, apiActor, now); err != nil {
			t.Fatal(err)
		}
		if got, _ := dir.Endpoint("ten_1", "ep_1"); got.Endpoint.Disabled || got.FailingSince != nil {
			t.Fatalf("enabled by the API: disabled %v failing since %v, want a fresh start", got.Endpoint.Disabled, got.FailingSince)
		}
		h, err := dir.EndpointHealthRecord(&eventv1.EndpointHealth{
			TenantId: "ten_1", EndpointId: "ep_1", EnableId: "en_2", FailingSince: timestamppb.New(now.Add(-time.Hour)),
		}, deliveryActor, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := app.Append(ctx, h); err != nil {
			t.Fatal(err)
		}
		if err := dir.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		paused := proto.CloneOf(enabled)
		paused.Endpoint.Disabled, paused.Endpoint.DisabledReason = true, "maintenance"
		status = http.StatusOK
		during = func() {
			if err := dir.PutEndpoint(ctx, paused, apiActor, now); err != nil {
				t.Error(err)
			}
		}
		deliver(2)
		got, _ = dir.Endpoint("ten_1", "ep_1")
		if !got.Endpoint.Disabled || got.Endpoint.DisabledReason != "maintenance" {
			t.Errorf("user's disable during a successful attempt: disabled %v reason %q, want it kept", got.Endpoint.Disabled, got.Endpoint.DisabledReason)
		}
	})
}
