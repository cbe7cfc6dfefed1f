package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// GetJob returns a job of the tenant, or ErrNotFound.
func (s *Store) GetJob(ctx context.Context, tenantID, jobID string) (*sluicev1.Job, error) {
	h, err := s.rdb.HGetAll(ctx, s.keys.job(tenantID, jobID)).Result()
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", jobID, err)
	}
	if !live(h) {
		return nil, ErrNotFound
	}
	return decodeJob(h)
}

// Page sizes of ListJobs.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// ListQuery selects and pages the jobs ListJobs returns.
type ListQuery struct {
	// Queue narrows the list to one queue; "" lists every queue.
	Queue string
	// State narrows the list to one state; unspecified lists every state.
	State sluicev1.JobState
	// PageSize is the most jobs returned, at most MaxPageSize. Default
	// (zero) DefaultPageSize.
	PageSize int
	// PageToken continues a listing: the next token of the previous page.
	// "" starts with the newest job.
	PageToken string
}

// validate returns the page size to use and the member to continue after,
// or a FieldError.
func (q ListQuery) validate() (size int, after string, err error) {
	size = q.PageSize
	switch {
	case size == 0:
		size = DefaultPageSize
	case size < 0 || size > MaxPageSize:
		return 0, "", &FieldError{Field: "pageSize", Reason: "must be between 0 and " + strconv.Itoa(MaxPageSize)}
	}
	if _, known := sluicev1.JobState_name[int32(q.State)]; !known {
		return 0, "", &FieldError{Field: "state", Reason: "unknown state"}
	}
	if q.PageToken != "" {
		if after, err = parsePageToken(q.PageToken); err != nil {
			return 0, "", err
		}
	}
	return size, after, nil
}

// ListJobs returns a page of the tenant's jobs, newest (by creation time)
// first, and the token of the next page, "" after the last. A job that
// changes state while a listing by state is paged may be missed or seen
// twice; a listing without a state sees every job created before it began
// exactly once.
func (s *Store) ListJobs(ctx context.Context, tenantID string, q ListQuery) (jobs []*sluicev1.Job, next string, err error) {
	size, after, err := q.validate()
	if err != nil {
		return nil, "", err
	}
	start := "+"
	if after != "" {
		start = "(" + after
	}
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.keys.index(tenantID, q.Queue, q.State), Start: start, Stop: "-",
		ByLex: true, Rev: true, Count: int64(size) + 1,
	}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	if len(members) > size {
		members = members[:size]
		next = pageToken(members[size-1])
	}
	jobs, err = s.jobs(ctx, tenantID, members)
	return jobs, next, err
}

// jobs reads the jobs of index members in one pipeline, skipping any that
// vanished meanwhile.
func (s *Store) jobs(ctx context.Context, tenantID string, members []string) ([]*sluicev1.Job, error) {
	if len(members) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, 0, len(members))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range members {
			id, _ := memberJobID(m)
			cmds = append(cmds, p.HGetAll(ctx, s.keys.job(tenantID, id)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %d jobs: %w", len(members), err)
	}
	jobs := make([]*sluicev1.Job, 0, len(cmds))
	for _, c := range cmds {
		if !live(c.Val()) {
			continue
		}
		j, err := decodeJob(c.Val())
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// JobStates returns the state of each of the tenant's jobs in jobIDs, in
// one round trip. Jobs that do not exist are absent from the map.
func (s *Store) JobStates(ctx context.Context, tenantID string, jobIDs []string) (map[string]sluicev1.JobState, error) {
	ids := slices.Compact(slices.Sorted(slices.Values(jobIDs)))
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGet(ctx, s.keys.job(tenantID, id), "state")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read states of %d jobs: %w", len(ids), err)
	}
	states := make(map[string]sluicev1.JobState, len(ids))
	for i, c := range cmds {
		if st, ok := parseState(c.Val()); ok {
			states[ids[i]] = st
		}
	}
	return states, nil
}

// QueueCounts returns how many of the tenant's jobs of queue are in each
// state; every state is in the map, zero included.
func (s *Store) QueueCounts(ctx context.Context, tenantID, queue string) (map[sluicev1.JobState]int64, error) {
	h, err := s.rdb.HGetAll(ctx, s.keys.counts(tenantID, queue)).Result()
	if err != nil {
		return nil, fmt.Errorf("count jobs of queue %s: %w", queue, err)
	}
	counts := make(map[sluicev1.JobState]int64, len(sluicev1.JobState_name)-1)
	for v := range sluicev1.JobState_name {
		if v != 0 {
			counts[sluicev1.JobState(v)] = 0
		}
	}
	for name, n := range h {
		st, ok := parseState(name)
		if !ok {
			continue
		}
		if counts[st], err = strconv.ParseInt(n, 10, 64); err != nil {
			return nil, fmt.Errorf("count jobs of queue %s in state %s: %w", queue, name, err)
		}
	}
	return counts, nil
}
