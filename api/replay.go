package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// ReplayStore selects the jobs a replay sends round again.
type ReplayStore interface {
	SelectJobs(ctx context.Context, tenantID string, sel projections.ReplaySelection, cursor string, limit int) ([]*projections.JobSnapshot, string, error)
}

// ReplayService implements sluice.v1.ReplayService.
type ReplayService struct {
	store     ReplayStore
	trail     AuditTrail    // answers event-type filters when set
	endpoints EndpointStore // checks a target override's endpoint; nil: none exists
	log       Appender
	topics    eventlog.Topics
	now       func() time.Time
	logger    *slog.Logger
}

var _ sluicev1connect.ReplayServiceHandler = (*ReplayService)(nil)

var (
	jobReplayID   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	eventTypeName = regexp.MustCompile(`^[a-z]+(\.[a-z_]+)+$`)
)

// replayKeyPrefix starts the idempotency keys of the jobs one replay
// makes.
func replayKeyPrefix(replayID string) string { return "sluice-replay/" + replayID + "/" }

// ReplayJobs re-enqueues one page of the selected jobs, or counts them.
func (s *ReplayService) ReplayJobs(ctx context.Context, req *connect.Request[sluicev1.ReplayJobsRequest]) (*connect.Response[sluicev1.ReplayJobsResponse], error) {
	m := req.Msg
	p := principalFrom(ctx)
	sel, cerr := replaySelection(m, s.trail != nil)
	if cerr == nil && m.TargetOverride != nil {
		// The override's endpoint must be one of the tenant's.
		cerr = checkEndpointTarget(s.endpoints, p.TenantID, &eventv1.JobSpec{Target: m.TargetOverride}, "targetOverride.")
	}
	if cerr != nil {
		return nil, cerr
	}
	if sel.EventType != "" && s.trail != nil {
		sel.HasEvent = func(ctx context.Context, ids []string) (map[string]bool, error) {
			return s.trail.JobsWithEvent(ctx, p.TenantID, sel.EventType, ids)
		}
	}
	size := int(m.PageSize)
	switch {
	case size == 0:
		size = 100
	case size < 0 || size > 1000:
		return nil, fieldError(connect.CodeInvalidArgument, "pageSize", "%d is outside 0..1000", size)
	}
	if m.DryRun {
		return s.count(ctx, p.TenantID, sel, m.Cursor)
	}
	snaps, next, err := s.store.SelectJobs(ctx, p.TenantID, sel, m.Cursor, size)
	if err != nil {
		return nil, s.selectError(ctx, err)
	}
	now := s.now()
	resp := &sluicev1.ReplayJobsResponse{Matched: int32(len(snaps)), NextCursor: next}
	recs := make([]*kgo.Record, 0, len(snaps))
	for _, snap := range snaps {
		rec, id, err := s.replayRecord(p.TenantID, p.KeyID, m, snap, now)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		recs = append(recs, rec)
		resp.JobIds = append(resp.JobIds, id)
	}
	if len(recs) > 0 {
		if err := s.log.AppendAtomic(ctx, recs); err != nil {
			s.logger.ErrorContext(ctx, "append replayed jobs", "jobs", len(recs), "error", err)
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("appending the replayed jobs failed; nothing was enqueued, retry with the same cursor"))
		}
	}
	resp.Enqueued = int32(len(recs))
	return connect.NewResponse(resp), nil
}

