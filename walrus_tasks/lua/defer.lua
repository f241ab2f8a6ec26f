-- Put step n back in the queue for a while, fenced: free its execution claim (the delayed
-- delivery claims it again), record the id of that delivery's message (`step_task`: another
-- message of the step is stale, see begin.lua) and keep the lease for the wait plus the
-- dispatch grace, since nobody renews it while the step waits (a waiting step is not a dead
-- worker).
-- KEYS: lease, fence, run, claim
-- ARGV: token, ttl_ms, step, claim_id, hold_ms, now_ms, cid, task_id
-- Returns 'ok', 'fenced' or 'stale'.
if not holds(ARGV[1], ARGV[2]) then
  return 'fenced'
end
if not at_step(KEYS[3], ARGV[3], 'llm') then
  return 'stale'
end
if redis.call('GET', KEYS[4]) == ARGV[4] then
  redis.call('DEL', KEYS[4])
end
redis.call('HSET', KEYS[3], 'step_task', ARGV[3] .. '/' .. ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', K.LEASES, tonumber(ARGV[6]) + tonumber(ARGV[5]), ARGV[7])
return 'ok'
