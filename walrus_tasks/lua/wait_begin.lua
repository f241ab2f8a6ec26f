-- Park one tool call of a run until a client reply, its delegated children, or a timeout: the
-- run becomes `waiting` and no task holds it (docs/design.md, invariant 7). Fenced and
-- idempotent per call.
-- KEYS: lease, fence, run, claim (of the call)
-- ARGV: token, ttl_ms, step, call_id, kind ('ask' | 'approval' | 'delegate'), deadline_ms,
--       event_json ('' = none), data_json, now_ms, maxlen, cid
-- Returns 'waiting' (parked, or already parked), 'woken' (its wake was already due: run the
-- call again now), 'fenced' or 'stale'.
if not holds(ARGV[1], ARGV[2]) then
  return 'fenced'
end
local run_id = redis.call('HGET', KEYS[3], 'run_id')
if not at_step(KEYS[3], ARGV[3], 'tools') then
  return 'stale'
end
if redis.call('HEXISTS', K.run_waits(run_id), ARGV[4]) == 1 then
  redis.call('DEL', KEYS[4])
  return 'waiting'  -- a redelivered call: it is parked already
end
redis.call('HDEL', K.run_wakes(run_id), ARGV[4])
-- A wake that is due already is taken now, so nothing that came first is lost: a reply sent
-- while no question was pending, or children that all finished before the parent parked.
local wake = false
if ARGV[5] == 'ask' or ARGV[5] == 'approval' then
  local reply = redis.call('LPOP', K.run_replies(run_id))
  if reply then
    wake = cjson.encode({wait = ARGV[5], kind = 'reply', content = reply})
  end
elseif ARGV[5] == 'delegate' then
  local done = true
  for _, v in ipairs(redis.call('HVALS', K.call_children(run_id, ARGV[4]))) do
    if v == '' then done = false end
  end
  if done then
    wake = cjson.encode({wait = ARGV[5], kind = 'children'})
  end
end
if wake then
  redis.call('HSET', K.run_wakes(run_id), ARGV[4], wake)
  return 'woken'
end
redis.call('HSET', K.run_waits(run_id), ARGV[4],
  cjson.encode({kind = ARGV[5], deadline = tonumber(ARGV[6]), data = cjson.decode(ARGV[8])}))
local until_ms = latest_deadline(run_id)
redis.call('HSET', KEYS[3], 'status', 'waiting', 'wait_until', until_ms)
-- Nobody renews the lease of a waiting run: it lives until the last deadline, when the reaper
-- times the wait out (lua/takeover.lua).
redis.call('PSETEX', KEYS[1], math.max(until_ms - tonumber(ARGV[9]), 1), ARGV[1])
redis.call('ZADD', K.LEASES, until_ms, ARGV[11])
if ARGV[7] ~= '' then
  emit(run_id, ARGV[10], ARGV[7])
end
redis.call('DEL', KEYS[4])
return 'waiting'
