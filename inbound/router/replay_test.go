package router

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/inbound/receiver"
	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/log/eventlogtest"
)

// captured collects what a replay appends.
type captured struct{ recs []*kgo.Record }

func (c *captured) AppendAtomic(_ context.Context, recs []*kgo.Record) error {
	c.recs = append(c.recs, recs...)
	return nil
}

func TestReplayRoutesTheTimeRangeOfOneSource(t *testing.T) {
	t.Parallel()
	eventlogtest.Run(t, func(t *testing.T, c *eventlogtest.Cluster) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		other := githubSource()
		other.Id = "src_other"
		r := newRouter(t, githubSource(), other)
		r.cfg.Topics = c.Topics
		app, err := eventlog.NewAppender(eventlog.AppenderConfig{Brokers: c.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()

		// Requests a minute apart: d-0 .. d-4 of src_gh, one of
		// src_other, and d-2 repeated.
		t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
		var recs []*kgo.Record
		add := func(src, delivery string, at time.Time) {
			req := request(src, "push", delivery, `{}`)
			req.ReceivedAt = timestamppb.New(at)
			rec, err := receiver.Encode(c.Topics.Inbox(), req)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
		}
		for i := range 5 {
			add("src_gh", "d-"+string(rune('0'+i)), t0.Add(time.Duration(i)*time.Minute))
		}
		add("src_other", "d-2", t0.Add(2*time.Minute))
		add("src_gh", "d-2", t0.Add(2*time.Minute+time.Second))
		if err := app.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}

		out := &captured{}
		rp, err := NewReplayer(r, ReplayerConfig{Brokers: c.Brokers, Log: out, IdleTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// [t0+1m, t0+3m): d-1, d-2 and its repeat; not d-3, not src_other.
		res, err := rp.Replay(ctx, "ten_1", "src_gh", t0.Add(time.Minute), t0.Add(3*time.Minute), "rp-1")
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 3 {
			t.Errorf("requests: got %d, want 3 (d-1, d-2 twice)", res.Requests)
		}
		// Each request matches "push" (pushes, ep_1, ep_2) and "*" (audit):
		// 4 jobs per delivery, the repeat adding none.
		if res.Jobs != 8 || len(out.recs) != 8 {
			t.Errorf("jobs: got %d (%d records), want 8", res.Jobs, len(out.recs))
		}
		for _, rec := range out.recs {
			ev, err := eventlog.DecodeEvent(rec)
			if err != nil {
				t.Fatal(err)
			}
			key := ev.GetJobEnqueued().GetSpec().GetIdempotencyKey()
			if want := "inbound-replay/rp-1/src_gh/d-"; len(key) < len(want) || key[:len(want)] != want {
				t.Errorf("replayed job key %q, want it under %s", key, want)
			}
			if d := key[len("inbound-replay/rp-1/src_gh/"):][:3]; d != "d-1" && d != "d-2" {
				t.Errorf("replayed %s, outside the range", d)
			}
		}
		// Another tenant replays nothing of it.
		if res, err := rp.Replay(ctx, "ten_2", "src_gh", t0, t0.Add(time.Hour), "rp-2"); err != nil || res.Requests != 0 {
			t.Errorf("another tenant's replay: got %+v, %v; want nothing", res, err)
		}
	})
}
