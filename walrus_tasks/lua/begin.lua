-- Claim the execution of one step (or one tool call) of a run, fenced.
-- KEYS: lease, fence, run, claim, results
-- A: token, ttl_ms, step, phase ('llm' | 'tools'), claim_id, call_id, task_id ('' = the
--    drain's step 0 in place)
-- Returns 'ok', 'fenced' (lease lost), 'stale' (already done / not this step, or a re-queued
-- step's message that another one replaced), or 'busy' (another delivery of the same work is
-- executing it).
return claim(A.token, A.ttl_ms, KEYS[3], A.step, A.phase, KEYS[4], A.claim_id, KEYS[5], A.call_id,
  A.task_id)
