-- Claim the execution of one step (or one tool call) of a run, fenced.
-- KEYS: lease, fence, run, claim, results
-- ARGV: token, ttl_ms, step, phase ('llm' | 'tools'), claim_id, call_id, task_id ('' = the
--       drain's step 0 in place)
-- Returns 'ok', 'fenced' (lease lost), 'stale' (already done / not this step, or a re-queued
-- step's message that another one replaced), or 'busy' (another delivery of the same work is
-- executing it).
return claim(ARGV[1], ARGV[2], KEYS[3], ARGV[3], ARGV[4], KEYS[4], ARGV[5], KEYS[5], ARGV[6],
  ARGV[7])
