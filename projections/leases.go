package projections

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// ErrNoLease is returned when a lease token is not the job's current
// lease: the job is not running, another worker holds it, or the lease
// was completed, failed or expired.
var ErrNoLease = errors.New("projections: lease token is not the job's current lease")

// ErrLeaseExpired is returned for a lease token whose lease ran out.
var ErrLeaseExpired = errors.New("projections: lease expired")

// Results of fold.lua's lease operations besides a table.
const (
	leaseNoLease = 4
	leaseExpired = 5
)

// Lease is a job leased to a worker.
type Lease struct {
	JobID string
	Token string
	// Attempt is the attempt the lease runs (1-based).
	Attempt int32
	// BudgetStart is the job's current attempt budget start; 0 means 1.
	BudgetStart int32
	ExpiresAt   time.Time
	// Job is the job as the lease began (Claim only).
	Job *sluicev1.Job
}

// flatHash reads an HGETALL reply a script returned: field, value, ...
func flatHash(v any) map[string]string {
	list, _ := v.([]any)
	h := make(map[string]string, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		k, _ := list[i].(string)
		h[k], _ = list[i+1].(string)
	}
	return h
}

// ClaimRequest is what Claim leases.
type ClaimRequest struct {
	TenantID, Queue, WorkerID string
	// Max is the most jobs to lease.
	Max int
	// Duration is the lease's length.
	Duration time.Duration
	// RunningLimit caps the queue's running jobs; 0 means none.
	RunningLimit int
	// NewToken returns a fresh lease token.
	NewToken func() string
	Now      time.Time
}

//go:embed claim.lua
var claimSource string

// claimScript leases many jobs of a queue in one call.
var claimScript = redis.NewScript(claimSource)

// Claim leases up to req.Max of a queue's claimable jobs, highest
// priority first, then longest ready first, in one atomic step. Each lease
// takes effect in the read model at once, so no two callers lease one
// job; the caller must record each lease in the log (job.claimed) or
// Release it.
func (s *Store) Claim(ctx context.Context, req ClaimRequest) ([]Lease, error) {
	expires := req.Now.Add(req.Duration)
	keys := []string{
		s.keys.claimable(req.TenantID, req.Queue), s.keys.epoch(), s.keys.leases(), s.keys.counts(req.TenantID, req.Queue),
	}
	args := make([]any, 0, 9+req.Max)
	args = append(args, "", s.keys.tenant(req.TenantID), escape(req.Queue), req.Max, micros(req.Now),
		micros(expires), req.WorkerID, int64(req.Duration), req.RunningLimit)
	tokens := make([]string, req.Max)
	for i := range tokens {
		tokens[i] = req.NewToken()
		args = append(args, tokens[i])
	}
	for attempt := 0; ; attempt++ {
		tok, err := s.epochToken(ctx)
		if err != nil {
			return nil, err
		}
		args[0] = tok
		v, err := claimScript.Run(ctx, s.rdb, keys, args...).Result()
		if err != nil {
			return nil, fmt.Errorf("claim jobs of queue %s: %w", req.Queue, err)
		}
		rows, ok := v.([]any)
		if !ok {
			if toInt(v) == foldStale && attempt == 0 {
				s.forgetEpoch(tok)
				continue
			}
			return nil, ErrEpochChanged
		}
		leases := make([]Lease, 0, len(rows))
		for i, r := range rows {
			t, _ := r.([]any)
			if len(t) != 4 {
				continue
			}
			id, _ := t[0].(string)
			l := Lease{
				JobID: id, Token: tokens[i], ExpiresAt: expires,
				Attempt: int32(toInt(t[1])), BudgetStart: int32(toInt(t[2])),
			}
			if l.Job, err = decodeJob(flatHash(t[3])); err != nil {
				return nil, err
			}
			leases = append(leases, l)
		}
		return leases, nil
	}
}

// FinishLease ends a live lease so its outcome can be appended: heartbeats,
// a second finish and expiry no longer see it. With expired set it ends a
// lease that ran out instead (the lease reaper). RestoreLease undoes it.
func (s *Store) FinishLease(ctx context.Context, tenantID, jobID, token string, expired bool, now time.Time) (Lease, error) {
	flag := ""
	if expired {
		flag = "1"
	}
	return s.leaseResult(ctx, s.leaseCall(tenantID, jobID, "finish", now, token, flag), jobID, token)
}

// LeaseRef names a lease: a job and the token it was leased with.
type LeaseRef struct{ JobID, Token string }

