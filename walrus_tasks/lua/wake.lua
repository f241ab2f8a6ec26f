-- End a wait from outside the run: a client's reply (or approval), or a kill.
-- KEYS: lease, fence, run
-- ARGV: call_id ('' = the waiting call of an allowed kind with the earliest deadline),
--       kinds (comma-separated, e.g. 'ask,approval'), wake kind ('reply' | 'cancelled'),
--       content, now_ms, grace_ms, cid
-- Returns {token, step, index, call_id} to dispatch, 'queued' (a reply for a running run with
-- nothing to answer yet: kept for its next question), or false (no run waits for this).
local run_id = redis.call('HGET', KEYS[3], 'run_id')
if not run_id then
  return false
end
local status = redis.call('HGET', KEYS[3], 'status')
local allowed = {}
for k in string.gmatch(ARGV[2], '[^,]+') do allowed[k] = true end
local call, kind, best = nil, nil, nil
local waits = redis.call('HGETALL', K.run_waits(run_id))
for i = 1, #waits, 2 do
  local w = cjson.decode(waits[i + 1])
  if allowed[w.kind] and (ARGV[1] == '' or ARGV[1] == waits[i]) then
    if best == nil or tonumber(w.deadline) < best then
      call, kind, best = waits[i], w.kind, tonumber(w.deadline)
    end
  end
end
if call == nil then
  if ARGV[3] == 'reply' and ARGV[1] == '' and (status == 'running' or status == 'waiting') then
    redis.call('RPUSH', K.run_replies(run_id), ARGV[4])
    return 'queued'
  end
  return false
end
local wake = cjson.encode({wait = kind, kind = ARGV[3], content = ARGV[4]})
return wake_call(run_id, ARGV[7], call, wake, tonumber(ARGV[5]), tonumber(ARGV[6]),
  KEYS[1], KEYS[2])
