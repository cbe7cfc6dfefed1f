package projections

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// DeadLetterFilter selects dead jobs; every non-zero field must match.
type DeadLetterFilter struct {
	// Queue is the job's queue.
	Queue string
	// Target is an http:// or https:// prefix of the job's target URL, or
	// else an endpoint id, matched exactly.
	Target string
	// ErrorContains is text contained, ignoring case, in the last
	// attempt's error or in the reason the job died.
	ErrorContains string
	// DiedAfter selects jobs that died at or after it.
	DiedAfter time.Time
	// DiedBefore selects jobs that died before it.
	DiedBefore time.Time
}

// inspects reports whether matching f needs the jobs' fields, not just
// the dead-letter index.
func (f DeadLetterFilter) inspects() bool { return f.Target != "" || f.ErrorContains != "" }

// matches reports whether a dead job's target, last error and death
// reason match f's Target and ErrorContains.
func (f DeadLetterFilter) matches(target *sluicev1.Target, lastErr, reason string) bool {
	if f.Target != "" {
		if strings.HasPrefix(f.Target, "http://") || strings.HasPrefix(f.Target, "https://") {
			if !strings.HasPrefix(target.GetUrl(), f.Target) {
				return false
			}
		} else if target.GetEndpointId() != f.Target {
			return false
		}
	}
	if f.ErrorContains != "" {
		want := strings.ToLower(f.ErrorContains)
		return strings.Contains(strings.ToLower(lastErr), want) || strings.Contains(strings.ToLower(reason), want)
	}
	return true
}

// DeadLetterQuery selects and pages the dead letters ListDeadLetters
// returns.
type DeadLetterQuery struct {
	DeadLetterFilter
	// PageSize is the most dead letters returned, at most MaxPageSize.
	// Default (zero) DefaultPageSize.
	PageSize int
	// PageToken continues a listing: the next token of the previous page.
	// "" starts with the latest death.
	PageToken string
}

// MaxDeadLetterScan is the most dead letters one ListDeadLetters page
// examines for a filter on target or error; a page that found fewer
// matches ends early with a next page token.
const MaxDeadLetterScan = 10000

// deadChunk is how many index members one read of the dead-letter index
// takes.
const deadChunk = 500

// ListDeadLetters returns a page of the tenant's dead jobs matching q,
// latest death first, each with its attempts, and the token of the next
// page, "" after the last. A filter on target or error examines at most
// MaxDeadLetterScan dead letters per page, so a page may hold fewer than
// PageSize and still have a next page.
func (s *Store) ListDeadLetters(ctx context.Context, tenantID string, q DeadLetterQuery) ([]*sluicev1.DeadLetter, string, error) {
	size, after, err := ListQuery{PageSize: q.PageSize, PageToken: q.PageToken}.validate()
	if err != nil {
		return nil, "", err
	}
	found, last, done, err := s.matchDead(ctx, tenantID, q.DeadLetterFilter, after, size+1, s.deadScan)
	if err != nil {
		return nil, "", err
	}
	next := ""
	switch {
	case len(found) > size:
		found = found[:size]
		next = pageToken(found[size-1])
	case !done:
		next = pageToken(last)
	}
	dls, err := s.deadLetters(ctx, tenantID, found)
	return dls, next, err
}

// FindDeadLetters returns the ids of the tenant's dead jobs matching f,
// latest death first: at most limit of them, and whether more match.
func (s *Store) FindDeadLetters(ctx context.Context, tenantID string, f DeadLetterFilter, limit int) (ids []string, more bool, err error) {
	found, _, _, err := s.matchDead(ctx, tenantID, f, "", limit+1, math.MaxInt)
	if err != nil {
		return nil, false, err
	}
	if more = len(found) > limit; more {
		found = found[:limit]
	}
	ids = make([]string, len(found))
	for i, m := range found {
		ids[i], _ = memberJobID(m)
	}
	return ids, more, nil
}

