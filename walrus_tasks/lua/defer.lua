-- Put step n back in the queue for a while, fenced: free its execution claim (the delayed
-- delivery claims it again), record the id of that delivery's message (`step_task`: another
-- message of the step is stale, see begin.lua) and keep the lease for the wait plus the
-- dispatch grace, since nobody renews it while the step waits (a waiting step is not a dead
-- worker).
-- KEYS: lease, fence, run, claim
-- A: token, ttl_ms, step, claim_id, hold_ms, now_ms, cid, task_id
-- Returns 'ok', 'fenced' or 'stale'.
local refused = guard(A.token, A.ttl_ms, KEYS[3], A.step, 'llm')
if refused then
  return refused
end
if redis.call('GET', KEYS[4]) == A.claim_id then
  redis.call('DEL', KEYS[4])
end
expect_step_task(KEYS[3], A.step, A.task_id)
redis.call('PEXPIRE', KEYS[1], A.hold_ms)
redis.call('ZADD', K.leases(A.cid), tonumber(A.now_ms) + tonumber(A.hold_ms), A.cid)
return 'ok'
