-- claim.lua leases up to n of a queue's claimable worker jobs at once,
-- highest class first, then longest ready first (the claimable zset's
-- order; fold.lua documents its members). It makes the same changes as
-- fold.lua's job.claimed fold, ahead of the event, so no two callers lease
-- one job.
--
-- KEYS[1]  the queue's claimable zset
-- KEYS[2]  the epoch key
-- KEYS[3]  the leases zset
-- KEYS[4]  the queue's counts hash
-- ARGV[1]  epoch token; ARGV[2] the tenant's key base; ARGV[3] the escaped
--          queue; ARGV[4] n; ARGV[5] now (Unix µs); ARGV[6] lease expiry
--          (Unix µs); ARGV[7] worker id; ARGV[8] lease duration (ns);
--          ARGV[9] the queue's running limit (0 none); ARGV[10..9+n] one
--          fresh lease token per job
--
-- Returns -1 for a stale epoch, else a list of {job id, attempt, budget
-- start, the job's hash as HGETALL lists it}.

if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local base, qkey, n, at = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local limit = tonumber(ARGV[9])
if limit > 0 then
  local running = tonumber(redis.call('HGET', KEYS[4], 'running') or '0')
  n = math.min(n, limit - running)
end
local out = {}
if n <= 0 then
  return out
end

local function esc(s)
  return (string.gsub(string.gsub(s, '%%', '%%25'), ':', '%%3A'))
end

local function move(member, from, to)
  for _, s in ipairs({from, to}) do
    local by = (s == to) and 1 or -1
    for _, z in ipairs({base .. 's:' .. s .. ':jobs', base .. 'q:' .. qkey .. ':s:' .. s .. ':jobs'}) do
      if by > 0 then
        redis.call('ZADD', z, 0, member)
      else
        redis.call('ZREM', z, member)
      end
    end
    redis.call('HINCRBY', KEYS[4], s, by)
  end
end

-- Stale members (a job cancelled or claimed since) are dropped on the way.
while #out < n do
  local members = redis.call('ZRANGEBYLEX', KEYS[1], '-', '+', 'LIMIT', 0, n - #out)
  if #members == 0 then
    break
  end
  for _, m in ipairs(members) do
    redis.call('ZREM', KEYS[1], m)
    local id = string.sub(m, 19)
    local key = base .. 'job:' .. esc(id)
    local h = redis.call('HMGET', key, 'state', 'worker', 'claim_member', 'ready_attempt', 'attempt',
      'budget_start', 'member')
    if h[1] == 'ready' and h[2] == '1' and h[3] == m then
      local attempt = tonumber(h[4] or '0')
      if attempt <= tonumber(h[5] or '0') then
        attempt = tonumber(h[5] or '0') + 1
      end
      local token = ARGV[10 + #out]
      redis.call('HSET', key, 'state', 'running', 'running_attempt', attempt, 'lease_token', token,
        'lease_expires_at', ARGV[6], 'worker_id', ARGV[7], 'lease_duration', ARGV[8], 'updated_at', at)
      redis.call('HDEL', key, 'claim_member', 'finishing_token', 'next_attempt_at')
      redis.call('ZADD', KEYS[3], ARGV[6], key)
      move(h[7], 'ready', 'running')
      out[#out + 1] = {id, attempt, tonumber(h[6] or '0'), redis.call('HGETALL', key)}
    end
  end
end
return out
