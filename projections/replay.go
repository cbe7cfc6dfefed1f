package projections

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// ReplaySelection selects jobs to send round again; every field set must
// match.
type ReplaySelection struct {
	// CreatedAfter: jobs created at or after it. Required.
	CreatedAfter time.Time
	// CreatedBefore: jobs created before it. Required.
	CreatedBefore time.Time
	// Queue of the job; "" matches every queue.
	Queue string
	// Target is an endpoint id, matched exactly, or an http(s) URL
	// prefix of the job's target URL; "" matches every job.
	Target string
	// State the job is in now; unspecified matches every state.
	State sluicev1.JobState
	// EventType: jobs that have an event of this type; see
	// ReplayEventTypes, or any type HasEvent knows. "" matches every job.
	EventType string
	// HasEvent, when set, answers EventType instead of ReplayEventTypes:
	// which of jobIDs have an event of type EventType (the complete audit
	// trail knows every type).
	HasEvent func(ctx context.Context, jobIDs []string) (map[string]bool, error)
	// SkipKeyPrefix skips jobs whose idempotency key starts with it (the
	// jobs a replay made itself).
	SkipKeyPrefix string
}

// ReplayEventTypes are the event types a selection can ask for, with
// what the read model knows of them: every job was enqueued; a job with
// an attempt was attempted; a cancelled job was cancelled; a job retried
// by hand was retried.
var ReplayEventTypes = map[string]func(*JobSnapshot) bool{
	"job.enqueued":  func(*JobSnapshot) bool { return true },
	"job.attempted": func(s *JobSnapshot) bool { return len(s.Attempts) > 0 },
	"job.cancelled": func(s *JobSnapshot) bool { return s.Job.State == sluicev1.JobState_JOB_STATE_CANCELLED },
	"job.retried":   func(s *JobSnapshot) bool { return s.Job.Retries > 0 },
}

// replayScan is the most index entries one SelectJobs call examines.
const replayScan = 10_000

// SelectJobs returns the snapshots of up to limit of the tenant's jobs
// that sel matches, oldest (by creation) first, starting after cursor
// ("" starts at CreatedAfter), and the cursor of the next call, "" when
// the selection is exhausted. A call examines at most 10,000 jobs, so it
// may return fewer than limit jobs with a cursor to go on from.
func (s *Store) SelectJobs(ctx context.Context, tenantID string, sel ReplaySelection, cursor string, limit int) ([]*JobSnapshot, string, error) {
	match, err := sel.matcher()
	if err != nil {
		return nil, "", err
	}
	start := "[" + timePrefix(sel.CreatedAfter)
	if cursor != "" {
		after, err := parsePageToken(cursor)
		if err != nil {
			return nil, "", &FieldError{Field: "cursor", Reason: "malformed"}
		}
		start = "(" + after
	}
	stop := "(" + timePrefix(sel.CreatedBefore)
	key := s.keys.index(tenantID, sel.Queue, sel.State)
	var out []*JobSnapshot
	for scanned := 0; scanned < replayScan; {
		chunk := min(500, replayScan-scanned)
		members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: key, Start: start, Stop: stop, ByLex: true, Count: int64(chunk),
		}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("select jobs to replay: %w", err)
		}
		if len(members) == 0 {
			return out, "", nil
		}
		ids := make([]string, len(members))
		for i, m := range members {
			ids[i], _ = memberJobID(m)
		}
		snaps, err := s.JobSnapshots(ctx, tenantID, ids)
		if err != nil {
			return nil, "", err
		}
		var had map[string]bool
		if sel.EventType != "" && sel.HasEvent != nil {
			if had, err = sel.HasEvent(ctx, ids); err != nil {
				return nil, "", fmt.Errorf("select jobs with %s events: %w", sel.EventType, err)
			}
		}
		for i, id := range ids {
			snap, ok := snaps[id]
			if !ok || !match(snap) || (had != nil && !had[id]) {
				continue
			}
			out = append(out, snap)
			if len(out) == limit {
				if i == len(ids)-1 && len(members) < chunk {
					return out, "", nil
				}
				return out, pageToken(members[i]), nil
			}
		}
		scanned += len(members)
		start = "(" + members[len(members)-1]
		if len(members) < chunk {
			return out, "", nil
		}
	}
	return out, pageToken(start[1:]), nil
}

// matcher checks sel and returns what tests a snapshot against the
// fields the index does not cover.
func (sel ReplaySelection) matcher() (func(*JobSnapshot) bool, error) {
	switch {
	case sel.CreatedAfter.IsZero():
		return nil, &FieldError{Field: "createdAfter", Reason: "required"}
	case sel.CreatedBefore.IsZero():
		return nil, &FieldError{Field: "createdBefore", Reason: "required"}
	case !sel.CreatedAfter.Before(sel.CreatedBefore):
		return nil, &FieldError{Field: "createdBefore", Reason: "must be after createdAfter"}
	}
	if _, known := sluicev1.JobState_name[int32(sel.State)]; !known {
		return nil, &FieldError{Field: "state", Reason: "unknown state"}
	}
	hasEvent := func(*JobSnapshot) bool { return true }
	if sel.EventType != "" && sel.HasEvent == nil {
		var ok bool
		if hasEvent, ok = ReplayEventTypes[sel.EventType]; !ok {
			return nil, &FieldError{Field: "eventType", Reason: fmt.Sprintf("%q is not job.enqueued, job.attempted, job.cancelled or job.retried", sel.EventType)}
		}
	}
	return func(snap *JobSnapshot) bool {
		if sel.SkipKeyPrefix != "" && strings.HasPrefix(snap.Spec.GetIdempotencyKey(), sel.SkipKeyPrefix) {
			return false
		}
		return hasEvent(snap) && targetMatches(snap.Job.GetTarget(), sel.Target)
	}, nil
}

// targetMatches reports whether a job's target is the endpoint id want
// or has a URL starting with want (an http(s) URL).
func targetMatches(t *sluicev1.Target, want string) bool {
	switch {
	case want == "":
		return true
	case strings.HasPrefix(want, "http://") || strings.HasPrefix(want, "https://"):
		return strings.HasPrefix(t.GetUrl(), want)
	default:
		return t.GetEndpointId() == want
	}
}
