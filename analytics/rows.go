package analytics

import (
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// eventRow is one row of sluice_events.
type eventRow struct {
	Topic        string
	Partition    int32
	Offset       int64
	TenantID     string
	EventID      string
	Type         string
	JobID        string
	Queue        string
	EndpointID   string
	TargetURL    string
	Attempt      int32
	StatusCode   int32
	LatencyUS    int64
	Error        string
	Outcome      string
	Reason       string
	ActorKind    string
	ActorID      string
	CausationID  string
	OccurredAt   time.Time
	InsertedAt   time.Time
	hasJobTarget bool        // the event names the job's queue and target
	attempt      *attemptRow // the attempt row of a job.attempted
}

// setTarget fills in the job's queue and target, in the attempt row too.
func (r *eventRow) setTarget(t jobTarget) {
	r.Queue, r.EndpointID, r.TargetURL = t.queue, t.endpointID, t.url
	if r.attempt != nil {
		r.attempt.Queue, r.attempt.EndpointID, r.attempt.TargetURL = t.queue, t.endpointID, t.url
	}
}

// eventColumns are the columns of an eventRow insert, in values() order.
const eventColumns = "topic, partition, offset, tenant_id, event_id, type, job_id, queue, endpoint_id, target_url, " +
	"attempt, status_code, latency_us, error, outcome, reason, actor_kind, actor_id, causation_id, " +
	"occurred_at, occurred_at_us, inserted_at"

func (r *eventRow) values() []any {
	return []any{
		r.Topic, r.Partition, r.Offset, r.TenantID, r.EventID, r.Type, r.JobID, r.Queue, r.EndpointID, r.TargetURL,
		r.Attempt, r.StatusCode, r.LatencyUS, r.Error, r.Outcome, r.Reason, r.ActorKind, r.ActorID, r.CausationID,
		r.OccurredAt.UTC(), r.OccurredAt.UnixMicro(), r.InsertedAt.UTC(),
	}
}

// attemptRow is one row of sluice_attempts.
type attemptRow struct {
	TenantID        string
	JobID           string
	Queue           string
	EndpointID      string
	TargetURL       string
	Attempt         int32
	StatusCode      int32
	LatencyUS       int64
	Error           string
	ResponseExcerpt string
	Outcome         string
	ActorID         string
	StartedAt       time.Time
	Topic           string
	Partition       int32
	Offset          int64
	InsertedAt      time.Time
}

// attemptColumns are the columns of an attemptRow insert, in values()
// order.
const attemptColumns = "tenant_id, job_id, queue, endpoint_id, target_url, attempt, status_code, latency_us, " +
	"error, response_excerpt, outcome, actor_id, started_at, started_at_us, topic, partition, offset, inserted_at"

func (r *attemptRow) values() []any {
	return []any{
		r.TenantID, r.JobID, r.Queue, r.EndpointID, r.TargetURL, r.Attempt, r.StatusCode, r.LatencyUS,
		r.Error, r.ResponseExcerpt, r.Outcome, r.ActorID, r.StartedAt.UTC(), r.StartedAt.UnixMicro(),
		r.Topic, r.Partition, r.Offset, r.InsertedAt.UTC(),
	}
}

// rowsOf returns the rows of one event record: its event row, and an
// attempt row when it is a job.attempted. Queue and target are those the
// event names; the sink fills them in for events that name none.
func rowsOf(rec *kgo.Record, ev *eventv1.Event, now time.Time) (*eventRow, *attemptRow) {
	r := &eventRow{
		Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		TenantID: ev.GetTenantId(), EventID: ev.GetEventId(), Type: ev.GetType(), JobID: ev.GetJobId(),
		CausationID: ev.GetCausationId(), OccurredAt: ev.GetOccurredAt().AsTime(), InsertedAt: now,
		ActorKind: actorKind(ev.GetActor().GetKind()), ActorID: ev.GetActor().GetId(),
	}
	if ev.GetOccurredAt() == nil {
		r.OccurredAt = rec.Timestamp
	}
	var spec *eventv1.JobSpec
	switch b := ev.GetBody().(type) {
	case *eventv1.Event_JobEnqueued:
		spec = b.JobEnqueued.GetSpec()
	case *eventv1.Event_JobReady:
		spec = b.JobReady.GetSpec()
		r.Attempt = b.JobReady.GetAttempt()
	case *eventv1.Event_JobAttempted:
		a := b.JobAttempted
		r.Attempt, r.StatusCode, r.Error = a.GetAttempt(), a.GetStatusCode(), a.GetError()
		r.LatencyUS = a.GetLatency().AsDuration().Microseconds()
		r.Outcome, r.Reason = outcomeName(a.GetOutcome()), a.GetReason()
	case *eventv1.Event_JobCancelled:
		r.Reason = b.JobCancelled.GetReason()
	case *eventv1.Event_JobRetried:
		r.Attempt, r.Reason = b.JobRetried.GetBudgetStart(), b.JobRetried.GetReason()
	case *eventv1.Event_JobPurged:
		r.Reason = b.JobPurged.GetReason()
	case *eventv1.Event_JobClaimed:
		r.Attempt = b.JobClaimed.GetAttempt()
	case *eventv1.Event_JobLeaseExtended:
		r.Attempt = b.JobLeaseExtended.GetAttempt()
	case *eventv1.Event_JobParked:
		r.Attempt = b.JobParked.GetAttempt()
	}
	if spec != nil {
		r.hasJobTarget = true
		r.Queue = spec.GetQueue()
		r.EndpointID, r.TargetURL = targetOf(spec.GetTarget())
	}
	a, ok := ev.GetBody().(*eventv1.Event_JobAttempted)
	if !ok {
		return r, nil
	}
	started := a.JobAttempted.GetStartedAt().AsTime()
	if a.JobAttempted.GetStartedAt() == nil {
		started = r.OccurredAt
	}
	return r, &attemptRow{
		TenantID: r.TenantID, JobID: r.JobID, Attempt: r.Attempt, StatusCode: r.StatusCode,
		LatencyUS: r.LatencyUS, Error: r.Error, Outcome: r.Outcome, ActorID: r.ActorID,
		ResponseExcerpt: strings.ToValidUTF8(string(a.JobAttempted.GetResponseExcerpt()), "\uFFFD"),
		StartedAt:       started,
		Topic:           r.Topic, Partition: r.Partition, Offset: r.Offset, InsertedAt: now,
	}
}

func targetOf(t *sluicev1.Target) (endpointID, url string) {
	return t.GetEndpointId(), t.GetUrl()
}

// actorKind is how an actor kind is stored: "api_key", "system",
// "worker"; "" when unspecified.
func actorKind(k eventv1.Actor_Kind) string {
	if k == eventv1.Actor_KIND_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "KIND_"))
}

// outcomeName is how an outcome is stored: "SUCCEEDED", "RETRY", "DEAD";
// "" when unspecified.
func outcomeName(o eventv1.Outcome) string {
	if o == eventv1.Outcome_OUTCOME_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(o.String(), "OUTCOME_")
}
