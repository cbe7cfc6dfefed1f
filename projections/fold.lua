-- fold.lua folds one event of the events topic into a job's hash and its
-- indexes, or advances a partition's checkpoint. The key layout is in
-- doc.go; store.go and apply.go build the arguments.
--
-- KEYS[1]  the job hash, or the checkpoint for kind "ckpt"
-- KEYS[2]  the epoch key
-- KEYS[3]  the job's attempts hash (not for "ckpt")
-- KEYS[4]  the leases zset: job hash key by lease expiry (not for "ckpt")
-- ARGV[1]  the epoch token the caller read; nothing is written unless it
--          is still current
-- ARGV[2]  the tenant's key base, "{prefix}t:{tenant}:"
-- ARGV[3]  source partition
-- ARGV[4]  source offset; for "ckpt" the next offset to read
-- ARGV[5]  kind: "enqueued", "attempted", "ready", "cancelled", "retried",
--          "purged", "claimed", "lease_extended", "parked" or "ckpt"; or a
--          lease operation (no partition or offset; see the end):
--          "finish", "restore", "extend" (claim.lua leases jobs)
-- ARGV[6]  occurred-at, Unix microseconds
-- enqueued:  ARGV[7] state, ARGV[8] member, ARGV[9] escaped queue,
--            ARGV[10..] field/value pairs of the job
-- attempted: ARGV[7] attempt, ARGV[8] status code, ARGV[9] error,
--            ARGV[10] new state ("" for none), ARGV[11] next attempt at,
--            ARGV[12] the attempt event (protobuf), ARGV[13] why the job
--            dies, ARGV[14] its dead-letter index member, ARGV[15] a
--            worker's result (JSON, "" for none)
-- ready:     ARGV[7] the attempt about to run, ARGV[8] the job's claim
--            member suffix ("{time}:{id}", time of the event), ARGV[9]
--            the creation time in its spec ("" unknown): a job.ready of a
--            losing duplicate (another creation time) changes nothing
-- retried:   ARGV[7] the new budget's first attempt, ARGV[8] reason,
--            ARGV[9] actor, ARGV[10] new payload ("" keeps the payload),
--            ARGV[11] claim member suffix
-- claimed:   ARGV[7] attempt, ARGV[8] lease token, ARGV[9] lease expiry
--            (Unix µs), ARGV[10] worker id, ARGV[11] lease duration (ns)
-- lease_extended: ARGV[7] attempt, ARGV[8] lease token, ARGV[9] expiry
-- parked:    ARGV[7] the attempt held back
--
-- A job without a target (field "worker") waits for a worker while ready:
-- it is in its queue's claimable zset, {base}q:{queue}:claimable, whose
-- members are "{class}{time}:{id}" (class 0 high, 1 normal, 2 low; time
-- when it became ready) so ZRANGE BYLEX gives the next job to claim.
-- purged:    ARGV[7] when the tombstone expires, Unix milliseconds (the
--            purge's time plus TombstoneTTL, so a rebuild keeps it as long)
--
-- Returns 1 applied, 0 already applied (offset guard), 2 ignored by a fold
-- rule, 3 unknown job, -1 stale epoch.

local APPLIED, SEEN, IGNORED, UNKNOWN, STALE = 1, 0, 2, 3, -1
-- Results of lease operations besides a table of {attempt, budget start}.
local NO_LEASE, EXPIRED = 4, 5
-- FINISH_GRACE is how long a finished lease's outcome may take to be
-- folded before the reaper gives the lease back, in µs: 60 s.
local FINISH_GRACE = 60000000

if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return STALE
end

local key, base, part, off, kind, at = KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

-- le reports whether the decimal a is at most the decimal b, exactly.
local function le(a, b)
  return #a < #b or (#a == #b and a <= b)
end

if kind == 'ckpt' then
  local cur = redis.call('GET', key)
  if cur and le(off, cur) then
    return SEEN
  end
  redis.call('SET', key, off)
  return APPLIED
end

local cur = redis.call('HMGET', key, 'partition', 'offset', 'state', 'attempt', 'member', 'qkey',
  'tombstone', 'budget_start', 'dlq_member', 'worker', 'priority', 'claim_member', 'parked_member')
local exists = cur[5] and true or false
local tombstone = cur[7] and true or false
local leaseop = kind == 'finish' or kind == 'restore' or kind == 'extend'
if not leaseop and (exists or tombstone) and cur[1] == part and le(off, cur[2]) then
  return SEEN
end
-- A purged job stays purged.
if tombstone then
  return IGNORED
end

-- index adds (by 1) or removes (by -1) a job in a state's indexes and
-- counter.
local function index(member, qkey, state, by)
  local s = base .. 's:' .. state .. ':jobs'
  local qs = base .. 'q:' .. qkey .. ':s:' .. state .. ':jobs'
  if by > 0 then
    redis.call('ZADD', s, 0, member)
    redis.call('ZADD', qs, 0, member)
  else
    redis.call('ZREM', s, member)
    redis.call('ZREM', qs, member)
  end
  redis.call('HINCRBY', base .. 'q:' .. qkey .. ':counts', state, by)
end

local function move(from, to)
  if from ~= to then
    index(cur[5], cur[6], from, -1)
    index(cur[5], cur[6], to, 1)
  end
end

-- dlq lists (by 1) or unlists (by -1) a dead job in the dead-letter
-- indexes.
local function dlq(member, by)
  local all, q = base .. 'dlq', base .. 'q:' .. cur[6] .. ':dlq'
  if by > 0 then
    redis.call('ZADD', all, 0, member)
    redis.call('ZADD', q, 0, member)
  else
    redis.call('ZREM', all, member)
    redis.call('ZREM', q, member)
  end
end

local function final(state)
  return state == 'succeeded' or state == 'dead' or state == 'cancelled'
end

-- claimable lists (suffix set) or unlists (suffix nil) a worker job in its
-- queue's claimable zset; qkey is the job's escaped queue.
local function claimable(qkey, suffix)
  local z = base .. 'q:' .. qkey .. ':claimable'
  if cur[12] then
    redis.call('ZREM', z, cur[12])
    redis.call('HDEL', key, 'claim_member')
    cur[12] = false
  end
  if suffix then
    local class = '1'
    if cur[11] == '3' then class = '0' elseif cur[11] == '1' then class = '2' end
    local m = class .. suffix
    redis.call('ZADD', z, 0, m)
    redis.call('HSET', key, 'claim_member', m)
    cur[12] = m
  end
end

-- unpark takes a job off its queue's parked zset.
local function unpark()
  if cur[13] then
    redis.call('ZREM', base .. 'q:' .. cur[6] .. ':parked', cur[13])
    redis.call('HDEL', key, 'parked_member', 'parked_attempt')
    cur[13] = false
  end
end

-- unlease forgets a job's lease.
local function unlease()
  redis.call('ZREM', KEYS[4], key)
  redis.call('HDEL', key, 'lease_token', 'finishing_token', 'lease_expires_at', 'running_attempt')
end

-- lease makes a ready job running on a worker's lease.
local function lease(attempt, token, expires, worker, duration, from)
  redis.call('HSET', key, 'state', 'running', 'running_attempt', attempt, 'lease_token', token,
    'lease_expires_at', expires, 'worker_id', worker, 'lease_duration', duration, 'updated_at', at)
  redis.call('HDEL', key, 'finishing_token', 'next_attempt_at')
  redis.call('ZADD', KEYS[4], expires, key)
  claimable(cur[6], nil)
  unpark()
  if from ~= 'running' then
    index(cur[5], cur[6], from, -1)
    index(cur[5], cur[6], 'running', 1)
  end
end

if kind == 'enqueued' then
  if exists then
    return IGNORED
  end
  local state, member, qkey = ARGV[7], ARGV[8], ARGV[9]
  redis.call('HSET', key, 'partition', part, 'offset', off, 'state', state,
    'attempt', '0', 'member', member, 'qkey', qkey, 'updated_at', at, unpack(ARGV, 10))
  redis.call('ZADD', base .. 'jobs', 0, member)
  redis.call('ZADD', base .. 'q:' .. qkey .. ':jobs', 0, member)
  redis.call('SADD', base .. 'queues', qkey)
  index(member, qkey, state, 1)
  local w = redis.call('HMGET', key, 'worker', 'priority')
  if w[1] == '1' and state == 'ready' then
    cur[11] = w[2]
    claimable(qkey, member)
  end
  return APPLIED
end

if not exists then
  return UNKNOWN
end
local state = cur[3]

if kind == 'attempted' then
  if tonumber(ARGV[7]) <= tonumber(cur[4]) or state == 'succeeded' or state == 'dead' then
    return IGNORED
  end
  redis.call('HSET', key, 'partition', part, 'offset', off, 'attempt', ARGV[7],
    'last_status_code', ARGV[8], 'last_error', ARGV[9], 'updated_at', at)
  redis.call('HSET', KEYS[3], ARGV[7], ARGV[12])
  unlease()
  claimable(cur[6], nil)
  unpark()
  if ARGV[15] ~= '' then
    redis.call('HSET', key, 'result', ARGV[15])
  end
  local to = ARGV[10]
  if state == 'cancelled' or to == '' then
    return APPLIED
  end
  redis.call('HSET', key, 'state', to)
  if to == 'retrying' and ARGV[11] ~= '' then
    redis.call('HSET', key, 'next_attempt_at', ARGV[11])
  else
    redis.call('HDEL', key, 'next_attempt_at')
  end
  if to == 'dead' then
    redis.call('HSET', key, 'died_at', at, 'dead_reason', ARGV[13], 'dlq_member', ARGV[14])
    dlq(ARGV[14], 1)
  end
  move(state, to)
  return APPLIED
end

if kind == 'ready' then
  if ARGV[9] ~= '' and redis.call('HGET', key, 'created_at') ~= ARGV[9] then
    return IGNORED
  end
  -- A parked job is ready already: the job.ready that resumes it only
  -- takes it off the parked list.
  unpark()
  if tonumber(ARGV[7]) <= tonumber(cur[4]) or state == 'ready' or state == 'running' or final(state) then
    return IGNORED
  end
  redis.call('HSET', key, 'partition', part, 'offset', off, 'state', 'ready', 'updated_at', at,
    'ready_attempt', ARGV[7])
  redis.call('HDEL', key, 'next_attempt_at')
  move(state, 'ready')
  if cur[10] == '1' then
    claimable(cur[6], ARGV[8])
  end
  return APPLIED
end

if kind == 'cancelled' then
  if final(state) then
    return IGNORED
  end
  redis.call('HSET', key, 'partition', part, 'offset', off, 'state', 'cancelled', 'updated_at', at)
  redis.call('HDEL', key, 'next_attempt_at')
  claimable(cur[6], nil)
  unpark()
  unlease() -- a worker's lease on it ends: its token is refused
  move(state, 'cancelled')
  return APPLIED
end

if kind == 'retried' then
  -- A retry starts above every attempt and every earlier retry: a copy of
  -- an earlier retry finds its budget already used.
  local budget = tonumber(ARGV[7])
  if (state ~= 'dead' and state ~= 'cancelled') or budget <= tonumber(cur[4])
    or budget <= tonumber(cur[8] or '0') then
    return IGNORED
  end
  local overridden = '0'
  if ARGV[10] ~= '' then
    overridden = '1'
    redis.call('HSET', key, 'payload', ARGV[10])
  end
  redis.call('HSET', key, 'partition', part, 'offset', off, 'state', 'ready', 'updated_at', at,
    'budget_start', ARGV[7], 'retried_at', at, 'retry_reason', ARGV[8], 'retried_by', ARGV[9],
    'retried_from', state, 'payload_overridden', overridden)
  redis.call('HINCRBY', key, 'retries', 1)
  redis.call('HDEL', key, 'next_attempt_at', 'died_at', 'dead_reason', 'dlq_member')
  redis.call('HSET', key, 'ready_attempt', ARGV[7])
  if cur[9] then
    dlq(cur[9], -1)
  end
  move(state, 'ready')
  if cur[10] == '1' then
    claimable(cur[6], ARGV[11])
  end
  return APPLIED
end

if kind == 'purged' then
  if state ~= 'dead' then
    return IGNORED
  end
  redis.call('ZREM', base .. 'jobs', cur[5])
  redis.call('ZREM', base .. 'q:' .. cur[6] .. ':jobs', cur[5])
  index(cur[5], cur[6], state, -1)
  if cur[9] then
    dlq(cur[9], -1)
  end
  redis.call('DEL', key, KEYS[3])
  redis.call('HSET', key, 'partition', part, 'offset', off, 'tombstone', '1')
  redis.call('PEXPIREAT', key, ARGV[7])
  return APPLIED
end

if kind == 'claimed' then
  local attempt = tonumber(ARGV[7])
  if final(state) or attempt <= tonumber(cur[4]) then
    return IGNORED
  end
  local l = redis.call('HMGET', key, 'lease_token', 'finishing_token', 'running_attempt')
  redis.call('HSET', key, 'partition', part, 'offset', off)
  if state == 'running' and (l[1] == ARGV[8] or l[2] == ARGV[8] or tonumber(l[3] or '0') > attempt) then
    return APPLIED -- the claim that wrote this event leased the job already
  end
  lease(ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], state)
  return APPLIED
