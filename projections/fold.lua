-- fold.lua folds one event of the events topic into a job's hash and its
-- indexes, or advances a partition's checkpoint. The key layout is in
-- doc.go; store.go and apply.go build the arguments.
--
-- KEYS[1]  the job hash, or the checkpoint for kind "ckpt"
-- KEYS[2]  the epoch key
-- KEYS[3]  the job's attempts hash (not for "ckpt")
-- ARGV[1]  the epoch token the caller read; nothing is written unless it
--          is still current
-- ARGV[2]  the tenant's key base, "{prefix}t:{tenant}:"
-- ARGV[3]  source partition
-- ARGV[4]  source offset; for "ckpt" the next offset to read
-- ARGV[5]  kind: "enqueued", "attempted", "ready", "cancelled", "retried",
--          "purged" or "ckpt"
-- ARGV[6]  occurred-at, Unix microseconds
-- enqueued:  ARGV[7] state, ARGV[8] member, ARGV[9] escaped queue,
--            ARGV[10..] field/value pairs of the job
-- attempted: ARGV[7] attempt, ARGV[8] status code, ARGV[9] error,
--            ARGV[10] new state ("" for none), ARGV[11] next attempt at,
--            ARGV[12] the attempt event (protobuf), ARGV[13] why the job
--            dies, ARGV[14] its dead-letter index member
-- ready:     ARGV[7] the attempt about to run
-- retried:   ARGV[7] the new budget's first attempt, ARGV[8] reason,
--            ARGV[9] actor, ARGV[10] new payload ("" keeps the payload)
--
-- Returns 1 applied, 0 already applied (offset guard), 2 ignored by a fold
-- rule, 3 unknown job, -1 stale epoch.

local APPLIED, SEEN, IGNORED, UNKNOWN, STALE = 1, 0, 2, 3, -1

-- TOMBSTONE_TTL is how long a purged job's tombstone outlives it, in
-- seconds: 30 days, the events topic's retention.
local TOMBSTONE_TTL = 2592000

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
  'tombstone', 'budget_start', 'dlq_member')
local exists = cur[5] and true or false
local tombstone = cur[7] and true or false
if (exists or tombstone) and cur[1] == part and le(off, cur[2]) then
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

if kind == 'enqueued' then
  if exists then
    return IGNORED
  end
  local state, member, qkey = ARGV[7], ARGV[8], ARGV[9]
  redis.call('HSET', key, 'partition', part, 'offset', off, 'state', state,
    'attempt', '0', 'member', member, 'qkey', qkey, 'updated_at', at, unpack(ARGV, 10))
  redis.call('ZADD', base .. 'jobs', 0, member)
  redis.call('ZADD', base .. 'q:' .. qkey .. ':jobs', 0, member)
  index(member, qkey, state, 1)
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
  if tonumber(ARGV[7]) <= tonumber(cur[4]) or state == 'ready' or final(state) then
    return IGNORED
  end
  redis.call('HSET', key, 'partition', part, 'offset', off, 'state', 'ready', 'updated_at', at)
  redis.call('HDEL', key, 'next_attempt_at')
  move(state, 'ready')
  return APPLIED
end

if kind == 'cancelled' then
  if final(state) then
    return IGNORED
  end
  redis.call('HSET', key, 'partition', part, 'offset', off, 'state', 'cancelled', 'updated_at', at)
  redis.call('HDEL', key, 'next_attempt_at')
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
  if cur[9] then
    dlq(cur[9], -1)
  end
  move(state, 'ready')
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
  redis.call('EXPIRE', key, TOMBSTONE_TTL)
  return APPLIED
end

return redis.error_reply('fold.lua: unknown kind ' .. kind)
