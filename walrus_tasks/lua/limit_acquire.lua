-- Admit one LLM call under every limit that applies to it, or under none: a concurrency slot
-- (it expires unless renewed, so a dead worker's slot comes back), one request and its
-- estimated tokens under the GCRA rate limits. Atomic across limits and across workers.
-- KEYS: the limits' seen set (their slot; the limits' keys come from K, by name)
-- A: now_ms, holder, hold_ms, run_id, limits (each: name, max_concurrency,
--    requests_per_minute, tokens_per_minute (0 = no such limit), tokens)
-- Returns {0, '', 0} when admitted, else {ms to wait, the limit's name, steps waiting for it}:
-- a rate limit's exact wait, or -1 when a concurrency limit is full (the caller polls).
local now = tonumber(A.now_ms)
local holder, hold, run_id = A.holder, tonumber(A.hold_ms), A.run_id
local limits = {}
for i, l in ipairs(A.limits) do
  limits[i] = {name = l.name, conc = tonumber(l.max_concurrency),
               rpm = tonumber(l.requests_per_minute), tpm = tonumber(l.tokens_per_minute),
               cost = tonumber(l.tokens)}
end

-- GCRA: `cost` units at `period` ms each, with room for a burst of `burst` units. Returns
-- the new theoretical arrival time and how long to wait until the units are allowed (0: now).
local function gcra(key, period, burst, cost)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + cost * period
  local allow_at = new_tat - burst * period
  if allow_at > now then
    return new_tat, allow_at - now
  end
  return new_tat, 0
end

local wait, full, blocker = 0, false, ''
local rates = {}
for _, l in ipairs(limits) do
  redis.call('SADD', K.LIMITS_SEEN, l.name)
  if l.conc > 0 then
    local slots = K.limit_slots(l.name)
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    if not redis.call('ZSCORE', slots, holder) and redis.call('ZCARD', slots) >= l.conc then
      full = true
      if blocker == '' then blocker = l.name end
    end
  end
  if l.rpm > 0 then
    -- A burst of one second's worth: a steady rate, as providers count it, not a minute's rush.
    local tat, w = gcra(K.limit_requests(l.name), 60000 / l.rpm, math.max(1, math.floor(l.rpm / 60)), 1)
    rates[#rates + 1] = {K.limit_requests(l.name), tat}
    if w > wait then wait, blocker = w, l.name end
  end
  if l.tpm > 0 then
    local tat, w = gcra(K.limit_tokens(l.name), 60000 / l.tpm, l.tpm, math.min(l.cost, l.tpm))
    rates[#rates + 1] = {K.limit_tokens(l.name), tat}
    if w > wait then wait, blocker = w, l.name end
  end
end

if wait > 0 or full then
  local ms = wait > 0 and math.ceil(wait) or -1
  local waiting = K.limit_waiting(blocker)
  redis.call('ZADD', waiting, now + math.max(ms, 1000) + 2000, run_id)
  return {ms, blocker, redis.call('ZCOUNT', waiting, now, '+inf')}
end
for _, l in ipairs(limits) do
  if l.conc > 0 then
    redis.call('ZADD', K.limit_slots(l.name), now + hold, holder)
  end
  local recent = K.limit_recent(l.name)
  redis.call('ZADD', recent, now, holder .. '/' .. l.cost)
  redis.call('ZREMRANGEBYSCORE', recent, '-inf', now - 60000)
  redis.call('PEXPIRE', recent, 120000)
  redis.call('ZREM', K.limit_waiting(l.name), run_id)
end
for _, rate in ipairs(rates) do
  redis.call('SET', rate[1], string.format('%.3f', rate[2]), 'PX', math.ceil(rate[2] - now) + 60000)
end
return {0, '', 0}
