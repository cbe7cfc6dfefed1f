package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/queuelimit"
)

// Bounds of worker calls.
const (
	defaultLease = 30 * time.Second
	minLease     = time.Second
	maxLease     = time.Hour
	maxClaimWait = 30 * time.Second
	maxClaim     = 1000
)

// WorkerStore keeps leases; projections.Store implements it.
type WorkerStore interface {
	Claim(ctx context.Context, req projections.ClaimRequest) ([]projections.Lease, error)
	FinishLease(ctx context.Context, tenantID, jobID, token string, expired bool, now time.Time) (projections.Lease, error)
	FinishLeases(ctx context.Context, tenantID string, refs []projections.LeaseRef, now time.Time) ([]projections.Lease, []error, error)
	ExtendLease(ctx context.Context, tenantID, jobID, token string, until, now time.Time) (projections.Lease, error)
	RestoreLease(ctx context.Context, tenantID, jobID, token string, now time.Time) error
	ReleaseLease(ctx context.Context, tenantID, jobID, token string, now time.Time) error
	LiveLeases(ctx context.Context, tenantID string, leases map[string]string) (map[string]bool, error)
	LeaseDuration(ctx context.Context, tenantID, jobID string) (time.Duration, error)
	ExpiredLeases(ctx context.Context, now time.Time, limit int) ([]projections.ExpiredLease, error)
	JobSnapshots(ctx context.Context, tenantID string, jobIDs []string) (map[string]*projections.JobSnapshot, error)
}

// WorkerService implements sluice.v1.WorkerService.
type WorkerService struct {
	store  WorkerStore
	queues QueueDirectory
	rates  *queuelimit.Limits
	log    Appender
	topics eventlog.Topics
	now    func() time.Time
	logger *slog.Logger
	// poll is the longest pause between looks for ready jobs while a
	// claim waits.
	poll time.Duration
}

var _ sluicev1connect.WorkerServiceHandler = (*WorkerService)(nil)

// claimArgs is a validated claim.
type claimArgs struct {
	queue, workerID string
	max             int
	lease           time.Duration
}

func validateClaim(queue, workerID string, n int32, lease *durationpb.Duration, maxField string) (claimArgs, *connect.Error) {
	if cerr := checkQueueName(queue, "queue"); cerr != nil {
		return claimArgs{}, cerr
	}
	if workerID == "" || len(workerID) > 128 {
		return claimArgs{}, fieldError(connect.CodeInvalidArgument, "workerId", "required, 1-128 characters")
	}
	for _, r := range workerID {
		if !unicode.IsPrint(r) {
			return claimArgs{}, fieldError(connect.CodeInvalidArgument, "workerId", "holds a non-printable character")
		}
	}
	if n < 0 || n > maxClaim {
		return claimArgs{}, fieldError(connect.CodeInvalidArgument, maxField, "%d is outside 0..%d", n, maxClaim)
	}
	a := claimArgs{queue: queue, workerID: workerID, max: max(int(n), 1), lease: defaultLease}
	if lease != nil {
		if err := lease.CheckValid(); err != nil || lease.AsDuration() < minLease || lease.AsDuration() > maxLease {
			return claimArgs{}, fieldError(connect.CodeInvalidArgument, "leaseDuration", "must be between %s and %s", minLease, maxLease)
		}
		a.lease = lease.AsDuration()
	}
	return a, nil
}

// Claim leases up to max ready jobs, waiting up to wait for one.
func (s *WorkerService) Claim(ctx context.Context, req *connect.Request[sluicev1.ClaimRequest]) (*connect.Response[sluicev1.ClaimResponse], error) {
	m := req.Msg
	a, cerr := validateClaim(m.Queue, m.WorkerId, m.Max, m.LeaseDuration, "max")
	if cerr != nil {
		return nil, cerr
	}
	var wait time.Duration
	if m.Wait != nil {
		if err := m.Wait.CheckValid(); err != nil || m.Wait.AsDuration() < 0 || m.Wait.AsDuration() > maxClaimWait {
			return nil, fieldError(connect.CodeInvalidArgument, "wait", "must be between 0 and %s", maxClaimWait)
		}
		wait = m.Wait.AsDuration()
	}
	p := principalFrom(ctx)
	deadline := s.now().Add(wait)
	pause := time.Millisecond
	for {
		jobs, err := s.claim(ctx, p.TenantID, a)
		if err != nil {
			return nil, err
		}
		if len(jobs) > 0 || !s.now().Before(deadline) {
			return connect.NewResponse(&sluicev1.ClaimResponse{Jobs: jobs}), nil
		}
		pause = min(2*pause, s.poll)
		select {
		case <-time.After(min(pause, time.Until(deadline))):
		case <-ctx.Done():
			return connect.NewResponse(&sluicev1.ClaimResponse{}), nil
		}
	}
}

