-- Claim the execution of one step (or one tool call) of a run, fenced.
-- KEYS: lease, fence, run, claim, results
-- ARGV: token, ttl_ms, step, phase ('llm' | 'tools'), claim_id, call_id
-- Returns 'ok', 'fenced' (lease lost), 'stale' (already done / not this step),
-- or 'busy' (another delivery of the same work is executing it).
if not holds(ARGV[1], ARGV[2]) then
  return 'fenced'
end
if not at_step(KEYS[3], ARGV[3], ARGV[4]) then
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
