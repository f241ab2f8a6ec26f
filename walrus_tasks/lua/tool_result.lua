-- Record one tool call's result, fenced and idempotent on (run, step, call id). The call that
-- completes the step appends every result to history in call order and moves the run on.
-- KEYS: lease, fence, run, history, results, claim
-- A: token, ttl_ms, step, call_id, message_json
-- Returns 'complete', 'pending', 'fenced' or 'stale'.
local refused = guard(A.token, A.ttl_ms, KEYS[3], A.step, 'tools')
if refused then
  return refused
end
local calls_json = redis.call('HGET', KEYS[3], 'calls')
if redis.call('HSETNX', KEYS[5], A.call_id, A.message_json) == 0 then
  return 'stale'
end
redis.call('DEL', KEYS[6])
local calls = cjson.decode(calls_json)
if redis.call('HLEN', KEYS[5]) < #calls then
  return 'pending'
end
for _, call in ipairs(calls) do
  redis.call('RPUSH', KEYS[4], redis.call('HGET', KEYS[5], call['id']))
end
redis.call('DEL', KEYS[5])
redis.call('HSET', KEYS[3], 'step', tonumber(A.step) + 1, 'phase', 'llm', 'calls', '')
return 'complete'
