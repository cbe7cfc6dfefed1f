package projections_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestSelectJobs(t *testing.T) {
	runRedis(t, func(t *testing.T, b *backend) {
		store, _ := newStore(t, b)
		l := &partitionLog{}
		ctx := context.Background()
		// j0..j5 created a second apart in queue q; j2 also failed once, j4
		// was cancelled; k1 is in queue other, x1 is another tenant's.
		for i := range 6 {
			mustApply(t, store, l.records(t, enqueued("acme", fmt.Sprintf("j%d", i), "q", t0.Add(time.Duration(i)*time.Second)))...)
		}
		mustApply(t, store, l.records(t,
			attempted("acme", "j2", 1, eventv1.Outcome_OUTCOME_RETRY, 503, t0.Add(10*time.Second)),
			cancelled("acme", "j4", t0.Add(11*time.Second)),
			enqueued("acme", "k1", "other", t0.Add(2*time.Second)),
			enqueued("globex", "x1", "q", t0.Add(2*time.Second)),
		)...)
		sel := projections.ReplaySelection{CreatedAfter: t0.Add(time.Second), CreatedBefore: t0.Add(5 * time.Second), Queue: "q"}

		ids := func(snaps []*projections.JobSnapshot) string {
			var s []string
			for _, snap := range snaps {
				s = append(s, snap.Job.Id)
			}
			return fmt.Sprint(s)
		}
		for _, c := range []struct {
			name string
			sel  func(projections.ReplaySelection) projections.ReplaySelection
			want string
		}{
			{"time range and queue", func(s projections.ReplaySelection) projections.ReplaySelection { return s }, "[j1 j2 j3 j4]"},
			{"every queue", func(s projections.ReplaySelection) projections.ReplaySelection { s.Queue = ""; return s }, "[j1 j2 k1 j3 j4]"},
			{"state", func(s projections.ReplaySelection) projections.ReplaySelection {
				s.State = sluicev1.JobState_JOB_STATE_CANCELLED
				return s
			}, "[j4]"},
			{"event type", func(s projections.ReplaySelection) projections.ReplaySelection {
				s.EventType = "job.attempted"
				return s
			}, "[j2]"},
			{"target URL prefix", func(s projections.ReplaySelection) projections.ReplaySelection {
				s.Target = "https://example.com/"
				return s
			}, "[j1 j2 j3 j4]"},
			{"other target", func(s projections.ReplaySelection) projections.ReplaySelection { s.Target = "ep_1"; return s }, "[]"},
		} {
			got, next, err := store.SelectJobs(ctx, "acme", c.sel(sel), "", 100)
			if err != nil || next != "" || ids(got) != c.want {
				t.Errorf("%s: got %s, next %q, err %v; want %s, no cursor", c.name, ids(got), next, err, c.want)
			}
		}

		// Pages of two, resumed from the cursor.
		var pages []string
		cursor := ""
		for range 5 {
			got, next, err := store.SelectJobs(ctx, "acme", sel, cursor, 2)
			if err != nil {
				t.Fatal(err)
			}
			pages = append(pages, ids(got))
			if cursor = next; cursor == "" {
				break
			}
		}
		if fmt.Sprint(pages) != "[[j1 j2] [j3 j4] []]" && fmt.Sprint(pages) != "[[j1 j2] [j3 j4]]" {
			t.Errorf("pages: got %v, want [j1 j2] then [j3 j4]", pages)
		}

		var bad *projections.FieldError
		if _, _, err := store.SelectJobs(ctx, "acme", sel, "not a cursor", 2); !errors.As(err, &bad) || bad.Field != "cursor" {
			t.Errorf("bad cursor: got %v, want a FieldError on cursor", err)
		}
		empty := sel
		empty.CreatedBefore = empty.CreatedAfter
		if _, _, err := store.SelectJobs(ctx, "acme", empty, "", 2); !errors.As(err, &bad) || bad.Field != "createdBefore" {
			t.Errorf("empty range: got %v, want a FieldError on createdBefore", err)
		}
	})
}

func TestJobTimeline(t *testing.T) {
	runRedis(t, func(t *testing.T, b *backend) {
		store, _ := newStore(t, b)
		l := &partitionLog{}
		mustApply(t, store, l.records(t,
			enqueued("acme", "j1", "q", t0),
			attempted("acme", "j1", 1, eventv1.Outcome_OUTCOME_RETRY, 503, t0.Add(time.Second)),
			attempted("acme", "j1", 2, eventv1.Outcome_OUTCOME_DEAD, 500, t0.Add(2*time.Second)),
			retried("acme", "j1", 3, "", t0.Add(3*time.Second)),
		)...)
		tl, err := store.JobTimeline(context.Background(), "acme", "j1")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range tl {
			got = append(got, fmt.Sprintf("%s/%d/%d/%s/%s", e.Type, e.Attempt, e.StatusCode, e.Outcome, e.Actor))
		}
		want := "[job.enqueued/0/0// job.attempted/1/503/retry/system:delivery job.attempted/2/500/dead/system:delivery job.retried/3/0//api_key:key-1]"
		if fmt.Sprint(got) != want {
			t.Errorf("timeline: got %v, want %s", got, want)
		}
		if _, err := store.JobTimeline(context.Background(), "globex", "j1"); !errors.Is(err, projections.ErrNotFound) {
			t.Errorf("another tenant's job: got %v, want ErrNotFound", err)
		}
	})
}
