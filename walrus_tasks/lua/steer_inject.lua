-- Move the run's queued steering messages into history (as user messages) and emit
-- `user_steered` for each, fenced; at the start of an LLM step, so they precede its call.
-- KEYS: lease, fence, run, history
-- A: token, ttl_ms, run_id, maxlen
-- Returns how many were injected, or -1 when fenced.
if not holds(A.token, A.ttl_ms) then
  return -1
end
local steer = K.run_steer(A.run_id)
local queued = redis.call('LRANGE', steer, 0, -1)
for _, content in ipairs(queued) do
  redis.call('RPUSH', KEYS[4],
    cjson.encode({role = 'user', content = content, run_id = A.run_id, steered = true}))
  emit(A.run_id, A.maxlen, cjson.encode({type = 'user_steered', content = content}))
end
redis.call('DEL', steer)
return #queued