// ClaimStream sends jobs as they become ready, keeping at most
// maxInFlight of its leases outstanding.
func (s *WorkerService) ClaimStream(ctx context.Context, req *connect.Request[sluicev1.ClaimStreamRequest], stream *connect.ServerStream[sluicev1.ClaimStreamResponse]) error {
	m := req.Msg
	a, cerr := validateClaim(m.Queue, m.WorkerId, m.MaxInFlight, m.LeaseDuration, "maxInFlight")
	if cerr != nil {
		return cerr
	}
	p := principalFrom(ctx)
	limit := a.max
	outstanding := make(map[string]string) // job id → lease token
	pause := time.Millisecond
	for ctx.Err() == nil {
		if len(outstanding) >= limit {
			live, err := s.store.LiveLeases(ctx, p.TenantID, outstanding)
			if err != nil {
				return queueUnavailable(ctx, s.logger, "read leases", err)
			}
			for id, ok := range live {
				if !ok {
					delete(outstanding, id)
				}
			}
		}
		var jobs []*sluicev1.ClaimedJob
		if len(outstanding) < limit {
			a.max = limit - len(outstanding)
			var err error
			if jobs, err = s.claim(ctx, p.TenantID, a); err != nil {
				return err
			}
		}
		if len(jobs) > 0 {
			if err := stream.Send(&sluicev1.ClaimStreamResponse{Jobs: jobs}); err != nil {
				// The client left. Its leases are in the log (job.claimed),
				// so they run out like a crashed worker's: a failed attempt
				// each, retried per the policy.
				return nil
			}
			for _, j := range jobs {
				outstanding[j.Job.Id] = j.LeaseToken
			}
			pause = time.Millisecond
			continue
		}
		pause = min(2*pause, s.poll)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
	}
	return nil
}

// claim leases up to a.max jobs and records the leases in the log.
func (s *WorkerService) claim(ctx context.Context, tenantID string, a claimArgs) ([]*sluicev1.ClaimedJob, error) {
	q := s.queues.Queue(tenantID, a.queue)
	if q.Paused {
		return nil, nil
	}
	now := s.now()
	// Starts are spent only on jobs actually leased.
	n := s.rates.Available(tenantID, a.queue, q.RateLimit, a.max, now)
	if n == 0 {
		return nil, nil
	}
	leases, err := s.store.Claim(ctx, projections.ClaimRequest{
		TenantID: tenantID, Queue: a.queue, WorkerID: a.workerID, Max: n, Duration: a.lease,
		RunningLimit: int(q.ConcurrencyLimit), NewToken: newLeaseToken, Now: now,
	})
	if err != nil && len(leases) == 0 {
		return nil, queueUnavailable(ctx, s.logger, "claim jobs", err)
	}
	if len(leases) == 0 {
		return nil, nil
	}
	s.rates.Take(tenantID, a.queue, q.RateLimit, len(leases), now)
	recs, err := s.claimedRecords(tenantID, a, leases, now)
	errs := make([]error, len(leases))
	if err == nil {
		// Each lease stands alone: one that fails to append is released,
		// the others go to the worker.
		errs = s.log.AppendEach(ctx, recs)
	} else {
		for i := range errs {
			errs[i] = err
		}
	}
	out := make([]*sluicev1.ClaimedJob, 0, len(leases))
	for i, l := range leases {
		if errs[i] != nil {
			err = errs[i]
			if rerr := s.store.ReleaseLease(context.WithoutCancel(ctx), tenantID, l.JobID, l.Token, now); rerr != nil {
				s.logger.WarnContext(ctx, "release unrecorded lease; it expires instead", "job_id", l.JobID, "error", rerr)
			}
			continue
		}
		job := l.Job
		job.State = sluicev1.JobState_JOB_STATE_RUNNING
		job.Attempt = l.Attempt
		job.WorkerId = a.workerID
		job.LeaseExpiresAt = timestamppb.New(l.ExpiresAt)
		job.UpdatedAt = timestamppb.New(now)
		out = append(out, &sluicev1.ClaimedJob{Job: job, LeaseToken: l.Token, LeaseExpiresAt: job.LeaseExpiresAt})
	}
	if len(out) == 0 && err != nil {
		return nil, queueUnavailable(ctx, s.logger, "append job.claimed", err)
	}
	return out, nil
}