// FinishLeases is FinishLease for many live leases in one round trip; the
// i-th lease or error answers refs[i].
func (s *Store) FinishLeases(ctx context.Context, tenantID string, refs []LeaseRef, now time.Time) ([]Lease, []error, error) {
	calls := make([]call, len(refs))
	for i, r := range refs {
		calls[i] = s.leaseCall(tenantID, r.JobID, "finish", now, r.Token, "")
	}
	results, err := s.leaseOps(ctx, calls)
	if err != nil {
		return nil, nil, err
	}
	leases := make([]Lease, len(refs))
	errs := make([]error, len(refs))
	for i, r := range results {
		leases[i], errs[i] = leaseOf(r, refs[i].JobID, refs[i].Token)
	}
	return leases, errs, nil
}

// ExtendLease moves a live lease's expiry to until.
func (s *Store) ExtendLease(ctx context.Context, tenantID, jobID, token string, until, now time.Time) (Lease, error) {
	l, err := s.leaseResult(ctx, s.leaseCall(tenantID, jobID, "extend", now, token, micros(until)), jobID, token)
	l.ExpiresAt = until
	return l, err
}

// RestoreLease gives back a lease FinishLease ended when its outcome could
// not be appended.
func (s *Store) RestoreLease(ctx context.Context, tenantID, jobID, token string, now time.Time) error {
	_, err := s.leaseOps(ctx, []call{s.leaseCall(tenantID, jobID, "restore", now, token)})
	return err
}

// ReleaseLease gives a claimed job back to its queue, as if never claimed,
// when its job.claimed could not be appended. It is RestoreLease's
// counterpart for Claim: the job becomes claimable again at once.
func (s *Store) ReleaseLease(ctx context.Context, tenantID, jobID, token string, now time.Time) error {
	if _, err := s.FinishLease(ctx, tenantID, jobID, token, false, now); err != nil {
		return err
	}
	// The job is running with no live lease; the reaper would count an
	// attempt. Put it back to ready in the read model instead.
	_, err := s.rdb.Eval(ctx, releaseScript, []string{s.keys.job(tenantID, jobID)}, token).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release lease of job %s: %w", jobID, err)
	}
	return nil
}

// releaseScript undoes a claim that was never recorded: the job goes back
// to ready and claimable with its attempt unspent.
const releaseScript = `
local key = KEYS[1]
local h = redis.call('HMGET', key, 'finishing_token', 'member', 'qkey', 'priority')
if h[1] ~= ARGV[1] then return 0 end
local base = string.match(key, '^(.*:)job:[^:]*$')
local class = '1'
if h[4] == '3' then class = '0' elseif h[4] == '1' then class = '2' end
local m = class .. h[2]
redis.call('HSET', key, 'state', 'ready', 'claim_member', m)
redis.call('HDEL', key, 'finishing_token', 'lease_expires_at', 'running_attempt')
redis.call('ZADD', base .. 'q:' .. h[3] .. ':claimable', 0, m)
for _, pat in ipairs({base .. 's:%s:jobs', base .. 'q:' .. h[3] .. ':s:%s:jobs'}) do
  redis.call('ZREM', string.format(pat, 'running'), h[2])
  redis.call('ZADD', string.format(pat, 'ready'), 0, h[2])
end
redis.call('HINCRBY', base .. 'q:' .. h[3] .. ':counts', 'running', -1)
redis.call('HINCRBY', base .. 'q:' .. h[3] .. ':counts', 'ready', 1)
return 1`

// ExpiredLease names a lease that ran out.
type ExpiredLease struct {
	TenantID, JobID, Token string
}

