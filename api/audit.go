package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/analytics"
	"github.com/sluicehq/sluice/projections"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// AuditConfig enables the AuditService and the ReplayService.
type AuditConfig struct {
	// Trail is the ClickHouse audit trail; analytics.Reader implements
	// it. Default: none; timelines come from Timelines and QueryAttempts
	// answers failed_precondition.
	Trail AuditTrail
	// Timelines reads timelines from the read model; projections.Store
	// implements it. Default: none, and the AuditService is not served.
	Timelines TimelineStore
	// Replays selects jobs to replay; projections.Store implements it.
	// Default: none, and the ReplayService is not served.
	Replays ReplayStore
	// TrailTimeout is how long GetJobTimeline waits for Trail before it
	// answers from Timelines. Default DefaultTrailTimeout.
	TrailTimeout time.Duration
}

// DefaultTrailTimeout is AuditConfig.TrailTimeout's default.
const DefaultTrailTimeout = 2 * time.Second

// AuditTrail is the complete audit trail.
type AuditTrail interface {
	JobTimeline(ctx context.Context, tenantID, jobID string) ([]*sluicev1.TimelineEvent, error)
	QueryAttempts(ctx context.Context, tenantID string, q analytics.AttemptQuery) ([]*sluicev1.AttemptRecord, string, error)
	JobsWithEvent(ctx context.Context, tenantID, eventType string, jobIDs []string) (map[string]bool, error)
}

// TimelineStore reads what the read model knows of a job's history.
type TimelineStore interface {
	JobTimeline(ctx context.Context, tenantID, jobID string) ([]*sluicev1.TimelineEvent, error)
}

// AuditService implements sluice.v1.AuditService.
type AuditService struct {
	trail        AuditTrail
	timelines    TimelineStore
	trailTimeout time.Duration // 0: DefaultTrailTimeout
	logger       *slog.Logger
}

var _ sluicev1connect.AuditServiceHandler = (*AuditService)(nil)

// Timeline sources, as GetJobTimelineResponse.source names them.
const (
	sourceClickHouse = "clickhouse"
	sourceProjection = "projection"
)

// GetJobTimeline answers from ClickHouse when there is one, it answers
// within the trail timeout, and it has caught up with the read model;
// from the read model otherwise: when there is no ClickHouse, when it is
// unreachable or slow, or when the sink lags behind the job (ClickHouse
// does not hold the job yet, or holds fewer of its events than the read
// model shows).
func (s *AuditService) GetJobTimeline(ctx context.Context, req *connect.Request[sluicev1.GetJobTimelineRequest]) (*connect.Response[sluicev1.GetJobTimelineResponse], error) {
	id := req.Msg.JobId
	if id == "" {
		return nil, fieldError(connect.CodeInvalidArgument, "jobId", "required")
	}
	tenantID := principalFrom(ctx).TenantID
	projected, perr := s.timelines.JobTimeline(ctx, tenantID, id)
	if s.trail != nil {
		timeout := s.trailTimeout
		if timeout <= 0 {
			timeout = DefaultTrailTimeout
		}
		tctx, cancel := context.WithTimeout(ctx, timeout)
		events, err := s.trail.JobTimeline(tctx, tenantID, id)
		cancel()
		switch {
		case err == nil && perr == nil && projectionAhead(events, projected):
			s.logger.DebugContext(ctx, "clickhouse lags behind the read model; answering from it", "job_id", id)
		case err == nil:
			return connect.NewResponse(&sluicev1.GetJobTimelineResponse{Events: events, Source: sourceClickHouse}), nil
		case !errors.Is(err, analytics.ErrNotFound):
			s.logger.WarnContext(ctx, "read timeline from clickhouse; answering from the read model", "job_id", id, "error", err)
		}
	}
	switch {
	case errors.Is(perr, projections.ErrNotFound):
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("job %s not found", id))
	case perr != nil:
		s.logger.ErrorContext(ctx, "read timeline", "job_id", id, "error", perr)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("reading the timeline failed; retry"))
	}
	return connect.NewResponse(&sluicev1.GetJobTimelineResponse{Events: projected, Source: sourceProjection}), nil
}

// projectionAhead reports whether the read model's timeline of a job
// shows more than ClickHouse's: an event later than ClickHouse's last
// (compared at ClickHouse's microsecond precision), or a later attempt.
// A caught-up ClickHouse is never behind: the read model's attempts end
// when their job.attempted events are written, its other events carry
// their events' times.
func projectionAhead(trail, projected []*sluicev1.TimelineEvent) bool {
	last := func(events []*sluicev1.TimelineEvent) (at time.Time, attempt int32) {
		for _, e := range events {
			if t := e.GetAt().AsTime(); t.After(at) {
				at = t
			}
			if e.GetType() == "job.attempted" {
				attempt = max(attempt, e.GetAttempt())
			}
		}
		return at, attempt
	}
	trailAt, trailAttempt := last(trail)
	projAt, projAttempt := last(projected)
	return projAt.Truncate(time.Microsecond).After(trailAt) || projAttempt > trailAttempt
}

// QueryAttempts lists attempts from ClickHouse.
func (s *AuditService) QueryAttempts(ctx context.Context, req *connect.Request[sluicev1.QueryAttemptsRequest]) (*connect.Response[sluicev1.QueryAttemptsResponse], error) {
	m := req.Msg
	if s.trail == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			errors.New("QueryAttempts needs the ClickHouse audit trail: start the server with --clickhouse-dsn"))
	}
	if m.Queue != "" && !queueName.MatchString(m.Queue) {
		return nil, fieldError(connect.CodeInvalidArgument, "queue", "%q is not a queue name", m.Queue)
	}
	if m.StatusCode < 0 || m.StatusCode > 599 {
		return nil, fieldError(connect.CodeInvalidArgument, "statusCode", "%d is not an HTTP status", m.StatusCode)
	}
	q := analytics.AttemptQuery{
		JobID: m.JobId, Queue: m.Queue, EndpointID: m.EndpointId, StatusCode: m.StatusCode,
		ErrorContains: m.ErrorContains, PageSize: int(m.PageSize), PageToken: m.PageToken,
	}
	if m.StartedAfter != nil {
		if err := m.StartedAfter.CheckValid(); err != nil {
			return nil, fieldError(connect.CodeInvalidArgument, "startedAfter", "%v", err)
		}
		q.StartedAfter = m.StartedAfter.AsTime()
	}
	if m.StartedBefore != nil {
		if err := m.StartedBefore.CheckValid(); err != nil {
			return nil, fieldError(connect.CodeInvalidArgument, "startedBefore", "%v", err)
		}
		q.StartedBefore = m.StartedBefore.AsTime()
	}
	attempts, next, err := s.trail.QueryAttempts(ctx, principalFrom(ctx).TenantID, q)
	if err != nil {
		var bad *analytics.FieldError
		if errors.As(err, &bad) {
			return nil, fieldError(connect.CodeInvalidArgument, bad.Field, "%s", bad.Reason)
		}
		s.logger.ErrorContext(ctx, "query attempts", "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the audit trail did not answer; retry"))
	}
	return connect.NewResponse(&sluicev1.QueryAttemptsResponse{Attempts: attempts, NextPageToken: next}), nil
}