// replaySelection validates a request's selection, target and replay id.
// With a complete audit trail any event type can be asked for;
// otherwise only those the read model knows.
func replaySelection(m *sluicev1.ReplayJobsRequest, anyEventType bool) (projections.ReplaySelection, *connect.Error) {
	sel := m.GetSelection()
	var out projections.ReplaySelection
	for _, f := range []struct {
		name string
		ts   *timestamppb.Timestamp
		to   *time.Time
	}{{"selection.createdAfter", sel.GetCreatedAfter(), &out.CreatedAfter}, {"selection.createdBefore", sel.GetCreatedBefore(), &out.CreatedBefore}} {
		if f.ts == nil {
			return out, fieldError(connect.CodeInvalidArgument, f.name, "required")
		}
		if err := f.ts.CheckValid(); err != nil {
			return out, fieldError(connect.CodeInvalidArgument, f.name, "%v", err)
		}
		*f.to = f.ts.AsTime()
	}
	if !out.CreatedAfter.Before(out.CreatedBefore) {
		return out, fieldError(connect.CodeInvalidArgument, "selection.createdBefore", "must be after createdAfter")
	}
	if sel.GetQueue() != "" && !queueName.MatchString(sel.GetQueue()) {
		return out, fieldError(connect.CodeInvalidArgument, "selection.queue", "%q is not a queue name", sel.GetQueue())
	}
	if _, ok := sluicev1.JobState_name[int32(sel.GetState())]; !ok {
		return out, fieldError(connect.CodeInvalidArgument, "selection.state", "unknown state %d", sel.GetState())
	}
	if t := sel.GetEventType(); t != "" {
		if _, ok := projections.ReplayEventTypes[t]; !ok && !(anyEventType && eventTypeName.MatchString(t)) {
			return out, fieldError(connect.CodeInvalidArgument, "selection.eventType",
				"%q is not job.enqueued, job.attempted, job.cancelled or job.retried", t)
		}
	}
	if m.TargetOverride != nil {
		if m.TargetOverride.GetKind() == nil {
			return out, fieldError(connect.CodeInvalidArgument, "targetOverride", "set url or endpointId")
		}
		if cerr := validateTarget(m.TargetOverride, "targetOverride."); cerr != nil {
			return out, cerr
		}
	}
	if !m.DryRun && !jobReplayID.MatchString(m.ReplayId) {
		if m.ReplayId == "" {
			return out, fieldError(connect.CodeInvalidArgument, "replayId", "required unless dryRun")
		}
		return out, fieldError(connect.CodeInvalidArgument, "replayId", "%q: want 1-64 of A-Z a-z 0-9 . _ -", m.ReplayId)
	}
	out.Queue, out.Target, out.State, out.EventType = sel.GetQueue(), sel.GetTarget(), sel.GetState(), sel.GetEventType()
	if m.ReplayId != "" {
		out.SkipKeyPrefix = replayKeyPrefix(m.ReplayId)
	}
	return out, nil
}

// count counts every job the selection matches from cursor on.
func (s *ReplayService) count(ctx context.Context, tenantID string, sel projections.ReplaySelection, cursor string) (*connect.Response[sluicev1.ReplayJobsResponse], error) {
	var n int
	for {
		snaps, next, err := s.store.SelectJobs(ctx, tenantID, sel, cursor, 1000)
		if err != nil {
			return nil, s.selectError(ctx, err)
		}
		n += len(snaps)
		if next == "" {
			return connect.NewResponse(&sluicev1.ReplayJobsResponse{Matched: int32(n)}), nil
		}
		cursor = next
	}
}

// replayRecord is the job.enqueued of snap's replay: a new job with the
// original's spec (and the override's target), linked to the original by
// its causation id, its id derived from the replay id and the original's.
func (s *ReplayService) replayRecord(tenantID, keyID string, m *sluicev1.ReplayJobsRequest, snap *projections.JobSnapshot, now time.Time) (*kgo.Record, string, error) {
	spec := proto.CloneOf(snap.Spec)
	spec.IdempotencyKey = replayKeyPrefix(m.ReplayId) + snap.Job.Id
	spec.CreatedAt = timestamppb.New(now)
	spec.RunAt = nil
	if m.TargetOverride != nil {
		spec.Target = m.TargetOverride
	}
	id := eventlog.KeyedJobID(tenantID, spec.IdempotencyKey)
	ev := eventlog.NewEvent(eventlog.Meta{
		TenantID: tenantID, JobID: id, CausationID: snap.Job.Id, OccurredAt: now,
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: keyID},
	}, &eventv1.JobEnqueued{Spec: spec})
	rec, err := eventlog.EncodeEvent(s.topics.Events(), ev)
	if err != nil {
		return nil, "", fmt.Errorf("encode replay of job %s: %w", snap.Job.Id, err)
	}
	return rec, id, nil
}

func (s *ReplayService) selectError(ctx context.Context, err error) error {
	var bad *projections.FieldError
	if errors.As(err, &bad) {
		return fieldError(connect.CodeInvalidArgument, bad.Field, "%s", bad.Reason)
	}
	s.logger.ErrorContext(ctx, "select jobs to replay", "error", err)
	return connect.NewError(connect.CodeUnavailable, errors.New("reading the jobs to replay failed; retry"))
}