// ExpiredLeases returns up to limit leases that expired at or before now,
// soonest first.
func (s *Store) ExpiredLeases(ctx context.Context, now time.Time, limit int) ([]ExpiredLease, error) {
	keys, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.keys.leases(), Start: "-inf", Stop: strconv.FormatInt(now.UnixMicro(), 10),
		ByScore: true, Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read expired leases: %w", err)
	}
	cmds := make([]*redis.SliceCmd, len(keys))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.HMGet(ctx, k, "tenant", "id", "lease_token", "finishing_token")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read expired leases: %w", err)
	}
	out := make([]ExpiredLease, 0, len(keys))
	for i, c := range cmds {
		v := c.Val()
		tenantID, jobID, token, finishing := str(v[0]), str(v[1]), str(v[2]), str(v[3])
		switch {
		case token != "":
			out = append(out, ExpiredLease{TenantID: tenantID, JobID: jobID, Token: token})
		case finishing != "":
			// A finish whose outcome never reached the log in its grace
			// period: give the lease back; it is expired, so the next
			// look ends it as a failed attempt.
			if err := s.RestoreLease(ctx, tenantID, jobID, finishing, now); err != nil {
				return out, err
			}
		default:
			if err := s.dropEndedLease(ctx, keys[i]); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// Parked is a job taken off a paused queue's parked set.
type Parked struct {
	JobID string
	// Attempt is the attempt it was held at.
	Attempt int32
	member  string
}

// takeParkedScript takes up to ARGV[2] jobs off a parked set (KEYS[1]),
// oldest first, for the caller to make ready: each is taken once, however
// many callers race. ARGV[1] is the tenant's key base. Returns {job id,
// attempt, member} per job still ready and parked.
var takeParkedScript = redis.NewScript(`
local function esc(s)
  return (string.gsub(string.gsub(s, '%%', '%%25'), ':', '%%3A'))
end
local out = {}
local members = redis.call('ZRANGEBYLEX', KEYS[1], '-', '+', 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(members) do
  redis.call('ZREM', KEYS[1], m)
  local id = string.sub(m, 18)
  local key = ARGV[1] .. 'job:' .. esc(id)
  local h = redis.call('HMGET', key, 'parked_member', 'parked_attempt', 'state')
  if h[1] == m and h[3] == 'ready' then
    redis.call('HDEL', key, 'parked_member', 'parked_attempt')
    out[#out + 1] = {id, tonumber(h[2]), m}
  end
end
return out`)

// returnParkedScript puts jobs TakeParked took back on their parked set
// (KEYS[1]) when their job.ready could not be appended. ARGV[1] is the key
// base, then id, attempt, member triples.
var returnParkedScript = redis.NewScript(`
local function esc(s)
  return (string.gsub(string.gsub(s, '%%', '%%25'), ':', '%%3A'))
end
for i = 2, #ARGV, 3 do
  local key = ARGV[1] .. 'job:' .. esc(ARGV[i])
  if redis.call('HGET', key, 'state') == 'ready' then
    redis.call('HSET', key, 'parked_member', ARGV[i + 2], 'parked_attempt', ARGV[i + 1])
    redis.call('ZADD', KEYS[1], 0, ARGV[i + 2])
  end
end
return 1`)

// TakeParked takes up to limit jobs off a queue's parked set, oldest
// first, and returns them; the caller appends their job.ready, or gives
// them back with ReturnParked. Racing callers never take one job twice.
func (s *Store) TakeParked(ctx context.Context, tenantID, queue string, limit int) ([]Parked, error) {
	v, err := takeParkedScript.Run(ctx, s.rdb, []string{s.keys.parked(tenantID, queue)}, s.keys.tenant(tenantID), limit).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("take parked jobs of queue %s: %w", queue, err)
	}
	rows, _ := v.([]any)
	out := make([]Parked, 0, len(rows))
	for _, r := range rows {
		t, _ := r.([]any)
		if len(t) != 3 {
			continue
		}
		id, _ := t[0].(string)
		m, _ := t[2].(string)
		out = append(out, Parked{JobID: id, Attempt: int32(toInt(t[1])), member: m})
	}
	return out, nil
}

// ReturnParked gives jobs TakeParked took back to the parked set.
func (s *Store) ReturnParked(ctx context.Context, tenantID, queue string, jobs []Parked) error {
	if len(jobs) == 0 {
		return nil
	}
	args := []any{s.keys.tenant(tenantID)}
	for _, p := range jobs {
		args = append(args, p.JobID, p.Attempt, p.member)
	}
	if err := returnParkedScript.Run(ctx, s.rdb, []string{s.keys.parked(tenantID, queue)}, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("return parked jobs of queue %s: %w", queue, err)
	}
	return nil
}

// LiveLeases reports which of the leases (job id → token) are still the
// jobs' current leases.
func (s *Store) LiveLeases(ctx context.Context, tenantID string, leases map[string]string) (map[string]bool, error) {
	ids := make([]string, 0, len(leases))
	cmds := make([]*redis.StringCmd, 0, len(leases))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id := range leases {
			ids = append(ids, id)
			cmds = append(cmds, p.HGet(ctx, s.keys.job(tenantID, id), "lease_token"))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read leases of %d jobs: %w", len(ids), err)
	}
	live := make(map[string]bool, len(ids))
	for i, c := range cmds {
		live[ids[i]] = c.Val() == leases[ids[i]]
	}
	return live, nil
}

// LeaseDuration returns the length a job's current lease was claimed
// with.
func (s *Store) LeaseDuration(ctx context.Context, tenantID, jobID string) (time.Duration, error) {
	v, err := s.rdb.HGet(ctx, s.keys.job(tenantID, jobID), "lease_duration").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, ErrNoLease
	}
	if err != nil {
		return 0, fmt.Errorf("read lease of job %s: %w", jobID, err)
	}
	return time.Duration(v), nil
}

