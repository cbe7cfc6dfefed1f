package tenancy_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/log/eventlogtest"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/tenancy"
)

func TestQueueSettingsReachEveryNode(t *testing.T) {
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
			t.Cleanup(func() { _ = d.Stop(ctx) })
			return d
		}
		a, b := newDir(), newDir()
		if q := a.Queue("acme", "emails"); q.Paused || q.MaxAttempts != 0 || q.Name != "emails" {
			t.Fatalf("unconfigured queue: %v; want zero settings", q)
		}
		actor := &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: "key_1"}
		q, err := a.UpdateQueue(ctx, "acme", "emails", actor, time.Now(), func(q *sluicev1.Queue) {
			q.Paused, q.MaxAttempts, q.ConcurrencyLimit, q.RateLimit = true, 4, 10, 2.5
		})
		if err != nil || !q.Paused || q.UpdatedAt == nil {
			t.Fatalf("UpdateQueue: %v, %v", q, err)
		}
		// Only the fields a change sets change.
		if _, err := a.UpdateQueue(ctx, "acme", "emails", actor, time.Now(), func(q *sluicev1.Queue) { q.Paused = false }); err != nil {
			t.Fatal(err)
		}
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		paused, limit, rate := b.QueueControl("acme", "emails")
		if paused || limit != 10 || rate != 2.5 || b.Queue("acme", "emails").MaxAttempts != 4 {
			t.Fatalf("other node: paused %t limit %d rate %v attempts %d; want false 10 2.5 4",
				paused, limit, rate, b.Queue("acme", "emails").MaxAttempts)
		}
		if got := b.ConfiguredQueues("acme"); len(got) != 1 || got[0].Name != "emails" {
			t.Fatalf("ConfiguredQueues = %v", got)
		}
		if got := b.ConfiguredQueues("globex"); len(got) != 0 {
			t.Fatalf("another tenant sees %v", got)
		}
	})
}
