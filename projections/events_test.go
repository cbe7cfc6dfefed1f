package projections_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const testTopic = "sluice.events"

// t0 is when test histories begin.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func enqueued(tenant, job, queue string, at time.Time) *eventv1.Event {
	return eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: job, OccurredAt: at}, &eventv1.JobEnqueued{
		Spec: &eventv1.JobSpec{
			Queue:       queue,
			Payload:     []byte(`{"n":1,"tags":["a","b"]}`),
			Target:      &sluicev1.Target{Kind: &sluicev1.Target_Url{Url: "https://example.com/hook"}},
			MaxAttempts: 5,
			Headers:     map[string]string{"x-test": "1"},
			CreatedAt:   timestamppb.New(at),
		},
	})
}

func attempted(tenant, job string, attempt int32, outcome eventv1.Outcome, status int32, at time.Time) *eventv1.Event {
	a := &eventv1.JobAttempted{Attempt: attempt, Outcome: outcome, StatusCode: status, StartedAt: timestamppb.New(at)}
	if outcome != eventv1.Outcome_OUTCOME_SUCCEEDED {
		a.Error = fmt.Sprintf("HTTP %d", status)
	}
	if outcome == eventv1.Outcome_OUTCOME_RETRY {
		a.NextAttemptAt = timestamppb.New(at.Add(5 * time.Second))
	}
	return eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: job, OccurredAt: at}, a)
}

func cancelled(tenant, job string, at time.Time) *eventv1.Event {
	return eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: job, OccurredAt: at}, &eventv1.JobCancelled{Reason: "test"})
}

// partitionLog numbers records as one partition of the events topic.
type partitionLog struct {
	partition int32
	next      int64
}

// records encodes evs as the next records of the partition.
func (l *partitionLog) records(t *testing.T, evs ...*eventv1.Event) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, ev := range evs {
		rec, err := eventlog.EncodeEvent(testTopic, ev)
		if err != nil {
			t.Fatalf("encode event: %v", err)
		}
		rec.Partition, rec.Offset = l.partition, l.next
		l.next++
		recs[i] = rec
	}
	return recs
}

func timestampAt(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func ready(tenant, job string, attempt int32, at time.Time) *eventv1.Event {
	return eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: job, OccurredAt: at}, &eventv1.JobReady{Attempt: attempt})
}

func retried(tenant, job string, budget int32, override string, at time.Time) *eventv1.Event {
	return eventlog.NewEvent(eventlog.Meta{
		TenantID: tenant, JobID: job, OccurredAt: at,
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: "key-1"},
	}, &eventv1.JobRetried{Reason: "fixed the receiver", PayloadOverride: []byte(override), BudgetStart: budget})
}

func purged(tenant, job string, at time.Time) *eventv1.Event {
	return eventlog.NewEvent(eventlog.Meta{TenantID: tenant, JobID: job, OccurredAt: at}, &eventv1.JobPurged{Reason: "test"})
}
