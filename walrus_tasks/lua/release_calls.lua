-- Recovery of a run lost in its tool phase: release the claims of the calls that have no
-- result yet, so each can be dispatched again under the new lease. Fenced: a worker that no
-- longer holds the lease releases nothing (the holder's calls may be running).
-- KEYS: lease, fence
-- A: token, ttl_ms, run_id
-- Returns the indexes (0-based, in call order) of the calls to dispatch again, or false when
-- the lease is not held.
if not holds(A.token, A.ttl_ms) then
  return false
end
local run_id = A.run_id
local done = {}
for _, call in ipairs(redis.call('HKEYS', K.run_results(run_id))) do
  done[call] = true
end
local out = {}
local calls = cjson.decode(redis.call('HGET', K.run(run_id), 'calls') or '[]')
for i, call in ipairs(calls) do
  if not done[call['id']] then
    redis.call('DEL', K.call_claim(run_id, call['id']))
    table.insert(out, i - 1)
  end
end
return out