func (s *WorkerService) claimedRecords(tenantID string, a claimArgs, leases []projections.Lease, now time.Time) ([]*kgo.Record, error) {
	recs := make([]*kgo.Record, len(leases))
	for i, l := range leases {
		ev := eventlog.NewEvent(workerMeta(tenantID, l.JobID, a.workerID, now), &eventv1.JobClaimed{
			Attempt: l.Attempt, WorkerId: a.workerID, LeaseToken: l.Token,
			LeaseExpiresAt: timestamppb.New(l.ExpiresAt), LeaseDuration: durationpb.New(a.lease),
			BudgetStart: l.BudgetStart,
		})
		rec, err := eventlog.EncodeEvent(s.topics.Events(), ev)
		if err != nil {
			return nil, err
		}
		recs[i] = rec
	}
	return recs, nil
}

// Heartbeat extends a live lease.
func (s *WorkerService) Heartbeat(ctx context.Context, req *connect.Request[sluicev1.HeartbeatRequest]) (*connect.Response[sluicev1.HeartbeatResponse], error) {
	m := req.Msg
	if cerr := checkLeaseRef(m.JobId, m.LeaseToken); cerr != nil {
		return nil, cerr
	}
	p := principalFrom(ctx)
	now := s.now()
	by := time.Duration(0)
	if m.ExtendBy != nil {
		if err := m.ExtendBy.CheckValid(); err != nil || m.ExtendBy.AsDuration() < minLease || m.ExtendBy.AsDuration() > maxLease {
			return nil, fieldError(connect.CodeInvalidArgument, "extendBy", "must be between %s and %s", minLease, maxLease)
		}
		by = m.ExtendBy.AsDuration()
	} else {
		d, err := s.store.LeaseDuration(ctx, p.TenantID, m.JobId)
		if err != nil {
			return nil, s.leaseError(ctx, m.JobId, err)
		}
		by = d
	}
	until := now.Add(by)
	l, err := s.store.ExtendLease(ctx, p.TenantID, m.JobId, m.LeaseToken, until, now)
	if err != nil {
		return nil, s.leaseError(ctx, m.JobId, err)
	}
	ev := eventlog.NewEvent(eventlog.Meta{
		TenantID: p.TenantID, JobID: m.JobId, OccurredAt: now,
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_WORKER, Id: p.KeyID},
	}, &eventv1.JobLeaseExtended{Attempt: l.Attempt, LeaseToken: m.LeaseToken, LeaseExpiresAt: timestamppb.New(until)})
	rec, err := eventlog.EncodeEvent(s.topics.Events(), ev)
	if err == nil {
		err = s.log.Append(ctx, rec)
	}
	if err != nil {
		// The lease is extended; the log learns of it with the next one.
		s.logger.WarnContext(ctx, "append job.lease_extended", "job_id", m.JobId, "error", err)
	}
	return connect.NewResponse(&sluicev1.HeartbeatResponse{LeaseExpiresAt: timestamppb.New(until)}), nil
}

// Complete ends a leased job successfully.
func (s *WorkerService) Complete(ctx context.Context, req *connect.Request[sluicev1.CompleteRequest]) (*connect.Response[sluicev1.CompleteResponse], error) {
	res := s.complete(ctx, []*sluicev1.CompleteRequest{req.Msg}, "", true)
	if res[0].err != nil {
		return nil, res[0].err
	}
	return connect.NewResponse(&sluicev1.CompleteResponse{Job: res[0].job}), nil
}

// CompleteBatch completes many leased jobs, each on its own.
func (s *WorkerService) CompleteBatch(ctx context.Context, req *connect.Request[sluicev1.CompleteBatchRequest]) (*connect.Response[sluicev1.CompleteBatchResponse], error) {
	items := req.Msg.Items
	if len(items) == 0 || len(items) > maxClaim {
		return nil, fieldError(connect.CodeInvalidArgument, "items", "%d items, want 1..%d", len(items), maxClaim)
	}
	res := s.complete(ctx, items, "items", false)
	out := &sluicev1.CompleteBatchResponse{Results: make([]*sluicev1.CompleteBatchResult, len(items))}
	for i, r := range res {
		out.Results[i] = &sluicev1.CompleteBatchResult{JobId: items[i].JobId}
		if r.err != nil {
			var ce *connect.Error
			if errors.As(r.err, &ce) {
				out.Results[i].Error = ce.Code().String() + ": " + ce.Message()
			} else {
				out.Results[i].Error = r.err.Error()
			}
		}
	}
	return connect.NewResponse(out), nil
}