// OldestReady returns the creation time of the queue's oldest ready job,
// or false when none is ready.
func (s *Store) OldestReady(ctx context.Context, tenantID, queue string) (time.Time, bool, error) {
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.keys.index(tenantID, queue, sluicev1.JobState_JOB_STATE_READY), Start: "-", Stop: "+", ByLex: true, Count: 1,
	}).Result()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read oldest ready job of queue %s: %w", queue, err)
	}
	if len(members) == 0 {
		return time.Time{}, false, nil
	}
	us, err := strconv.ParseUint(members[0][:memberHexLen], 16, 64)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read oldest ready job of queue %s: %w", queue, err)
	}
	return time.UnixMicro(int64(us)), true, nil
}

// Queues returns the names of the tenant's queues that ever had a job.
func (s *Store) Queues(ctx context.Context, tenantID string) ([]string, error) {
	names, err := s.rdb.SMembers(ctx, s.keys.queues(tenantID)).Result()
	if err != nil {
		return nil, fmt.Errorf("read queues: %w", err)
	}
	for i, n := range names {
		names[i] = unescape(n)
	}
	return names, nil
}

var unescaper = strings.NewReplacer("%3A", ":", "%25", "%")

func unescape(s string) string { return unescaper.Replace(s) }

// leaseCall is a fold.lua call of a lease operation on one job.
func (s *Store) leaseCall(tenantID, jobID, kind string, now time.Time, args ...any) call {
	return call{
		keys: []string{s.keys.job(tenantID, jobID), s.keys.epoch(), s.keys.attempts(tenantID, jobID), s.keys.leases()},
		args: append([]any{"", s.keys.tenant(tenantID), "", "", kind, micros(now)}, args...),
	}
}

// leaseResult runs one finish or extend and reads its result.
func (s *Store) leaseResult(ctx context.Context, c call, jobID, token string) (Lease, error) {
	results, err := s.leaseOps(ctx, []call{c})
	if err != nil {
		return Lease{}, err
	}
	return leaseOf(results[0], jobID, token)
}

// leaseOf reads the result of a finish or extend.
func leaseOf(result any, jobID, token string) (Lease, error) {
	if t, ok := result.([]any); ok && len(t) == 2 {
		return Lease{JobID: jobID, Token: token, Attempt: int32(toInt(t[0])), BudgetStart: int32(toInt(t[1]))}, nil
	}
	switch toInt(result) {
	case leaseExpired:
		return Lease{}, ErrLeaseExpired
	case foldUnknown:
		return Lease{}, ErrNotFound
	case leaseNoLease:
		return Lease{}, ErrNoLease
	}
	return Lease{}, fmt.Errorf("projections: lease operation on job %s: unexpected result %v", jobID, result)
}

// leaseOps runs lease operations in one pipeline under the current epoch
// token, once more after the epoch changed or the script was evicted.
func (s *Store) leaseOps(ctx context.Context, calls []call) ([]any, error) {
	for attempt := 0; ; attempt++ {
		tok, err := s.epochToken(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.loadScript(ctx, attempt > 0); err != nil {
			return nil, err
		}
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls {
				c.args[0] = tok
				p.EvalSha(ctx, foldScript.Hash(), c.keys, c.args...)
			}
			return nil
		})
		if (isNoScript(err) || err == nil && staleEpoch(cmds)) && attempt == 0 {
			s.forgetEpoch(tok)
			continue
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("lease operations on %d jobs: %w", len(calls), err)
		}
		if staleEpoch(cmds) {
			return nil, ErrEpochChanged
		}
		out := make([]any, len(cmds))
		for i, c := range cmds {
			out[i], _ = c.(*redis.Cmd).Result()
		}
		return out, nil
	}
}

func staleEpoch(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if v, err := c.(*redis.Cmd).Result(); err == nil && toInt(v) == foldStale {
			return true
		}
	}
	return false
}

// toInt reads a script's integer reply; other replies read as 0.
func toInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

// dropEndedLeaseScript takes a job off the leases set if its lease ended
// (no live token, no finish under way) - checked and done at once, so a
// lease restored meanwhile stays.
var dropEndedLeaseScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[2], 'lease_token', 'finishing_token')
if not h[1] and not h[2] then
  redis.call('ZREM', KEYS[1], KEYS[2])
end
return 1`)

func (s *Store) dropEndedLease(ctx context.Context, jobKey string) error {
	if err := dropEndedLeaseScript.Run(ctx, s.rdb, []string{s.keys.leases(), jobKey}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("drop ended lease of %s: %w", jobKey, err)
	}
	return nil
}