// matchDead walks the dead-letter index newest first from after (""
// for the start), within f's time range, and returns the members of the
// jobs matching f: up to want of them, examining at most examine members.
// last is the member to continue after; done reports that the index ran
// out.
func (s *Store) matchDead(ctx context.Context, tenantID string, f DeadLetterFilter, after string, want, examine int) (found []string, last string, done bool, err error) {
	start, stop := deadRange(f, after)
	for examine > 0 {
		n := min(deadChunk, examine)
		if !f.inspects() {
			n = min(n, want-len(found)) // every member matches
		}
		members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: s.keys.dlq(tenantID, f.Queue), Start: start, Stop: stop,
			ByLex: true, Rev: true, Count: int64(n),
		}).Result()
		if err != nil {
			return nil, "", false, fmt.Errorf("list dead letters: %w", err)
		}
		ok, err := s.matching(ctx, tenantID, f, members)
		if err != nil {
			return nil, "", false, err
		}
		for i, m := range members {
			last = m
			if ok[i] {
				if found = append(found, m); len(found) == want {
					return found, last, false, nil
				}
			}
		}
		if len(members) < n {
			return found, last, true, nil
		}
		examine -= n
		start = "(" + last
	}
	return found, last, false, nil
}

// deadRange is the BYLEX range, from the newest end, of the dead letters
// after the member after and within f's times.
func deadRange(f DeadLetterFilter, after string) (start, stop string) {
	start, stop = "+", "-"
	if !f.DiedBefore.IsZero() {
		start = "(" + timePrefix(f.DiedBefore)
	}
	if after != "" && (start == "+" || "("+after < start) {
		start = "(" + after
	}
	if !f.DiedAfter.IsZero() {
		stop = "[" + timePrefix(f.DiedAfter)
	}
	return start, stop
}

// matching reports for each dead-letter index member whether its job
// matches f's target and error, reading only those fields. A job gone
// meanwhile does not match.
func (s *Store) matching(ctx context.Context, tenantID string, f DeadLetterFilter, members []string) ([]bool, error) {
	ok := make([]bool, len(members))
	if !f.inspects() {
		for i := range ok {
			ok[i] = true
		}
		return ok, nil
	}
	cmds := make([]*redis.SliceCmd, len(members))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			id, _ := memberJobID(m)
			cmds[i] = p.HMGet(ctx, s.keys.job(tenantID, id), "state", "target", "last_error", "dead_reason")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %d dead letters: %w", len(members), err)
	}
	for i, c := range cmds {
		v := c.Val()
		if str(v[0]) != stateName(sluicev1.JobState_JOB_STATE_DEAD) {
			continue
		}
		target := new(sluicev1.Target)
		if t := str(v[1]); t != "" && protojson.Unmarshal([]byte(t), target) != nil {
			continue
		}
		ok[i] = f.matches(target, str(v[2]), str(v[3]))
	}
	return ok, nil
}

// str is an HMGET value as a string; "" for a missing field.
func str(v any) string {
	s, _ := v.(string)
	return s
}

// deadLetters reads the dead letters of index members, with their
// attempts, in one pipeline; jobs gone or retried meanwhile are left out.
func (s *Store) deadLetters(ctx context.Context, tenantID string, members []string) ([]*sluicev1.DeadLetter, error) {
	if len(members) == 0 {
		return nil, nil
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i], _ = memberJobID(m)
	}
	rows, err := s.readJobs(ctx, tenantID, ids)
	if err != nil {
		return nil, err
	}
	dls := make([]*sluicev1.DeadLetter, 0, len(rows))
	for _, r := range rows {
		if r == nil || r.hash["state"] != stateName(sluicev1.JobState_JOB_STATE_DEAD) {
			continue
		}
		dl, err := decodeDeadLetter(r)
		if err != nil {
			return nil, err
		}
		dls = append(dls, dl)
	}
	return dls, nil
}

// decodeDeadLetter reads a dead job's row.
func decodeDeadLetter(r *jobRow) (*sluicev1.DeadLetter, error) {
	job, err := decodeJob(r.hash)
	if err != nil {
		return nil, err
	}
	attempts, err := decodeAttempts(job.Id, r.attempts)
	if err != nil {
		return nil, err
	}
	d := hashDecoder{h: r.hash}
	dl := &sluicev1.DeadLetter{Job: job, Reason: r.hash["dead_reason"], DiedAt: d.time("died_at")}
	for _, a := range attempts {
		dl.Attempts = append(dl.Attempts, &sluicev1.JobAttempt{
			Attempt:         a.GetAttempt(),
			StartedAt:       a.GetStartedAt(),
			Latency:         a.GetLatency(),
			StatusCode:      a.GetStatusCode(),
			Error:           a.GetError(),
			ResponseExcerpt: strings.ToValidUTF8(string(a.GetResponseExcerpt()), "\uFFFD"),
		})
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode dead letter %s: %w", job.Id, d.err)
	}
	return dl, nil
}