type completed struct {
	job *sluicev1.Job
	err error
}

// complete ends the leases of items and appends their job.attempted
// (SUCCEEDED) in one transaction; field names the items in errors. With
// jobs set it reads the completed jobs back for the answer.
func (s *WorkerService) complete(ctx context.Context, items []*sluicev1.CompleteRequest, field string, jobs bool) []completed {
	p := principalFrom(ctx)
	now := s.now()
	res := make([]completed, len(items))
	results := make([][]byte, len(items))
	var (
		refs  []projections.LeaseRef
		which []int // item of each ref
	)
	for i, it := range items {
		prefix := ""
		if field != "" {
			prefix = fmt.Sprintf("%s[%d].", field, i)
		}
		if cerr := checkLeaseRef(it.JobId, it.LeaseToken); cerr != nil {
			res[i].err = connect.NewError(cerr.Code(), fmt.Errorf("%s%s", prefix, cerr.Message()))
			continue
		}
		if it.Result != nil {
			b, err := payloadJSON(it.Result)
			if err != nil {
				res[i].err = fieldError(connect.CodeInvalidArgument, prefix+"result", "not valid JSON: %v", err)
				continue
			}
			results[i] = b
		}
		refs = append(refs, projections.LeaseRef{JobID: it.JobId, Token: it.LeaseToken})
		which = append(which, i)
	}
	if len(refs) == 0 {
		return res
	}
	leases, errs, err := s.store.FinishLeases(ctx, p.TenantID, refs, now)
	if err != nil {
		cerr := queueUnavailable(ctx, s.logger, "finish leases", err)
		for _, i := range which {
			res[i].err = cerr
		}
		return res
	}
	var (
		recs     []*kgo.Record
		finished []int // indexes into refs
	)
	for k, i := range which {
		if errs[k] != nil {
			res[i].err = s.leaseError(ctx, refs[k].JobID, errs[k])
			continue
		}
		ev := eventlog.NewEvent(workerMeta(p.TenantID, refs[k].JobID, p.KeyID, now), &eventv1.JobAttempted{
			Attempt: leases[k].Attempt, Outcome: eventv1.Outcome_OUTCOME_SUCCEEDED, Result: results[i],
		})
		rec, err := eventlog.EncodeEvent(s.topics.Events(), ev)
		if err != nil {
			res[i].err = connect.NewError(connect.CodeInternal, err)
			continue
		}
		recs = append(recs, rec)
		finished = append(finished, k)
	}
	if len(recs) == 0 {
		return res
	}
	// Each completion stands alone: one that fails to append keeps its
	// lease, and the worker may complete it again.
	appendErrs := s.log.AppendEach(ctx, recs)
	appended := finished[:0:0]
	for n, k := range finished {
		if appendErrs[n] == nil {
			appended = append(appended, k)
			continue
		}
		if rerr := s.store.RestoreLease(context.WithoutCancel(ctx), p.TenantID, refs[k].JobID, refs[k].Token, now); rerr != nil {
			s.logger.WarnContext(ctx, "restore lease", "job_id", refs[k].JobID, "error", rerr)
		}
		res[which[k]].err = queueUnavailable(ctx, s.logger, "append job.attempted", appendErrs[n])
	}
	finished = appended
	var snaps map[string]*projections.JobSnapshot
	if jobs {
		ids := make([]string, len(finished))
		for n, k := range finished {
			ids[n] = refs[k].JobID
		}
		snaps, _ = s.store.JobSnapshots(ctx, p.TenantID, ids)
	}
	for _, k := range finished {
		i := which[k]
		job := &sluicev1.Job{Id: refs[k].JobID}
		if snap, ok := snaps[refs[k].JobID]; ok {
			job = snap.Job
		}
		job.State = sluicev1.JobState_JOB_STATE_SUCCEEDED
		job.Attempt = leases[k].Attempt
		job.LeaseExpiresAt = nil
		job.UpdatedAt = timestamppb.New(now)
		if items[i].Result != nil {
			job.Result = items[i].Result
		}
		res[i].job = job
	}
	return res
}

