package projections

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// decodeJob reads a job hash written by fold.lua.
func decodeJob(h map[string]string) (*sluicev1.Job, error) {
	state, ok := parseState(h["state"])
	if !ok {
		return nil, fmt.Errorf("decode job %s: unknown state %q", h["id"], h["state"])
	}
	d := hashDecoder{h: h}
	j := &sluicev1.Job{
		Id:             h["id"],
		Queue:          h["queue"],
		State:          state,
		Attempt:        d.int32("attempt"),
		MaxAttempts:    d.int32("max_attempts"),
		Payload:        payload(h["payload"]),
		IdempotencyKey: h["idempotency_key"],
		CreatedAt:      d.time("created_at"),
		UpdatedAt:      d.time("updated_at"),
		NextAttemptAt:  d.time("next_attempt_at"),
		LastError:      h["last_error"],
		Priority:       sluicev1.Priority(d.int32("priority")),
		RunAt:          d.time("run_at"),
		Timeout:        d.duration("timeout"),
		LastStatusCode: d.int32("last_status_code"),
		Retries:        d.int32("retries"),
		LastRetry:      lastRetry(h, &d),
	}
	if state == sluicev1.JobState_JOB_STATE_RUNNING {
		if n := d.int32("running_attempt"); n > 0 {
			j.Attempt = n
		}
		j.LeaseExpiresAt = d.time("lease_expires_at")
	}
	j.WorkerId = h["worker_id"]
	if r := h["result"]; r != "" {
		j.Result = payload(r)
	}
	if t := new(sluicev1.Target); d.message("target", t) {
		j.Target = t
	}
	if p := new(sluicev1.RetryPolicy); d.message("retry_policy", p) {
		j.RetryPolicy = p
	}
	if s := h["headers"]; s != "" {
		if err := json.Unmarshal([]byte(s), &j.Headers); err != nil {
			d.fail("headers", err)
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode job %s: %w", j.Id, d.err)
	}
	return j, nil
}

// live reports whether h is a job's hash: not missing, not a purged
// job's tombstone.
func live(h map[string]string) bool {
	return len(h) > 0 && h["tombstone"] == ""
}

// lastRetry reads the latest retry by hand of a job, or nil.
func lastRetry(h map[string]string, d *hashDecoder) *sluicev1.JobRetry {
	at := d.time("retried_at")
	if at == nil {
		return nil
	}
	from, _ := parseState(h["retried_from"])
	return &sluicev1.JobRetry{
		At:                at,
		Reason:            h["retry_reason"],
		Actor:             h["retried_by"],
		FromState:         from,
		PayloadOverridden: h["payload_overridden"] == "1",
		BudgetStart:       d.int32("budget_start"),
	}
}

// payload parses a stored payload; one that is not JSON comes back as a
// string.
func payload(s string) *structpb.Value {
	if s == "" {
		return nil
	}
	v := new(structpb.Value)
	if err := protojson.Unmarshal([]byte(s), v); err != nil {
		return structpb.NewStringValue(s)
	}
	return v
}

// hashDecoder reads typed fields of a hash, keeping the first error.
type hashDecoder struct {
	h   map[string]string
	err error
}

func (d *hashDecoder) fail(field string, err error) {
	if d.err == nil {
		d.err = fmt.Errorf("field %s: %w", field, err)
	}
}

func (d *hashDecoder) int64(field string) (int64, bool) {
	s, ok := d.h[field]
	if !ok || s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		d.fail(field, err)
		return 0, false
	}
	return n, true
}

func (d *hashDecoder) int32(field string) int32 {
	n, _ := d.int64(field)
	return int32(n)
}

func (d *hashDecoder) time(field string) *timestamppb.Timestamp {
	n, ok := d.int64(field)
	if !ok {
		return nil
	}
	return timestamppb.New(time.UnixMicro(n))
}

func (d *hashDecoder) duration(field string) *durationpb.Duration {
	n, ok := d.int64(field)
	if !ok {
		return nil
	}
	return durationpb.New(time.Duration(n))
}

// message reads a protojson field into m and reports whether it was
// there.
func (d *hashDecoder) message(field string, m proto.Message) bool {
	s, ok := d.h[field]
	if !ok || s == "" {
		return false
	}
	if err := protojson.Unmarshal([]byte(s), m); err != nil {
		d.fail(field, err)
		return false
	}
	return true
}
