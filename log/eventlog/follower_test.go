package eventlog_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
)

// TestFollowerIsCurrentAfterATransactionalTail: a transaction's commit
// marker as a partition's last record must not keep Start (or Sync) from
// returning.
func TestFollowerIsCurrentAfterATransactionalTail(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		if err := app.Append(ctx, &kgo.Record{Topic: c.Topics.Config(), Key: []byte("a"), Value: []byte("1")}); err != nil {
			t.Fatal(err)
		}
		if err := app.AppendAtomic(ctx, []*kgo.Record{{Topic: c.Topics.Config(), Key: []byte("a"), Value: []byte("2")}}); err != nil {
			t.Fatal(err)
		}
		var folded atomic.Int64
		f, err := eventlog.NewFollower(eventlog.FollowerConfig{Brokers: c.Brokers, Topic: c.Topics.Config(),
			Fold: func(*kgo.Record) { folded.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Stop(ctx)
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		if err := f.Start(sctx); err != nil {
			t.Fatalf("Start: %v", err)
		}
		if n := folded.Load(); n != 2 {
			t.Fatalf("folded %d records, want the 2 data records (not the marker)", n)
		}
		if err := f.Append(sctx, "b", []byte("3")); err != nil || folded.Load() != 3 {
			t.Fatalf("Append: %v, folded %d; want nil, 3", err, folded.Load())
		}
	})
}
