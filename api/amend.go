package api

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/tenancy"
)

// Bounds of the calls that retry or purge many jobs.
const (
	// maxSelection is the most jobs one call may select.
	maxSelection = 10000
	// txnJobs is the most jobs whose records share one transaction.
	txnJobs = 1000
	// txnBytes closes a transaction early once its records reach it, so
	// large payloads never make one huge transaction.
	txnBytes = 16 << 20
	// readChunk is how many jobs are read from the read model at once.
	readChunk = 100
)

// DeadLetterStore reads dead letters and the jobs to retry or purge;
// projections.Store implements it.
type DeadLetterStore interface {
	ListDeadLetters(ctx context.Context, tenantID string, q projections.DeadLetterQuery) ([]*sluicev1.DeadLetter, string, error)
	FindDeadLetters(ctx context.Context, tenantID string, f projections.DeadLetterFilter, limit int) ([]string, bool, error)
	JobSnapshots(ctx context.Context, tenantID string, jobIDs []string) (map[string]*projections.JobSnapshot, error)
	JobStates(ctx context.Context, tenantID string, jobIDs []string) (map[string]sluicev1.JobState, error)
}

// amender writes the events that amend jobs after the fact: retries by
// hand and purges. Each job's records go into one transaction, with
// those of up to txnJobs other jobs.
type amender struct {
	log    Appender
	store  DeadLetterStore
	topics eventlog.Topics
	now    func() time.Time
}

// retryOrder is what a retry call asks for.
type retryOrder struct {
	// payload replaces each job's payload, as JSON; nil keeps it.
	payload []byte
	reason  string
	// from are the states a job may be retried from; others are skipped.
	from []sluicev1.JobState
}

// retry sends the jobs among ids whose state o allows round again and
// returns how many it retried; after an error, how many are retried in
// the log.
func (a *amender) retry(ctx context.Context, p tenancy.Principal, ids []string, o retryOrder) (int, error) {
	b := a.newBatch()
	for chunk := range slices.Chunk(ids, readChunk) {
		snaps, err := a.store.JobSnapshots(ctx, p.TenantID, chunk)
		if err != nil {
			return b.committed, fmt.Errorf("read jobs to retry: %w", err)
		}
		for _, id := range chunk {
			snap, ok := snaps[id]
			if !ok || !slices.Contains(o.from, snap.Job.State) {
				continue
			}
			recs, err := a.retryRecords(p, snap, o, a.now())
			if err != nil {
				return b.committed, err
			}
			if err := b.add(ctx, recs); err != nil {
				return b.committed, err
			}
		}
	}
	err := b.flush(ctx)
	return b.committed, err
}

// retryOne sends one job round again, whatever its state, and returns
// the job as it now stands.
func (a *amender) retryOne(ctx context.Context, p tenancy.Principal, snap *projections.JobSnapshot, o retryOrder) (*sluicev1.Job, error) {
	now := a.now()
	recs, err := a.retryRecords(p, snap, o, now)
	if err != nil {
		return nil, err
	}
	if err := a.log.AppendAtomic(ctx, recs); err != nil {
		return nil, fmt.Errorf("append job.retried and job.ready of job %s: %w", snap.Job.Id, err)
	}
	return retriedJob(p, snap, o, now), nil
}

// retriedJob is a job as it stands once retried.
func retriedJob(p tenancy.Principal, snap *projections.JobSnapshot, o retryOrder, now time.Time) *sluicev1.Job {
	j := proto.CloneOf(snap.Job)
	j.State = sluicev1.JobState_JOB_STATE_READY
	j.UpdatedAt = timestamppb.New(now)
	j.NextAttemptAt = nil
	j.Retries++
	j.LastRetry = &sluicev1.JobRetry{
		At:                j.UpdatedAt,
		Reason:            o.reason,
		Actor:             projections.ActorName(apiKeyActor(p)),
		FromState:         snap.Job.State,
		PayloadOverridden: o.payload != nil,
		BudgetStart:       nextBudget(snap),
	}
	if o.payload != nil {
		j.Payload = payloadValue(o.payload)
	}
	return j
}

// nextBudget is the first attempt of a retried job's new budget: above
// every attempt and every earlier retry of the job.
func nextBudget(snap *projections.JobSnapshot) int32 {
	return max(snap.Job.Attempt, snap.BudgetStart) + 1
}

