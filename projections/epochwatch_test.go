package projections_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
	"github.com/sluicehq/sluice/projections"
)

// TestFlushWhileIdleIsRepaired flushes the read model while no events
// arrive: the Projector notices by itself and folds the log again.
func TestFlushWhileIdleIsRepaired(t *testing.T) {
	c := eventlogtest.NewKfake(t)
	runRedis(t, func(t *testing.T, b *backend) {
		store, prefix := newStore(t, b)
		jobs := newE2EJobs("idle-" + b.name)
		app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("NewAppender: %v", err)
		}
		t.Cleanup(app.Close)
		for _, batch := range jobs.batches {
			if err := app.AppendAtomic(context.Background(), encode(t, c.Topics.Events(), batch)); err != nil {
				t.Fatalf("AppendAtomic: %v", err)
			}
		}
		startProjector(t, store, projections.Config{
			Brokers: c.Brokers, Topic: c.Topics.Events(), Group: c.Group("idle-" + b.name),
			MaxBackoff: 200 * time.Millisecond, Logger: testLogger(t),
		})
		waitForStates(t, store, jobs)
		flush(t, b, prefix)
		waitForStates(t, store, jobs)
	})
}
