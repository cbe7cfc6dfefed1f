package client

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The API's messages, under names that read well from this package. They
// are the generated protobuf types, so protojson prints them in the
// contract's JSON form.
type (
	// Job is the current state of a job.
	Job = sluicev1.Job
	// JobState is where a job stands in its lifecycle.
	JobState = sluicev1.JobState
	// Priority orders ready jobs of one queue under backlog.
	Priority = sluicev1.Priority
	// DeadLetter is a dead job with its attempts and why it died.
	DeadLetter = sluicev1.DeadLetter
	// DeadLetterFilter selects dead letters; every field set must match.
	DeadLetterFilter = sluicev1.DeadLetterFilter
	// Queue is a queue's settings.
	Queue = sluicev1.Queue
	// QueueInfo is a queue's settings and job counts.
	QueueInfo = sluicev1.QueueInfo
	// QueueUpdate changes the settings that are set in it.
	QueueUpdate = sluicev1.UpdateQueueRequest
	// RetryPolicy is the delay between attempts.
	RetryPolicy = sluicev1.RetryPolicy
	// EnqueueRequest is one job to enqueue, as NewEnqueueRequest builds it.
	EnqueueRequest = sluicev1.EnqueueRequest
)

// Job states.
const (
	JobStateScheduled = sluicev1.JobState_JOB_STATE_SCHEDULED
	JobStateReady     = sluicev1.JobState_JOB_STATE_READY
	JobStateRunning   = sluicev1.JobState_JOB_STATE_RUNNING
	JobStateRetrying  = sluicev1.JobState_JOB_STATE_RETRYING
	JobStateSucceeded = sluicev1.JobState_JOB_STATE_SUCCEEDED
	JobStateDead      = sluicev1.JobState_JOB_STATE_DEAD
	JobStateCancelled = sluicev1.JobState_JOB_STATE_CANCELLED
)

// Priorities, lowest first.
const (
	PriorityLow    = sluicev1.Priority_PRIORITY_LOW
	PriorityNormal = sluicev1.Priority_PRIORITY_NORMAL
	PriorityHigh   = sluicev1.Priority_PRIORITY_HIGH
)

// ParseJobState reads a state as the API spells it ("JOB_STATE_DEAD") or
// short and in any case ("dead").
func ParseJobState(s string) (JobState, error) {
	return parseEnum[JobState](s, "JOB_STATE_", sluicev1.JobState_value, "job state")
}

// ParsePriority reads a priority as the API spells it ("PRIORITY_HIGH")
// or short and in any case ("high").
func ParsePriority(s string) (Priority, error) {
	return parseEnum[Priority](s, "PRIORITY_", sluicev1.Priority_value, "priority")
}

func parseEnum[E ~int32](s, prefix string, values map[string]int32, what string) (E, error) {
	name := upper(s)
	if v, ok := values[name]; ok && v != 0 {
		return E(v), nil
	}
	if v, ok := values[prefix+name]; ok && v != 0 {
		return E(v), nil
	}
	return 0, fmt.Errorf("%s %q: unknown", what, s)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		case c == '-':
			b[i] = '_'
		}
	}
	return string(b)
}

// JSONValue converts any JSON-marshalable Go value to a protobuf Value.
// json.RawMessage and []byte holding JSON pass through as they are.
func JSONValue(v any) (*structpb.Value, error) {
	var raw []byte
	switch x := v.(type) {
	case *structpb.Value:
		return x, nil
	case json.RawMessage:
		raw = x
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode as JSON: %w", err)
		}
		raw = b
	}
	out := new(structpb.Value)
	if err := protojson.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("decode JSON value: %w", err)
	}
	return out, nil
}

// DecodeValue decodes a protobuf Value (a job's payload or result) into v
// as encoding/json would decode its JSON.
func DecodeValue(val *structpb.Value, v any) error {
	raw, err := ValueJSON(val)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// ValueJSON returns the JSON of a protobuf Value; a nil Value is null.
func ValueJSON(val *structpb.Value) (json.RawMessage, error) {
	if val == nil {
		return json.RawMessage("null"), nil
	}
	b, err := protojson.Marshal(val)
	if err != nil {
		return nil, fmt.Errorf("encode value as JSON: %w", err)
	}
	return b, nil
}
