package api

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	"github.com/sluicehq/sluice/retrytiers"
	"github.com/sluicehq/sluice/retrytiers/delayline"
)

// failureRecords are the records that end a worker's failed attempt: the
// job.attempted, then the timer of the next attempt or the dead letter,
// as the job's retry policy decides.
func failureRecords(topics eventlog.Topics, tenantID string, snap *projections.JobSnapshot, l projections.Lease, errText string, permanent bool, actor *eventv1.Actor, now time.Time) ([]*kgo.Record, *eventv1.JobAttempted, error) {
	attempt := &eventv1.JobAttempted{Attempt: l.Attempt, Error: errText}
	budgetAttempt := int(l.Attempt - max(l.BudgetStart, 1) + 1)
	decision := retrytiers.ForJob(snap.Spec).Decide(budgetAttempt, retrytiers.Failure{NotRetryable: permanent}, now, rand.Float64)
	meta := eventlog.Meta{TenantID: tenantID, JobID: l.JobID, OccurredAt: now, Actor: actor}
	history := append(slices.Clip(snap.Attempts), attempt)
	var follow *kgo.Record
	if decision.Dead {
		attempt.Outcome, attempt.Reason = eventv1.Outcome_OUTCOME_DEAD, decision.Reason
		dl := &eventv1.DeadLetter{
			TenantId: tenantID, JobId: l.JobID, Spec: snap.Spec, Attempts: history,
			Reason: decision.Reason, DiedAt: timestamppb.New(now),
		}
		value, err := proto.Marshal(dl)
		if err != nil {
			return nil, nil, fmt.Errorf("encode dead letter of job %s: %w", l.JobID, err)
		}
		follow = &kgo.Record{Topic: topics.DLQ(), Key: []byte(l.JobID), Value: value}
	} else {
		due := now.Add(decision.Wait)
		attempt.Outcome, attempt.NextAttemptAt = eventv1.Outcome_OUTCOME_RETRY, timestamppb.New(due)
		next := eventlog.NewEvent(meta, &eventv1.JobReady{
			Attempt: l.Attempt + 1, BudgetStart: l.BudgetStart, Spec: snap.Spec, History: history,
		})
		var err error
		if follow, err = delayline.Schedule(topics, next, due, now); err != nil {
			return nil, nil, err
		}
	}
	ev := eventlog.NewEvent(meta, attempt)
	rec, err := eventlog.EncodeEvent(topics.Events(), ev)
	if err != nil {
		return nil, nil, err
	}
	return []*kgo.Record{rec, follow}, attempt, nil
}
