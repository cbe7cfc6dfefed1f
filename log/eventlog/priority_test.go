package eventlog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
)

func TestRunnerServesHigherPriorityFirstUnderBacklog(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		const lows, highs = 200, 20
		app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		var recs []*kgo.Record
		for i := range lows + highs {
			class := "low"
			if i >= lows {
				class = "high"
			}
			recs = append(recs, &kgo.Record{
				Topic: c.Topics.Events(), Key: []byte("one-key"), Value: fmt.Appendf(nil, "%s-%d", class, i),
				Headers: []kgo.RecordHeader{{Key: eventlog.HeaderPriority, Value: []byte(class)}},
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := app.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			order []string
			done  = make(chan struct{})
		)
		r := startRunner(t, eventlog.RunnerConfig{
			Brokers: c.Brokers, Group: "prio-" + eventlog.NewID(), Topics: []string{c.Topics.Events()},
			MaxInFlight: 1, Priority: eventlog.RecordPriority,
			Handler: func(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, error) {
				time.Sleep(time.Millisecond) // a backlog builds behind the one slot
				mu.Lock()
				defer mu.Unlock()
				order = append(order, priorityName(rec))
				if len(order) == lows+highs {
					close(done)
				}
				return nil, nil
			},
		})
		defer stopRunner(t, r)
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("handled %d of %d records", len(order), lows+highs)
		}
		mu.Lock()
		defer mu.Unlock()
		// The first fetch may hand over some low records before the high
		// ones arrive; after that every high record goes first.
		lastHigh := 0
		for i, class := range order {
			if class == "high" {
				lastHigh = i
			}
		}
		if lastHigh >= lows/2 {
			t.Fatalf("the last high-priority record ran %dth of %d; want all %d high ones early", lastHigh+1, len(order), highs)
		}
	})
}

// priorityName is rec's priority class by name.
func priorityName(rec *kgo.Record) string {
	switch eventlog.RecordPriority(rec) {
	case eventlog.PriorityHigh:
		return "high"
	case eventlog.PriorityLow:
		return "low"
	}
	return "normal"
}
