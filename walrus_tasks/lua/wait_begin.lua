-- Park one tool call of a run until a client reply, its delegated children, or a timeout: the
-- run becomes `waiting` and no task holds it (docs/design.md, invariant 7). Fenced and
-- idempotent per call.
-- KEYS: lease, fence, run, claim (of the call)
-- A: token, ttl_ms, step, call_id, kind ('ask' | 'approval' | 'client' | 'delegate'),
--    deadline_ms, event_json ('' = none), data_json, now_ms, maxlen, cid
-- Returns 'waiting' (parked, or already parked), 'woken' (its wake was already due: run the
-- call again now), 'fenced' or 'stale'.
local refused = guard(A.token, A.ttl_ms, KEYS[3], A.step, 'tools')
if refused then
  return refused
end
local run_id = redis.call('HGET', KEYS[3], 'run_id')
if redis.call('HEXISTS', K.run_waits(run_id), A.call_id) == 1 then
  redis.call('DEL', KEYS[4])
  return 'waiting'  -- a redelivered call: it is parked already
end
redis.call('HDEL', K.run_wakes(run_id), A.call_id)
-- A wake that is due already is taken now, so nothing that came first is lost: a reply sent
-- while no question was pending (it answers whatever the client is asked next: a question, an
-- approval or a client tool's output), or children that all finished before the parent parked.
-- It says when the wait began (`since`), as a parked call's wake does (lib/runs.lua).
local wake = false
local since = tonumber(A.now_ms)
if A.kind == 'ask' or A.kind == 'approval' or A.kind == 'client' then
  local reply = redis.call('LPOP', K.run_replies(run_id))
  if reply then
    wake = cjson.encode({wait = A.kind, kind = 'reply', content = reply, since = since})
  end
elseif A.kind == 'delegate' then
  local done = true
  for _, v in ipairs(redis.call('HVALS', K.call_children(run_id, A.call_id))) do
    if v == '' then done = false end
  end
  if done then
    wake = cjson.encode({wait = A.kind, kind = 'children', since = since})
  end
end
if wake then
  redis.call('HSET', K.run_wakes(run_id), A.call_id, wake)
  return 'woken'
end
redis.call('HSET', K.run_waits(run_id), A.call_id,
  cjson.encode({kind = A.kind, deadline = tonumber(A.deadline_ms),
    data = cjson.decode(A.data_json), since = since}))
local until_ms = latest_deadline(run_id)
redis.call('HSET', KEYS[3], 'status', 'waiting', 'wait_until', until_ms)
-- Nobody renews the lease of a waiting run: it lives until the last deadline, when the reaper
-- times the wait out (lua/takeover.lua).
redis.call('PSETEX', KEYS[1], math.max(until_ms - tonumber(A.now_ms), 1), A.token)
redis.call('ZADD', K.leases(A.cid), until_ms, A.cid)
if A.event_json ~= '' then
  emit(run_id, A.maxlen, A.event_json)
end
redis.call('DEL', KEYS[4])
return 'waiting'
