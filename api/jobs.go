package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/retrytiers/delayline"
)

// Appender writes events durably; eventlog.Appender implements it.
type Appender interface {
	Append(ctx context.Context, recs ...*kgo.Record) error
	AppendAtomic(ctx context.Context, recs []*kgo.Record) error
	// AppendEach appends records that stand alone; errs[i] is recs[i]'s.
	AppendEach(ctx context.Context, recs []*kgo.Record) (errs []error)
}

// JobStore reads current job state; projections.Store implements it.
type JobStore interface {
	GetJob(ctx context.Context, tenantID, jobID string) (*sluicev1.Job, error)
	ListJobs(ctx context.Context, tenantID string, q projections.ListQuery) ([]*sluicev1.Job, string, error)
	// JobRuns tells, among others, which job.enqueued created a job.
	JobRuns(ctx context.Context, tenantID string, jobIDs []string) (map[string]projections.JobRun, error)
}

// JobService implements sluice.v1.JobService.
type JobService struct {
	log    Appender
	store  JobStore
	amend  *amender
	topics eventlog.Topics
	limits Limits
	now    func() time.Time
	logger *slog.Logger
	// endpoints, when set, resolves endpoint targets.
	endpoints EndpointStore
	queues    QueueDirectory
	// idempotency is how long an idempotency key is remembered.
	idempotency time.Duration
}

var _ sluicev1connect.JobServiceHandler = (*JobService)(nil)

// Enqueue validates one job and appends its job.enqueued event; see
// enqueueAll for idempotency keys.
func (s *JobService) Enqueue(ctx context.Context, req *connect.Request[sluicev1.EnqueueRequest]) (*connect.Response[sluicev1.EnqueueResponse], error) {
	p := principalFrom(ctx)
	now := s.now()
	spec, cerr := s.limits.jobSpec(req.Msg, "", now)
	if cerr == nil {
		cerr = checkEndpointTarget(s.endpoints, p.TenantID, spec, "")
	}
	if cerr != nil {
		return nil, cerr
	}
	s.queueDefaults(p.TenantID, spec)
	res, err := s.enqueueAll(ctx, p.TenantID, p.KeyID, []*eventv1.JobSpec{spec}, []*structpb.Value{req.Msg.Payload}, now)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res[0]), nil
}

// EnqueueBatch appends every job in one transaction, or none; see
// enqueueAll for idempotency keys.
func (s *JobService) EnqueueBatch(ctx context.Context, req *connect.Request[sluicev1.EnqueueBatchRequest]) (*connect.Response[sluicev1.EnqueueBatchResponse], error) {
	p := principalFrom(ctx)
	now := s.now()
	jobs := req.Msg.Jobs
	switch {
	case len(jobs) == 0:
		return nil, fieldError(connect.CodeInvalidArgument, "jobs", "at least one job required")
	case len(jobs) > s.limits.MaxBatch:
		return nil, fieldError(connect.CodeInvalidArgument, "jobs", "%d jobs, at most %d per batch", len(jobs), s.limits.MaxBatch)
	}
	specs := make([]*eventv1.JobSpec, len(jobs))
	for i, j := range jobs {
		spec, cerr := s.limits.jobSpec(j, fmt.Sprintf("jobs[%d].", i), now)
		if cerr == nil {
			cerr = checkEndpointTarget(s.endpoints, p.TenantID, spec, fmt.Sprintf("jobs[%d].", i))
		}
		if cerr != nil {
			return nil, cerr
		}
		s.queueDefaults(p.TenantID, spec)
		specs[i] = spec
	}
	payloads := make([]*structpb.Value, len(jobs))
	for i, j := range jobs {
		payloads[i] = j.Payload
	}
	results, err := s.enqueueAll(ctx, p.TenantID, p.KeyID, specs, payloads, now)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.EnqueueBatchResponse{Results: results}), nil
}

// GetJob returns a job's current state.
func (s *JobService) GetJob(ctx context.Context, req *connect.Request[sluicev1.GetJobRequest]) (*connect.Response[sluicev1.GetJobResponse], error) {
	job, err := s.job(ctx, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.GetJobResponse{Job: job}), nil
}

// ListJobs lists jobs newest first, filtered by queue and state.
func (s *JobService) ListJobs(ctx context.Context, req *connect.Request[sluicev1.ListJobsRequest]) (*connect.Response[sluicev1.ListJobsResponse], error) {
	m := req.Msg
	if m.PageSize < 0 || m.PageSize > 1000 {
		return nil, fieldError(connect.CodeInvalidArgument, "pageSize", "%d is outside 0..1000", m.PageSize)
	}
	if m.Queue != "" && !queueName.MatchString(m.Queue) {
		return nil, fieldError(connect.CodeInvalidArgument, "queue", "%q is not a queue name", m.Queue)
	}
	if _, ok := sluicev1.JobState_name[int32(m.State)]; !ok {
		return nil, fieldError(connect.CodeInvalidArgument, "state", "unknown state %d", m.State)
	}
	jobs, next, err := s.store.ListJobs(ctx, principalFrom(ctx).TenantID, projections.ListQuery{
		Queue: m.Queue, State: m.State, PageSize: int(m.PageSize), PageToken: m.PageToken,
	})
	if err != nil {
		var bad *projections.FieldError
		if errors.As(err, &bad) {
			return nil, fieldError(connect.CodeInvalidArgument, bad.Field, "%s", bad.Reason)
		}
		return nil, s.unavailable(ctx, "list jobs", err)
	}
	return connect.NewResponse(&sluicev1.ListJobsResponse{Jobs: jobs, NextPageToken: next}), nil
}