// Fail ends a leased attempt with an error.
func (s *WorkerService) Fail(ctx context.Context, req *connect.Request[sluicev1.FailRequest]) (*connect.Response[sluicev1.FailResponse], error) {
	m := req.Msg
	if cerr := checkLeaseRef(m.JobId, m.LeaseToken); cerr != nil {
		return nil, cerr
	}
	if len(m.Error) > 64<<10 {
		return nil, fieldError(connect.CodeInvalidArgument, "error", "%d bytes, at most 65536", len(m.Error))
	}
	p := principalFrom(ctx)
	now := s.now()
	l, err := s.store.FinishLease(ctx, p.TenantID, m.JobId, m.LeaseToken, false, now)
	if err != nil {
		return nil, s.leaseError(ctx, m.JobId, err)
	}
	errText := m.Error
	if errText == "" {
		errText = "failed by worker"
	}
	job, err := s.fail(ctx, p.TenantID, l, errText, m.Retryable != nil && !*m.Retryable,
		&eventv1.Actor{Kind: eventv1.Actor_KIND_WORKER, Id: p.KeyID}, now)
	if err != nil {
		if rerr := s.store.RestoreLease(context.WithoutCancel(ctx), p.TenantID, m.JobId, m.LeaseToken, now); rerr != nil {
			s.logger.WarnContext(ctx, "restore lease", "job_id", m.JobId, "error", rerr)
		}
		return nil, queueUnavailable(ctx, s.logger, "append job.attempted", err)
	}
	return connect.NewResponse(&sluicev1.FailResponse{Job: job}), nil
}

// fail appends the failed attempt of a finished lease and what follows
// it (a timer for the next attempt, or a dead letter), and returns the job
// as it then stands.
func (s *WorkerService) fail(ctx context.Context, tenantID string, l projections.Lease, errText string, permanent bool, actor *eventv1.Actor, now time.Time) (*sluicev1.Job, error) {
	snaps, err := s.store.JobSnapshots(ctx, tenantID, []string{l.JobID})
	if err != nil {
		return nil, err
	}
	snap, ok := snaps[l.JobID]
	if !ok {
		return nil, fmt.Errorf("job %s vanished from the read model", l.JobID)
	}
	recs, attempt, err := failureRecords(s.topics, tenantID, snap, l, errText, permanent, actor, now)
	if err != nil {
		return nil, err
	}
	if err := s.log.AppendAtomic(ctx, recs); err != nil {
		return nil, err
	}
	job := proto.CloneOf(snap.Job)
	job.Attempt = l.Attempt
	job.LastError = errText
	job.LeaseExpiresAt = nil
	job.UpdatedAt = timestamppb.New(now)
	if attempt.Outcome == eventv1.Outcome_OUTCOME_DEAD {
		job.State = sluicev1.JobState_JOB_STATE_DEAD
	} else {
		job.State = sluicev1.JobState_JOB_STATE_RETRYING
		job.NextAttemptAt = attempt.NextAttemptAt
	}
	return job, nil
}

// checkLeaseRef checks the job id and lease token of a lease call.
func checkLeaseRef(jobID, token string) *connect.Error {
	if jobID == "" {
		return fieldError(connect.CodeInvalidArgument, "jobId", "required")
	}
	if token == "" {
		return fieldError(connect.CodeInvalidArgument, "leaseToken", "required")
	}
	return nil
}

// leaseError answers a lease call whose token did not hold.
func (s *WorkerService) leaseError(ctx context.Context, jobID string, err error) error {
	switch {
	case errors.Is(err, projections.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("job %s not found", jobID))
	case errors.Is(err, projections.ErrLeaseExpired):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("leaseToken: the lease of job %s expired; the attempt counts as failed", jobID))
	case errors.Is(err, projections.ErrNoLease):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"leaseToken: not the current lease of job %s (it was completed, failed, expired, or the job is leased to another worker)", jobID))
	}
	return queueUnavailable(ctx, s.logger, "lease", err)
}

// workerMeta is the envelope of an event a worker call writes.
func workerMeta(tenantID, jobID, workerID string, now time.Time) eventlog.Meta {
	return eventlog.Meta{
		TenantID: tenantID, JobID: jobID, OccurredAt: now,
		Actor: &eventv1.Actor{Kind: eventv1.Actor_KIND_WORKER, Id: workerID},
	}
}

// newLeaseToken returns 128 random bits, URL-safe.
func newLeaseToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "lease_" + base64.RawURLEncoding.EncodeToString(b[:])
}
