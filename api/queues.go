package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// QueueDirectory keeps queue settings; tenancy.Directory implements it.
type QueueDirectory interface {
	// Queue returns a queue's settings, zero for a queue never configured.
	Queue(tenantID, name string) *sluicev1.Queue
	ConfiguredQueues(tenantID string) []*sluicev1.Queue
	// UpdateQueue applies change to the queue's settings and stores them.
	UpdateQueue(ctx context.Context, tenantID, name string, actor *eventv1.Actor, now time.Time, change func(*sluicev1.Queue)) (*sluicev1.Queue, error)
}

// QueueStore reads queues' jobs; projections.Store implements it.
type QueueStore interface {
	QueueCounts(ctx context.Context, tenantID, queue string) (map[sluicev1.JobState]int64, error)
	OldestReady(ctx context.Context, tenantID, queue string) (time.Time, bool, error)
	Queues(ctx context.Context, tenantID string) ([]string, error)
	TakeParked(ctx context.Context, tenantID, queue string, limit int) ([]projections.Parked, error)
	ReturnParked(ctx context.Context, tenantID, queue string, jobs []projections.Parked) error
	JobSnapshots(ctx context.Context, tenantID string, jobIDs []string) (map[string]*projections.JobSnapshot, error)
}

// queueDefaults fills what a job left unset from its queue's settings:
// maxAttempts and retryPolicy. They are fixed at enqueue, so a job's
// retries follow the settings of the day it was enqueued.
func (s *JobService) queueDefaults(tenantID string, spec *eventv1.JobSpec) {
	if s.queues == nil {
		return
	}
	q := s.queues.Queue(tenantID, spec.Queue)
	if spec.MaxAttempts == 0 {
		spec.MaxAttempts = q.MaxAttempts
	}
	if spec.RetryPolicy == nil && q.RetryPolicy != nil {
		spec.RetryPolicy = q.RetryPolicy
	}
}

// QueueService implements sluice.v1.QueueService.
type QueueService struct {
	dir    QueueDirectory
	store  QueueStore
	unpark *unparker
	limits Limits
	now    func() time.Time
	logger *slog.Logger
}

var _ sluicev1connect.QueueServiceHandler = (*QueueService)(nil)

// GetQueue returns a queue's settings and stats.
func (s *QueueService) GetQueue(ctx context.Context, req *connect.Request[sluicev1.GetQueueRequest]) (*connect.Response[sluicev1.GetQueueResponse], error) {
	p := principalFrom(ctx)
	if cerr := checkQueueName(req.Msg.Name, "name"); cerr != nil {
		return nil, cerr
	}
	info, err := s.info(ctx, p.TenantID, s.dir.Queue(p.TenantID, req.Msg.Name))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.GetQueueResponse{Queue: info}), nil
}