// CancelJob stops a job that has not finished.
func (s *JobService) CancelJob(ctx context.Context, req *connect.Request[sluicev1.CancelJobRequest]) (*connect.Response[sluicev1.CancelJobResponse], error) {
	p := principalFrom(ctx)
	job, err := s.job(ctx, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	switch job.State {
	case sluicev1.JobState_JOB_STATE_SUCCEEDED, sluicev1.JobState_JOB_STATE_DEAD, sluicev1.JobState_JOB_STATE_CANCELLED:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("id: job %s is %s and cannot be cancelled", job.Id, job.State))
	}
	now := s.now()
	rec, err := eventlog.EncodeEvent(s.topics.Events(), eventlog.NewEvent(eventlog.Meta{
		TenantID: p.TenantID, JobID: job.Id, OccurredAt: now,
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: p.KeyID},
	}, &eventv1.JobCancelled{Reason: "cancelled by API"}))
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if err := s.log.Append(ctx, rec); err != nil {
		return nil, s.unavailable(ctx, "append job.cancelled", err)
	}
	job.State = sluicev1.JobState_JOB_STATE_CANCELLED
	job.UpdatedAt = timestamppb.New(now)
	return connect.NewResponse(&sluicev1.CancelJobResponse{Job: job}), nil
}

// RetryJob sends a dead or cancelled job round again from a fresh
// attempt budget, with its payload as it is.
func (s *JobService) RetryJob(ctx context.Context, req *connect.Request[sluicev1.RetryJobRequest]) (*connect.Response[sluicev1.RetryJobResponse], error) {
	p := principalFrom(ctx)
	id := req.Msg.Id
	if id == "" {
		return nil, fieldError(connect.CodeInvalidArgument, "id", "required")
	}
	snaps, err := s.amend.store.JobSnapshots(ctx, p.TenantID, []string{id})
	if err != nil {
		return nil, s.unavailable(ctx, "read job", err)
	}
	snap, ok := snaps[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("job %s not found", id))
	}
	switch snap.Job.State {
	case sluicev1.JobState_JOB_STATE_DEAD, sluicev1.JobState_JOB_STATE_CANCELLED:
	default:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("id: job %s is %s; only dead or cancelled jobs can be retried", id, snap.Job.State))
	}
	job, err := s.amend.retryOne(ctx, p, snap, retryOrder{reason: "retried by API"})
	if err != nil {
		return nil, s.unavailable(ctx, "append job.retried", err)
	}
	return connect.NewResponse(&sluicev1.RetryJobResponse{Job: job}), nil
}

func (s *JobService) job(ctx context.Context, id string) (*sluicev1.Job, error) {
	if id == "" {
		return nil, fieldError(connect.CodeInvalidArgument, "id", "required")
	}
	job, err := s.store.GetJob(ctx, principalFrom(ctx).TenantID, id)
	switch {
	case errors.Is(err, projections.ErrNotFound):
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("job %s not found", id))
	case err != nil:
		return nil, s.unavailable(ctx, "read job", err)
	}
	return job, nil
}

// enqueuedRecords returns a new job's job.enqueued event and the records
// to append: the event, and for a job with a runAt to come the timer that
// makes it ready then.
func (s *JobService) enqueuedRecords(tenantID, keyID, jobID string, spec *eventv1.JobSpec, now time.Time) (*eventv1.Event, []*kgo.Record, error) {
	meta := eventlog.Meta{
		TenantID:   tenantID,
		JobID:      jobID,
		OccurredAt: now,
		Actor:      &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: keyID},
	}
	ev := eventlog.NewEvent(meta, &eventv1.JobEnqueued{Spec: spec})
	rec, err := eventlog.EncodeEvent(s.topics.Events(), ev)
	if err != nil {
		return nil, nil, connect.NewError(connect.CodeInternal, err)
	}
	recs := []*kgo.Record{rec}
	if runAt := spec.GetRunAt(); runAt != nil && runAt.AsTime().After(now) {
		meta.EventID, meta.CausationID = "", ev.EventId
		ready := eventlog.NewEvent(meta, &eventv1.JobReady{Attempt: 1, Spec: spec})
		timer, err := delayline.Schedule(s.topics, ready, runAt.AsTime(), now)
		if err != nil {
			return nil, nil, connect.NewError(connect.CodeInternal, err)
		}
		recs = append(recs, timer)
	}
	return ev, recs, nil
}

// unavailable logs err and answers without leaking internals: the request
// was not accepted and may be retried.
func (s *JobService) unavailable(ctx context.Context, op string, err error) error {
	s.logger.ErrorContext(ctx, op, "error", err)
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request cancelled before the log acknowledged it"))
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s failed; the request was not accepted, retry it", op))
}

// jobFromSpec is the state of a job just enqueued.
func jobFromSpec(id string, spec *eventv1.JobSpec, payload *structpb.Value, now time.Time) *sluicev1.Job {
	state := sluicev1.JobState_JOB_STATE_READY
	if spec.RunAt != nil && spec.RunAt.AsTime().After(now) {
		state = sluicev1.JobState_JOB_STATE_SCHEDULED
	}
	if payload == nil {
		payload = structpb.NewNullValue()
		_ = json.Unmarshal(spec.Payload, payload)
	}
	return &sluicev1.Job{
		Id:             id,
		Queue:          spec.Queue,
		State:          state,
		MaxAttempts:    spec.MaxAttempts,
		Payload:        payload,
		Target:         spec.Target,
		IdempotencyKey: spec.IdempotencyKey,
		CreatedAt:      spec.CreatedAt,
		UpdatedAt:      spec.CreatedAt,
		Priority:       spec.Priority,
		Headers:        spec.Headers,
		RunAt:          spec.RunAt,
		Timeout:        spec.Timeout,
		RetryPolicy:    spec.RetryPolicy,
	}
}
