-- Queue a steering message for the conversation's active run (injected before its next LLM
-- call by lua/steer_inject.lua).
-- KEYS: active (the conversation's active run id)
-- A: content
-- Returns the run id, or false when no run is running or waiting.
local run_id = redis.call('GET', KEYS[1])
if not run_id then
  return false
end
local status = redis.call('HGET', K.run(run_id), 'status')
if status ~= 'running' and status ~= 'waiting' then
  return false
end
redis.call('RPUSH', K.run_steer(run_id), A.content)
return run_id
