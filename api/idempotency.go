package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/log/eventlog"
	"github.com/sluicehq/sluice/projections"
	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// DefaultIdempotencyWindow is how long an idempotency key is remembered
// unless Config.IdempotencyWindow says otherwise.
const DefaultIdempotencyWindow = 7 * 24 * time.Hour

// settleTimeout bounds the wait for the read model to show which
// job.enqueued of a key won.
const settleTimeout = 10 * time.Second

// enqueueAll appends the jobs of specs, all or nothing, and answers for
// each in order.
//
// A job with an idempotency key gets the id eventlog.KeyedJobID derives
// from its tenant and key, so every node names duplicates alike and they
// share a partition; of several job.enqueued with one id the first in log
// order creates the job and the others change nothing (the read model and
// delivery both ignore them). A key the read model already shows answers
// with that job at once. Otherwise the job is appended, and the answer
// waits until the read model shows which job.enqueued won: created is
// true only for the winner, so of racing duplicates exactly one hears
// created. Within one call, repeats of a key collapse to the first.
//
// A key is remembered for the idempotency window, counted from the job's
// creation, or until the job is purged. Past it the key starts a new job,
// with an id derived from the key and the old job's id, which again every
// node derives alike.
func (s *JobService) enqueueAll(ctx context.Context, tenantID, keyID string, specs []*eventv1.JobSpec, payloads []*structpb.Value, now time.Time) ([]*sluicev1.EnqueueResponse, error) {
	results := make([]*sluicev1.EnqueueResponse, len(specs))
	firstOfKey := make(map[string]int)
	var (
		recs    []*kgo.Record
		pending []keyedJob
		repeats [][2]int // {index, index of the key's first job}
	)
	for i, spec := range specs {
		key := spec.IdempotencyKey
		id := eventlog.NewID()
		if key != "" {
			if first, ok := firstOfKey[key]; ok {
				repeats = append(repeats, [2]int{i, first})
				continue
			}
			firstOfKey[key] = i
			var existing *sluicev1.Job
			var err error
			id, existing, err = s.keyedJobID(ctx, tenantID, key, now)
			if err != nil {
				return nil, s.unavailable(ctx, "read idempotency key", err)
			}
			if existing != nil {
				results[i] = &sluicev1.EnqueueResponse{Job: existing}
				continue
			}
		}
		ev, jobRecs, err := s.enqueuedRecords(tenantID, keyID, id, spec, now)
		if err != nil {
			return nil, err
		}
		recs = append(recs, jobRecs...)
		results[i] = &sluicev1.EnqueueResponse{Job: jobFromSpec(id, spec, payloads[i], now), Created: true}
		if key != "" {
			pending = append(pending, keyedJob{index: i, id: id, eventID: ev.EventId})
		}
	}
	var err error
	switch len(recs) {
	case 0:
	case 1:
		err = s.log.Append(ctx, recs...)
	default:
		err = s.log.AppendAtomic(ctx, recs)
	}
	if err != nil {
		return nil, s.unavailable(ctx, "append job.enqueued", err)
	}
	if err := s.settle(ctx, tenantID, pending, results); err != nil {
		return nil, err
	}
	for _, r := range repeats {
		results[r[0]] = &sluicev1.EnqueueResponse{Job: results[r[1]].Job}
	}
	return results, nil
}

// keyedJob is an appended job whose key may have lost a race.
type keyedJob struct {
	index       int
	id, eventID string
}

// keyedJobID returns the id a key names now, and the job it names when
// that job exists and the key is within its window.
func (s *JobService) keyedJobID(ctx context.Context, tenantID, key string, now time.Time) (string, *sluicev1.Job, error) {
	id := eventlog.KeyedJobID(tenantID, key)
	for range 1000 { // a key reused every window for 19 years
		runs, err := s.store.JobRuns(ctx, tenantID, []string{id})
		if err != nil {
			return "", nil, err
		}
		if runs[id].Purged {
			// A purged job's id stays taken by its tombstone; its key
			// starts a new job.
			id = eventlog.KeyedJobID(tenantID, key+"\x00"+id)
			continue
		}
		job, err := s.store.GetJob(ctx, tenantID, id)
		if errors.Is(err, projections.ErrNotFound) {
			return id, nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		if job.CreatedAt == nil || now.Sub(job.CreatedAt.AsTime()) < s.idempotency {
			return id, job, nil
		}
		id = eventlog.KeyedJobID(tenantID, key+"\x00"+id)
	}
	return "", nil, fmt.Errorf("idempotency key %q: too many generations", key)
}

// settle waits until the read model shows the jobs in pending and turns
// the answers of those whose job.enqueued lost into the winner's job,
// not created.
func (s *JobService) settle(ctx context.Context, tenantID string, pending []keyedJob, results []*sluicev1.EnqueueResponse) error {
	if len(pending) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	ids := make([]string, len(pending))
	for i, p := range pending {
		ids[i] = p.id
	}
	wait := time.Millisecond
	for {
		runs, err := s.store.JobRuns(ctx, tenantID, ids)
		if err != nil && ctx.Err() == nil {
			return s.unavailable(ctx, "read enqueued jobs", err)
		}
		if err == nil && len(runs) == len(ids) {
			var lost []string
			for _, p := range pending {
				if runs[p.id].EnqueueEventID != p.eventID {
					lost = append(lost, p.id)
				}
			}
			return s.answerLosers(ctx, tenantID, pending, lost, results)
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, 50*time.Millisecond)
		case <-ctx.Done():
			s.logger.WarnContext(ctx, "enqueued jobs not yet in the read model", "jobs", len(ids), "timeout", settleTimeout)
			// Not unavailable: the log accepted the jobs. Repeating the
			// request is safe for keyed jobs; unkeyed ones would be
			// enqueued again.
			return connect.NewError(connect.CodeDeadlineExceeded, errors.New(
				"the jobs were appended but the read model does not show them yet; repeat the request with the same idempotency keys to learn their ids"))
		}
	}
}

// answerLosers replaces the answers of the jobs in lost with the jobs
// that won their keys.
func (s *JobService) answerLosers(ctx context.Context, tenantID string, pending []keyedJob, lost []string, results []*sluicev1.EnqueueResponse) error {
	if len(lost) == 0 {
		return nil
	}
	won := make(map[string]*sluicev1.Job, len(lost))
	for _, id := range lost {
		job, err := s.store.GetJob(ctx, tenantID, id)
		if err != nil {
			return s.unavailable(ctx, "read job of idempotency key", err)
		}
		won[id] = job
	}
	for _, p := range pending {
		if job, ok := won[p.id]; ok {
			results[p.index] = &sluicev1.EnqueueResponse{Job: job}
		}
	}
	return nil
}
