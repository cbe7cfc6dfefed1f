package eventlog

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// SchemaVersion is the version of the event bodies this build writes.
const SchemaVersion = 1

// Event types, as written in Event.type.
const (
	TypeJobEnqueued      = "job.enqueued"
	TypeJobAttempted     = "job.attempted"
	TypeJobCancelled     = "job.cancelled"
	TypeJobReady         = "job.ready"
	TypeJobRetried       = "job.retried"
	TypeJobPurged        = "job.purged"
	TypeJobClaimed       = "job.claimed"
	TypeJobLeaseExtended = "job.lease_extended"
	TypeJobParked        = "job.parked"
)

// Meta is the envelope of an event, less what the body determines.
type Meta struct {
	TenantID string
	// JobID is the subject of the event and the record key.
	JobID string
	// EventID is the event's unique id; NewID when empty.
	EventID string
	// CausationID is the event or request that caused this one.
	CausationID string
	Actor       *eventv1.Actor
	// OccurredAt is when the transition happened.
	OccurredAt time.Time
}

// NewEvent wraps a body in its envelope.
func NewEvent(m Meta, body any) *eventv1.Event {
	if m.EventID == "" {
		m.EventID = NewID()
	}
	ev := &eventv1.Event{
		TenantId:      m.TenantID,
		EventId:       m.EventID,
		SchemaVersion: SchemaVersion,
		OccurredAt:    timestamppb.New(m.OccurredAt),
		CausationId:   m.CausationID,
		Actor:         m.Actor,
		JobId:         m.JobID,
	}
	switch b := body.(type) {
	case *eventv1.JobEnqueued:
		ev.Type, ev.Body = TypeJobEnqueued, &eventv1.Event_JobEnqueued{JobEnqueued: b}
	case *eventv1.JobAttempted:
		ev.Type, ev.Body = TypeJobAttempted, &eventv1.Event_JobAttempted{JobAttempted: b}
	case *eventv1.JobCancelled:
		ev.Type, ev.Body = TypeJobCancelled, &eventv1.Event_JobCancelled{JobCancelled: b}
	case *eventv1.JobReady:
		ev.Type, ev.Body = TypeJobReady, &eventv1.Event_JobReady{JobReady: b}
	case *eventv1.JobRetried:
		ev.Type, ev.Body = TypeJobRetried, &eventv1.Event_JobRetried{JobRetried: b}
	case *eventv1.JobPurged:
		ev.Type, ev.Body = TypeJobPurged, &eventv1.Event_JobPurged{JobPurged: b}
	case *eventv1.JobClaimed:
		ev.Type, ev.Body = TypeJobClaimed, &eventv1.Event_JobClaimed{JobClaimed: b}
	case *eventv1.JobLeaseExtended:
		ev.Type, ev.Body = TypeJobLeaseExtended, &eventv1.Event_JobLeaseExtended{JobLeaseExtended: b}
	case *eventv1.JobParked:
		ev.Type, ev.Body = TypeJobParked, &eventv1.Event_JobParked{JobParked: b}
	default:
		if !setEndpointBody(ev, body) {
			panic(fmt.Sprintf("eventlog: unknown event body %T", body))
		}
	}
	return ev
}

// Header keys set on every event record, so consumers can skip records
// without decoding them.
const (
	HeaderType   = "sluice-type"
	HeaderTenant = "sluice-tenant"
	// HeaderPriority is on records that make a job runnable (job.enqueued,
	// job.ready) of a job with a priority other than normal: "high" or
	// "low". Runners order their backlog by it (see RecordPriority).
	HeaderPriority = "sluice-priority"
)

// EncodeEvent turns ev into a record for topic, keyed by its job id.
func EncodeEvent(topic string, ev *eventv1.Event) (*kgo.Record, error) {
	value, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s event %s: %w", ev.Type, ev.EventId, err)
	}
	headers := make([]kgo.RecordHeader, 2, 3)
	headers[0] = kgo.RecordHeader{Key: HeaderType, Value: []byte(ev.Type)}
	headers[1] = kgo.RecordHeader{Key: HeaderTenant, Value: []byte(ev.TenantId)}
	if p := priorityHeader(ev); p != "" {
		headers = append(headers, kgo.RecordHeader{Key: HeaderPriority, Value: []byte(p)})
	}
	return &kgo.Record{Topic: topic, Key: []byte(ev.JobId), Value: value, Headers: headers}, nil
}

// priorityHeader is the HeaderPriority value of ev, or "" for none.
func priorityHeader(ev *eventv1.Event) string {
	var spec *eventv1.JobSpec
	switch b := ev.Body.(type) {
	case *eventv1.Event_JobEnqueued:
		spec = b.JobEnqueued.GetSpec()
	case *eventv1.Event_JobReady:
		spec = b.JobReady.GetSpec()
	}
	switch spec.GetPriority() {
	case sluicev1.Priority_PRIORITY_HIGH:
		return "high"
	case sluicev1.Priority_PRIORITY_LOW:
		return "low"
	}
	return ""
}

// Priority classes of records, as RecordPriority returns them: lower runs
// first.
const (
	PriorityHigh = iota
	PriorityNormal
	PriorityLow
	numPriorities
)

// RecordPriority returns the priority class of rec from its
// HeaderPriority: PriorityHigh, PriorityNormal or PriorityLow.
func RecordPriority(rec *kgo.Record) int {
	for _, h := range rec.Headers {
		if h.Key == HeaderPriority {
			switch string(h.Value) {
			case "high":
				return PriorityHigh
			case "low":
				return PriorityLow
			}
		}
	}
	return PriorityNormal
}

// DecodeEvent reads the event in rec.
func DecodeEvent(rec *kgo.Record) (*eventv1.Event, error) {
	ev := new(eventv1.Event)
	if err := proto.Unmarshal(rec.Value, ev); err != nil {
		return nil, fmt.Errorf("decode event at %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
	}
	return ev, nil
}

// RecordType returns the event type from rec's headers, or "" when absent.
func RecordType(rec *kgo.Record) string {
	for _, h := range rec.Headers {
		if h.Key == HeaderType {
			return string(h.Value)
		}
	}
	return ""
}
