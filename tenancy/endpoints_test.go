package tenancy_test

import (
	"context"
	"errors"
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

func TestEndpointHealthFoldsIntoEndpoint(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		newDir := func() *tenancy.Directory {
			d, err := tenancy.NewDirectory(tenancy.Config{Brokers: c.Brokers, Topic: c.Topics.Config()})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Stop(context.Background()) })
			return d
		}
		d := newDir()
		app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(app.Close)
		now := time.Now()
		actor := &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "test"}
		put := func(cfg *eventv1.EndpointConfig) {
			t.Helper()
			if err := d.PutEndpoint(ctx, cfg, actor, now); err != nil {
				t.Fatal(err)
			}
		}
		health := func(h *eventv1.EndpointHealth) {
			t.Helper()
			rec, err := d.EndpointHealthRecord(h, actor, now)
			if err != nil {
				t.Fatal(err)
			}
			if err := app.AppendAtomic(ctx, []*kgo.Record{rec}); err != nil {
				t.Fatal(err)
			}
			if err := d.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		get := func(d *tenancy.Directory) *eventv1.EndpointConfig {
			t.Helper()
			cfg, err := d.Endpoint("ten_1", "ep_1")
			if err != nil {
				t.Fatal(err)
			}
			return cfg
		}
		settings := &eventv1.EndpointConfig{TenantId: "ten_1", EnableId: "en_1", Endpoint: &sluicev1.Endpoint{Id: "ep_1", Url: "https://a.example/"}}
		put(settings)
		since := timestamppb.New(now.Add(-time.Hour))
		health(&eventv1.EndpointHealth{TenantId: "ten_1", EndpointId: "ep_1", EnableId: "en_1", FailingSince: since,
			Disabled: true, DisabledReason: "gone", DisabledAt: timestamppb.New(now)})
		before, _ := d.EndpointEnableOffset()
		if got := get(d); !got.Endpoint.Disabled || got.Endpoint.DisabledReason != "gone" || !got.FailingSince.AsTime().Equal(since.AsTime()) {
			t.Fatalf("with health: %v, want disabled (gone) and failing since an hour ago", got)
		}
		if s, _ := d.EndpointSettings("ten_1", "ep_1"); s.Endpoint.Disabled || s.FailingSince != nil {
			t.Fatal("health leaked into the settings")
		}

		// An edit under the same enable keeps the automatic disable.
		edited := proto.CloneOf(settings)
		edited.Endpoint.Url = "https://b.example/"
		put(edited)
		if got := get(d); !got.Endpoint.Disabled || got.Endpoint.Url != "https://b.example/" {
			t.Fatalf("after an edit: disabled %v url %s, want still disabled with the new url", got.Endpoint.Disabled, got.Endpoint.Url)
		}

		// A new enable overrides it and releases parked messages.
		enabled := proto.CloneOf(edited)
		enabled.EnableId = "en_2"
		put(enabled)
		if got := get(d); got.Endpoint.Disabled || got.FailingSince != nil {
			t.Fatalf("after the enable: disabled %v failing since %v, want a fresh start", got.Endpoint.Disabled, got.FailingSince)
		}
		if after, _ := d.EndpointEnableOffset(); after <= before {
			t.Errorf("enable offset %d, want past %d", after, before)
		}
		// Health judged under the old enable, landing late, is ignored.
		health(&eventv1.EndpointHealth{TenantId: "ten_1", EndpointId: "ep_1", EnableId: "en_1", FailingSince: since,
			Disabled: true, DisabledReason: "late", DisabledAt: timestamppb.New(now)})
		if got := get(d); got.Endpoint.Disabled {
			t.Fatal("a disable judged before the enable took effect")
		}
		// A second node replaying the topic agrees.
		if got := get(newDir()); got.Endpoint.Disabled || got.Endpoint.Url != "https://b.example/" {
			t.Errorf("replayed: disabled %v url %s", got.Endpoint.Disabled, got.Endpoint.Url)
		}

		if err := d.DeleteEndpoint(ctx, "ten_1", "ep_1"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Endpoint("ten_1", "ep_1"); !errors.Is(err, tenancy.ErrUnknownEndpoint) {
			t.Errorf("deleted endpoint: got %v, want ErrUnknownEndpoint", err)
		}
	})
}
