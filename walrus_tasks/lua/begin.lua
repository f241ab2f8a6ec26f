-- Claim the execution of one step (or one tool call) of a run, fenced.
-- KEYS: lease, fence, run, claim, results
-- ARGV: token, ttl_ms, step, phase ('llm' | 'tools'), claim_id, call_id, task_id ('' = the
--       drain's step 0 in place)
-- Returns 'ok', 'fenced' (lease lost), 'stale' (already done / not this step, or a re-queued
-- step's message that another one replaced), or 'busy' (another delivery of the same work is
-- executing it).
if not holds(ARGV[1], ARGV[2]) then
  return 'fenced'
end
if not at_step(KEYS[3], ARGV[3], ARGV[4]) then
  return 'stale'
end
-- A step put back in the queue expects one message (`step_task`, set by defer.lua, moved on by
-- limit_release.lua when a freed slot sends it at once): any other of that step is stale.
local expected = redis.call('HGET', KEYS[3], 'step_task')
local prefix = ARGV[3] .. '/'
if ARGV[7] ~= '' and expected and expected:sub(1, #prefix) == prefix
    and expected ~= prefix .. ARGV[7] then
  return 'stale'
end
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[5], ARGV[6]) == 1 then
  return 'stale'
end
local ok = redis.call('SET', KEYS[4], ARGV[5], 'NX', 'PX', ARGV[2])
if not ok and redis.call('GET', KEYS[4]) ~= ARGV[5] then
  return 'busy'
end
return 'ok'