// ListQueues lists the queues with settings or jobs, by name.
func (s *QueueService) ListQueues(ctx context.Context, _ *connect.Request[sluicev1.ListQueuesRequest]) (*connect.Response[sluicev1.ListQueuesResponse], error) {
	p := principalFrom(ctx)
	names, err := s.store.Queues(ctx, p.TenantID)
	if err != nil {
		return nil, queueUnavailable(ctx, s.logger, "list queues", err)
	}
	for _, q := range s.dir.ConfiguredQueues(p.TenantID) {
		names = append(names, q.Name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	resp := &sluicev1.ListQueuesResponse{Queues: make([]*sluicev1.QueueInfo, 0, len(names))}
	for _, name := range names {
		info, err := s.info(ctx, p.TenantID, s.dir.Queue(p.TenantID, name))
		if err != nil {
			return nil, err
		}
		resp.Queues = append(resp.Queues, info)
	}
	return connect.NewResponse(resp), nil
}

// UpdateQueue changes the settings set in the request.
func (s *QueueService) UpdateQueue(ctx context.Context, req *connect.Request[sluicev1.UpdateQueueRequest]) (*connect.Response[sluicev1.UpdateQueueResponse], error) {
	m := req.Msg
	if cerr := checkQueueName(m.Name, "name"); cerr != nil {
		return nil, cerr
	}
	if m.MaxAttempts != nil && (*m.MaxAttempts < 0 || *m.MaxAttempts > s.limits.MaxAttempts) {
		return nil, fieldError(connect.CodeInvalidArgument, "maxAttempts", "%d is outside 0..%d", *m.MaxAttempts, s.limits.MaxAttempts)
	}
	if m.ConcurrencyLimit != nil && (*m.ConcurrencyLimit < 0 || *m.ConcurrencyLimit > 1_000_000) {
		return nil, fieldError(connect.CodeInvalidArgument, "concurrencyLimit", "%d is outside 0..1000000", *m.ConcurrencyLimit)
	}
	if m.RateLimit != nil && (*m.RateLimit < 0 || math.IsNaN(*m.RateLimit) || *m.RateLimit > 1_000_000) {
		return nil, fieldError(connect.CodeInvalidArgument, "rateLimit", "%v is outside 0..1000000 jobs per second", *m.RateLimit)
	}
	if m.RetryPolicy != nil && m.ClearRetryPolicy {
		return nil, fieldError(connect.CodeInvalidArgument, "clearRetryPolicy", "set retryPolicy or clearRetryPolicy, not both")
	}
	if cerr := validateRetryPolicy(m.RetryPolicy, ""); cerr != nil {
		return nil, cerr
	}
	q, err := s.update(ctx, m.Name, func(q *sluicev1.Queue) {
		if m.MaxAttempts != nil {
			q.MaxAttempts = *m.MaxAttempts
		}
		if m.RetryPolicy != nil {
			q.RetryPolicy = m.RetryPolicy
		}
		if m.ClearRetryPolicy {
			q.RetryPolicy = nil
		}
		if m.ConcurrencyLimit != nil {
			q.ConcurrencyLimit = *m.ConcurrencyLimit
		}
		if m.RateLimit != nil {
			q.RateLimit = *m.RateLimit
		}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.UpdateQueueResponse{Queue: q}), nil
}

// PauseQueue pauses a queue: its jobs wait, nothing is lost.
func (s *QueueService) PauseQueue(ctx context.Context, req *connect.Request[sluicev1.PauseQueueRequest]) (*connect.Response[sluicev1.PauseQueueResponse], error) {
	if cerr := checkQueueName(req.Msg.Name, "name"); cerr != nil {
		return nil, cerr
	}
	q, err := s.update(ctx, req.Msg.Name, func(q *sluicev1.Queue) { q.Paused = true })
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.PauseQueueResponse{Queue: q}), nil
}

// ResumeQueue resumes a paused queue and sends the jobs held back while
// it was paused on their way, oldest first.
func (s *QueueService) ResumeQueue(ctx context.Context, req *connect.Request[sluicev1.ResumeQueueRequest]) (*connect.Response[sluicev1.ResumeQueueResponse], error) {
	p := principalFrom(ctx)
	if cerr := checkQueueName(req.Msg.Name, "name"); cerr != nil {
		return nil, cerr
	}
	q, err := s.update(ctx, req.Msg.Name, func(q *sluicev1.Queue) { q.Paused = false })
	if err != nil {
		return nil, err
	}
	if _, err := s.unpark.queue(ctx, p.TenantID, q.Name); err != nil {
		// The sweep picks the rest up; the queue is resumed.
		s.logger.WarnContext(ctx, "resume parked jobs", "queue", q.Name, "error", err)
	}
	return connect.NewResponse(&sluicev1.ResumeQueueResponse{Queue: q}), nil
}

func (s *QueueService) update(ctx context.Context, name string, change func(*sluicev1.Queue)) (*sluicev1.Queue, error) {
	p := principalFrom(ctx)
	q, err := s.dir.UpdateQueue(ctx, p.TenantID, name, apiKeyActor(p), s.now(), change)
	if err != nil {
		return nil, queueUnavailable(ctx, s.logger, "update queue", err)
	}
	return q, nil
}

// info is a queue's settings with its stats.
func (s *QueueService) info(ctx context.Context, tenantID string, q *sluicev1.Queue) (*sluicev1.QueueInfo, error) {
	counts, err := s.store.QueueCounts(ctx, tenantID, q.Name)
	if err != nil {
		return nil, queueUnavailable(ctx, s.logger, "count jobs", err)
	}
	stats := &sluicev1.QueueStats{
		Scheduled: counts[sluicev1.JobState_JOB_STATE_SCHEDULED],
		Ready:     counts[sluicev1.JobState_JOB_STATE_READY],
		Running:   counts[sluicev1.JobState_JOB_STATE_RUNNING],
		Retrying:  counts[sluicev1.JobState_JOB_STATE_RETRYING],
		Succeeded: counts[sluicev1.JobState_JOB_STATE_SUCCEEDED],
		Dead:      counts[sluicev1.JobState_JOB_STATE_DEAD],
		Cancelled: counts[sluicev1.JobState_JOB_STATE_CANCELLED],
	}
	oldest, ok, err := s.store.OldestReady(ctx, tenantID, q.Name)
	if err != nil {
		return nil, queueUnavailable(ctx, s.logger, "read oldest ready job", err)
	}
	if ok {
		stats.OldestReadyAge = durationpb.New(max(s.now().Sub(oldest), 0))
	}
	return &sluicev1.QueueInfo{Queue: q, Stats: stats}, nil
}

func checkQueueName(name, field string) *connect.Error {
	if name == "" {
		return fieldError(connect.CodeInvalidArgument, field, "required")
	}
	if !queueName.MatchString(name) {
		return fieldError(connect.CodeInvalidArgument, field, "%q is not a queue name: use 1-128 of A-Z a-z 0-9 . _ -", name)
	}
	return nil
}

func queueUnavailable(ctx context.Context, logger *slog.Logger, op string, err error) error {
	logger.ErrorContext(ctx, op, "error", err)
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request cancelled"))
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s failed; retry it", op))
}

// unparker makes the jobs a paused queue held back ready again once the
// queue runs: one job.ready per parked job, with the attempt it was held
// at, in transactions of up to txnJobs jobs.
type unparker struct {
	dir    QueueDirectory
	store  QueueStore
	log    Appender
	topics eventlog.Topics
	now    func() time.Time
}

// queue unparks every job of a queue that is not paused and returns how
// many it unparked. Each parked job is taken off the parked set before its
// job.ready is appended, so racing unparkers (ResumeQueue, every node's
// sweep) never write two for one job.
func (u *unparker) queue(ctx context.Context, tenantID, queue string) (int, error) {
	n := 0
	for {
		if u.dir.Queue(tenantID, queue).GetPaused() {
			return n, nil // paused again meanwhile: the rest waits
		}
		taken, err := u.store.TakeParked(ctx, tenantID, queue, txnJobs)
		if err != nil || len(taken) == 0 {
			return n, err
		}
		if err := u.ready(ctx, tenantID, taken); err != nil {
			if rerr := u.store.ReturnParked(context.WithoutCancel(ctx), tenantID, queue, taken); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return n, err
		}
		n += len(taken)
	}
}

// ready appends one job.ready per taken job, in one transaction.
func (u *unparker) ready(ctx context.Context, tenantID string, taken []projections.Parked) error {
	var recs []*kgo.Record
	for chunk := range slices.Chunk(taken, readChunk) {
		ids := make([]string, len(chunk))
		for i, p := range chunk {
			ids[i] = p.JobID
		}
		snaps, err := u.store.JobSnapshots(ctx, tenantID, ids)
		if err != nil {
			return fmt.Errorf("read parked jobs: %w", err)
		}
		for _, p := range chunk {
			snap, ok := snaps[p.JobID]
			if !ok {
				continue
			}
			rec, err := u.readyRecord(tenantID, snap, p.Attempt)
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if err := u.log.AppendAtomic(ctx, recs); err != nil {
		return fmt.Errorf("append job.ready of %d parked jobs: %w", len(recs), err)
	}
	return nil
}

// readyRecord is the job.ready that runs a parked job's attempt.
func (u *unparker) readyRecord(tenantID string, snap *projections.JobSnapshot, attempt int32) (*kgo.Record, error) {
	ev := eventlog.NewEvent(eventlog.Meta{
		TenantID: tenantID, JobID: snap.Job.Id, OccurredAt: u.now(),
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_SYSTEM, Id: "queues"},
	}, &eventv1.JobReady{
		Attempt: attempt, BudgetStart: snap.BudgetStart,
		Spec: proto.CloneOf(snap.Spec), History: snap.Attempts,
	})
	return eventlog.EncodeEvent(u.topics.Events(), ev)
}

// sweep unparks the jobs of every running queue of the tenants: jobs a
// delivery node parked after a resume it had not seen yet.
func (u *unparker) sweep(ctx context.Context, tenantIDs []string, logger *slog.Logger) {
	for _, t := range tenantIDs {
		for _, q := range u.dir.ConfiguredQueues(t) {
			if q.Paused {
				continue
			}
			if n, err := u.queue(ctx, t, q.Name); err != nil {
				logger.WarnContext(ctx, "unpark jobs", "tenant_id", t, "queue", q.Name, "error", err)
			} else if n > 0 {
				logger.InfoContext(ctx, "unparked jobs", "tenant_id", t, "queue", q.Name, "jobs", n)
			}
		}
	}
}