end

if kind == 'lease_extended' then
  local l = redis.call('HMGET', key, 'lease_token', 'lease_expires_at')
  if state ~= 'running' or l[1] ~= ARGV[8] then
    return IGNORED
  end
  redis.call('HSET', key, 'partition', part, 'offset', off)
  if tonumber(ARGV[9]) > tonumber(l[2] or '0') then
    redis.call('HSET', key, 'lease_expires_at', ARGV[9])
    redis.call('ZADD', KEYS[4], ARGV[9], key)
  end
  return APPLIED
end

if kind == 'parked' then
  if state ~= 'ready' or tonumber(ARGV[7]) <= tonumber(cur[4]) then
    return IGNORED
  end
  redis.call('HSET', key, 'partition', part, 'offset', off, 'parked_member', cur[5],
    'parked_attempt', ARGV[7])
  redis.call('ZADD', base .. 'q:' .. cur[6] .. ':parked', 0, cur[5])
  return APPLIED
end

-- Lease operations. They act on the read model at once, ahead of the
-- events that record them (job.claimed, job.lease_extended, job.attempted),
-- so two workers never hold one job and a stale token is refused without
-- waiting for the log. ARGV[6] is now, in Unix µs.

local l = redis.call('HMGET', key, 'lease_token', 'lease_expires_at', 'running_attempt', 'finishing_token')