// retryRecords are the job.retried and job.ready events that send one
// job round again, from a fresh attempt budget that starts above every
// attempt and every earlier retry of the job.
func (a *amender) retryRecords(p tenancy.Principal, snap *projections.JobSnapshot, o retryOrder, now time.Time) ([]*kgo.Record, error) {
	next := nextBudget(snap)
	spec := proto.CloneOf(snap.Spec)
	if o.payload != nil {
		spec.Payload = o.payload
	}
	meta := eventMeta(p, snap.Job.Id, now)
	retried := eventlog.NewEvent(meta, &eventv1.JobRetried{
		Reason: o.reason, PayloadOverride: o.payload, BudgetStart: next, FromState: snap.Job.State,
	})
	meta.CausationID = retried.EventId
	ready := eventlog.NewEvent(meta, &eventv1.JobReady{
		Attempt: next, Spec: spec, History: snap.Attempts, BudgetStart: next,
	})
	recs, err := a.encode(retried)
	if err != nil {
		return nil, err
	}
	// Delivery runs this job.ready even before the read model folds the
	// retry: its budget is newer than the one the job was cancelled in.
	run, err := eventlog.EncodeEvent(a.topics.Events(), ready)
	if err != nil {
		return nil, err
	}
	return append(recs, run), nil
}

// purge deletes the dead jobs among ids and returns how many it purged;
// after an error, how many are purged in the log.
func (a *amender) purge(ctx context.Context, p tenancy.Principal, ids []string) (int, error) {
	b := a.newBatch()
	for chunk := range slices.Chunk(ids, txnJobs) {
		states, err := a.store.JobStates(ctx, p.TenantID, chunk)
		if err != nil {
			return b.committed, fmt.Errorf("read jobs to purge: %w", err)
		}
		for _, id := range chunk {
			if states[id] != sluicev1.JobState_JOB_STATE_DEAD {
				continue
			}
			recs, err := a.encode(eventlog.NewEvent(eventMeta(p, id, a.now()), &eventv1.JobPurged{Reason: "purged by API"}))
			if err != nil {
				return b.committed, err
			}
			if err := b.add(ctx, recs); err != nil {
				return b.committed, err
			}
		}
	}
	err := b.flush(ctx)
	return b.committed, err
}

// eventMeta is the envelope of an event a caller's request writes about
// a job.
func eventMeta(p tenancy.Principal, jobID string, now time.Time) eventlog.Meta {
	return eventlog.Meta{TenantID: p.TenantID, JobID: jobID, OccurredAt: now, Actor: apiKeyActor(p)}
}

// apiKeyActor is the actor of the events a caller's request writes.
func apiKeyActor(p tenancy.Principal) *eventv1.Actor {
	return &eventv1.Actor{Kind: eventv1.Actor_KIND_API_KEY, Id: p.KeyID}
}

// encode turns events into records of the events topic.
func (a *amender) encode(evs ...*eventv1.Event) ([]*kgo.Record, error) {
	recs := make([]*kgo.Record, len(evs))
	for i, ev := range evs {
		rec, err := eventlog.EncodeEvent(a.topics.Events(), ev)
		if err != nil {
			return nil, err
		}
		recs[i] = rec
	}
	return recs, nil
}

// txnBatch gathers the records of whole jobs and appends them in
// transactions of at most txnJobs jobs and about txnBytes.
type txnBatch struct {
	log       Appender
	recs      []*kgo.Record
	jobs      int
	bytes     int
	committed int // jobs whose records are in the log
}

func (a *amender) newBatch() *txnBatch { return &txnBatch{log: a.log} }

// add adds one job's records, appending the batch first when it is full.
func (b *txnBatch) add(ctx context.Context, recs []*kgo.Record) error {
	if b.jobs == txnJobs || b.bytes >= txnBytes {
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	b.recs = append(b.recs, recs...)
	b.jobs++
	for _, r := range recs {
		b.bytes += len(r.Key) + len(r.Value)
	}
	return nil
}

// flush appends the gathered records in one transaction.
func (b *txnBatch) flush(ctx context.Context) error {
	if b.jobs == 0 {
		return nil
	}
	if err := b.log.AppendAtomic(ctx, b.recs); err != nil {
		return fmt.Errorf("append %d records of %d jobs in one transaction: %w", len(b.recs), b.jobs, err)
	}
	b.committed += b.jobs
	b.recs, b.jobs, b.bytes = nil, 0, 0
	return nil
}

// amendError answers a retry or purge that failed after done jobs were
// written, without leaking internals.
func amendError(ctx context.Context, logger *slog.Logger, op string, done int, err error) error {
	logger.ErrorContext(ctx, op, "error", err, "jobs_written", done)
	switch {
	case ctx.Err() != nil:
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
			"%s: request cancelled after %d jobs were written; repeat it for the rest (jobs done are skipped once the read model shows them)", op, done))
	case done > 0:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf(
			"%s failed after %d jobs were written; repeat it for the rest (jobs done are skipped once the read model shows them)", op, done))
	default:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s failed; nothing was written, retry it", op))
	}
}
