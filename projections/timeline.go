package projections

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// JobTimeline returns what the read model knows of a job's history, as
// events oldest first: its enqueue, every finished attempt (at the time
// it ended), the latest retry by hand and a cancel. The log has more
// (job.ready, leases, every retry); the analytics role's ClickHouse
// holds all of it. It returns ErrNotFound for a job the tenant does not
// have.
func (s *Store) JobTimeline(ctx context.Context, tenantID, jobID string) ([]*sluicev1.TimelineEvent, error) {
	snaps, err := s.JobSnapshots(ctx, tenantID, []string{jobID})
	if err != nil {
		return nil, err
	}
	snap, ok := snaps[jobID]
	if !ok {
		return nil, ErrNotFound
	}
	return timeline(snap), nil
}

// timeline lays out a snapshot's events in the order they happened.
func timeline(snap *JobSnapshot) []*sluicev1.TimelineEvent {
	job := snap.Job
	events := []*sluicev1.TimelineEvent{{Type: "job.enqueued", At: job.CreatedAt}}
	attemptActor := "system:delivery"
	if job.Target == nil {
		attemptActor = "" // a worker's; the read model keeps only the latest
	}
	for _, a := range snap.Attempts {
		end := a.GetStartedAt().AsTime().Add(a.GetLatency().AsDuration())
		events = append(events, &sluicev1.TimelineEvent{
			Type: "job.attempted", At: timestamppb.New(end), Attempt: a.GetAttempt(),
			StatusCode: a.GetStatusCode(), Latency: a.GetLatency(), Error: a.GetError(),
			Actor: attemptActor, Outcome: outcomeName(a.GetOutcome()), Reason: a.GetReason(),
		})
	}
	if r := job.LastRetry; r != nil {
		events = append(events, &sluicev1.TimelineEvent{
			Type: "job.retried", At: r.At, Attempt: r.BudgetStart, Reason: r.Reason, Actor: r.Actor,
		})
	}
	if job.State == sluicev1.JobState_JOB_STATE_CANCELLED {
		events = append(events, &sluicev1.TimelineEvent{Type: "job.cancelled", At: job.UpdatedAt})
	}
	// The enqueue stays first; the rest in the order they happened, a
	// retry by hand after the attempt it follows.
	slices.SortStableFunc(events[1:], func(a, b *sluicev1.TimelineEvent) int {
		return a.At.AsTime().Compare(b.At.AsTime())
	})
	return events
}

// outcomeName is how the timeline writes an outcome: "succeeded",
// "retry", "dead"; "" when unspecified.
func outcomeName(o eventv1.Outcome) string {
	if o == eventv1.Outcome_OUTCOME_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_"))
}
