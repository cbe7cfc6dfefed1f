package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/sluicehq/sluice/proto/gen/sluice/event/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// JobSnapshot is everything the read model knows of a job: enough to
// send it round again without reading the log.
type JobSnapshot struct {
	// Job is the job as GetJob returns it.
	Job *sluicev1.Job
	// Spec is what the job runs with: as enqueued, with the payload of
	// the latest retry that replaced it.
	Spec *eventv1.JobSpec
	// BudgetStart is the first attempt of the job's current attempt
	// budget; 0 when the job was never retried by hand.
	BudgetStart int32
	// Attempts are the job's finished attempts, oldest first.
	Attempts []*eventv1.JobAttempted
}

// JobSnapshots returns the snapshots of the tenant's jobs in jobIDs, in
// one round trip. Jobs that do not exist are absent from the map.
func (s *Store) JobSnapshots(ctx context.Context, tenantID string, jobIDs []string) (map[string]*JobSnapshot, error) {
	rows, err := s.readJobs(ctx, tenantID, jobIDs)
	if err != nil {
		return nil, err
	}
	snaps := make(map[string]*JobSnapshot, len(rows))
	for i, r := range rows {
		if r == nil {
			continue
		}
		snap, err := decodeSnapshot(r)
		if err != nil {
			return nil, err
		}
		snaps[jobIDs[i]] = snap
	}
	return snaps, nil
}

// JobRun is where a job stands for delivery.
type JobRun struct {
	State sluicev1.JobState
	// BudgetStart is the first attempt of the job's current attempt
	// budget; 0 when the job was never retried by hand. A job.ready whose
	// budget_start is below it belongs to a run the retry replaced.
	BudgetStart int32
	// EnqueueEventID is the event that created the job: of several
	// job.enqueued with one (derived) id, the first in log order.
	EnqueueEventID string
	// CreatedAt is the creation time in the winning job.enqueued's spec,
	// in Unix microseconds: a job.ready whose spec says otherwise comes
	// from a losing duplicate.
	CreatedAt int64
	// Attempt is the latest finished attempt.
	Attempt int32
	// Purged is set for a purged job's tombstone: every later event of
	// the job is ignored (State is unspecified).
	Purged bool
}

// JobRuns returns the state and attempt budget of each of the tenant's
// jobs in jobIDs, in one round trip. Jobs that do not exist are absent
// from the map; a purged job is present with Purged set.
func (s *Store) JobRuns(ctx context.Context, tenantID string, jobIDs []string) (map[string]JobRun, error) {
	ids := slices.Compact(slices.Sorted(slices.Values(jobIDs)))
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.keys.job(tenantID, id), "state", "budget_start", "eid", "created_at", "attempt", "tombstone")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read runs of %d jobs: %w", len(ids), err)
	}
	runs := make(map[string]JobRun, len(ids))
	for i, c := range cmds {
		v := c.Val()
		if str(v[5]) != "" {
			runs[ids[i]] = JobRun{Purged: true}
			continue
		}
		st, ok := parseState(str(v[0]))
		if !ok {
			continue
		}
		budget, _ := strconv.ParseInt(str(v[1]), 10, 32)
		created, _ := strconv.ParseInt(str(v[3]), 10, 64)
		attempt, _ := strconv.ParseInt(str(v[4]), 10, 32)
		runs[ids[i]] = JobRun{State: st, BudgetStart: int32(budget), EnqueueEventID: str(v[2]), CreatedAt: created, Attempt: int32(attempt)}
	}
	return runs, nil
}

// jobRow is a job's hash and its attempts hash.
type jobRow struct {
	hash     map[string]string
	attempts map[string]string
}

// readJobs reads the rows of the tenant's jobs in one pipeline; a job
// that does not exist (or was purged) has a nil row.
func (s *Store) readJobs(ctx context.Context, tenantID string, jobIDs []string) ([]*jobRow, error) {
	hashes := make([]*redis.MapStringStringCmd, len(jobIDs))
	attempts := make([]*redis.MapStringStringCmd, len(jobIDs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range jobIDs {
			hashes[i] = p.HGetAll(ctx, s.keys.job(tenantID, id))
			attempts[i] = p.HGetAll(ctx, s.keys.attempts(tenantID, id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read %d jobs: %w", len(jobIDs), err)
	}
	rows := make([]*jobRow, len(jobIDs))
	for i := range jobIDs {
		if live(hashes[i].Val()) {
			rows[i] = &jobRow{hash: hashes[i].Val(), attempts: attempts[i].Val()}
		}
	}
	return rows, nil
}

// decodeSnapshot reads a job's row.
func decodeSnapshot(r *jobRow) (*JobSnapshot, error) {
	job, err := decodeJob(r.hash)
	if err != nil {
		return nil, err
	}
	attempts, err := decodeAttempts(job.Id, r.attempts)
	if err != nil {
		return nil, err
	}
	d := hashDecoder{h: r.hash}
	return &JobSnapshot{
		Job: job,
		Spec: &eventv1.JobSpec{
			Queue:          job.Queue,
			Payload:        []byte(r.hash["payload"]),
			Target:         job.Target,
			IdempotencyKey: job.IdempotencyKey,
			RunAt:          job.RunAt,
			Priority:       job.Priority,
			MaxAttempts:    job.MaxAttempts,
			RetryPolicy:    job.RetryPolicy,
			Timeout:        job.Timeout,
			Headers:        job.Headers,
			CreatedAt:      job.CreatedAt,
			ContentType:    r.hash["content_type"],
		},
		BudgetStart: d.int32("budget_start"),
		Attempts:    attempts,
	}, d.err
}

// decodeAttempts reads an attempts hash, oldest attempt first.
func decodeAttempts(jobID string, h map[string]string) ([]*eventv1.JobAttempted, error) {
	attempts := make([]*eventv1.JobAttempted, 0, len(h))
	for n, b := range h {
		a := new(eventv1.JobAttempted)
		if err := proto.Unmarshal([]byte(b), a); err != nil {
			return nil, fmt.Errorf("decode attempt %s of job %s: %w", n, jobID, err)
		}
		attempts = append(attempts, a)
	}
	slices.SortFunc(attempts, func(a, b *eventv1.JobAttempted) int { return int(a.GetAttempt() - b.GetAttempt()) })
	return attempts, nil
}