-- finish: ARGV[7] token, ARGV[8] "1" to end an expired lease (the reaper),
-- else the lease must be live. The lease stops counting (no heartbeat, no
-- second finish, no expiry) while the caller appends the outcome; restore
-- undoes it when that fails. Returns {attempt, budget start}, NO_LEASE or
-- EXPIRED.
if kind == 'finish' then
  if state ~= 'running' or not l[1] or l[1] ~= ARGV[7] then
    return NO_LEASE
  end
  local expired = tonumber(l[2]) <= tonumber(at)
  if ARGV[8] == '1' then
    if not expired then
      return NO_LEASE
    end
  elseif expired then
    return EXPIRED
  end
  redis.call('HSET', key, 'finishing_token', ARGV[7])
  redis.call('HDEL', key, 'lease_token')
  -- The job stays in the leases set for a grace period: should the
  -- outcome never reach the log (the caller died), the reaper restores
  -- the lease and lets it expire. The outcome's fold takes it out.
  redis.call('ZADD', KEYS[4], tonumber(at) + FINISH_GRACE, key)
  return {tonumber(l[3]), tonumber(cur[8] or '0')}
end

-- restore: ARGV[7] token. Gives back a lease whose outcome was not
-- appended.
if kind == 'restore' then
  if state ~= 'running' or l[4] ~= ARGV[7] then
    return NO_LEASE
  end
  redis.call('HSET', key, 'lease_token', ARGV[7])
  redis.call('HDEL', key, 'finishing_token')
  redis.call('ZADD', KEYS[4], l[2], key)
  return APPLIED
end

-- extend: ARGV[7] token, ARGV[8] new expiry. Returns {attempt, budget
-- start}, NO_LEASE or EXPIRED.
if kind == 'extend' then
  if state ~= 'running' or not l[1] or l[1] ~= ARGV[7] then
    return NO_LEASE
  end
  if tonumber(l[2]) <= tonumber(at) then
    return EXPIRED
  end
  redis.call('HSET', key, 'lease_expires_at', ARGV[8])
  redis.call('ZADD', KEYS[4], ARGV[8], key)
  return {tonumber(l[3]), tonumber(cur[8] or '0')}
end

return redis.error_reply('fold.lua: unknown kind ' .. kind)
