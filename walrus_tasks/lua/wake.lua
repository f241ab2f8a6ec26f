-- End a wait from outside the run: a client's reply (an answer, an approval or a client tool's
-- output), or a kill.
-- KEYS: lease, fence, run
-- A: call_id ('' = the waiting call of an allowed kind with the earliest deadline),
--    kinds (comma-separated, e.g. 'ask,approval,client'), wake kind ('reply' | 'cancelled'),
--    content, now_ms, grace_ms, cid
-- Returns {token, step, index, call_id} to dispatch, 'queued' (a reply for a running run with
-- nothing to answer yet: kept for its next question), or false (no run waits for this).
local run_id = redis.call('HGET', KEYS[3], 'run_id')
if not run_id then
  return false
end
local status = redis.call('HGET', KEYS[3], 'status')
local allowed = {}
for k in string.gmatch(A.kinds, '[^,]+') do allowed[k] = true end
local call, kind, best = nil, nil, nil
local waits = redis.call('HGETALL', K.run_waits(run_id))
for i = 1, #waits, 2 do
  local w = cjson.decode(waits[i + 1])
  if allowed[w.kind] and (A.call_id == '' or A.call_id == waits[i]) then
    if best == nil or tonumber(w.deadline) < best then
      call, kind, best = waits[i], w.kind, tonumber(w.deadline)
    end
  end
end
if call == nil then
  if A.wake_kind == 'reply' and A.call_id == ''
      and (status == 'running' or status == 'waiting') then
    redis.call('RPUSH', K.run_replies(run_id), A.content)
    return 'queued'
  end
  return false
end
local wake = cjson.encode({wait = kind, kind = A.wake_kind, content = A.content})
return wake_call(run_id, A.cid, call, wake, tonumber(A.now_ms), tonumber(A.grace_ms),
  KEYS[1], KEYS[2])
