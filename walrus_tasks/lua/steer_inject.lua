-- Move the run's queued steering messages into history (as user messages) and emit
-- `user_steered` for each, fenced; at the start of an LLM step, so they precede its call.
-- KEYS: lease, fence, run, history
-- ARGV: token, ttl_ms, run_id, maxlen
-- Returns how many were injected, or -1 when fenced.
if not holds(ARGV[1], ARGV[2]) then
  return -1
end
local steer = K.run_steer(ARGV[3])
local queued = redis.call('LRANGE', steer, 0, -1)
for _, content in ipairs(queued) do
  redis.call('RPUSH', KEYS[4],
    cjson.encode({role = 'user', content = content, run_id = ARGV[3], steered = true}))
  emit(ARGV[3], ARGV[4], cjson.encode({type = 'user_steered', content = content}))
end
redis.call('DEL', steer)
return #queued
