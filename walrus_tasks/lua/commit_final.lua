-- Commit a run's last LLM step (commit.lua, its next phase 'final') and end the run
-- (finish.lua), in one atomic step: one round trip at the end of a run instead of two.
-- KEYS: commit.lua's (lease, fence, run, history, claim, usage hour, usage totals), then
--       finish.lua's past the run (the metrics hash; on one Redis the subscriptions index)
--       (and with a claim of the next run's step 0, finish.lua's last three)
-- A: commit.lua's but next_phase and calls_json, with its closing events as events_json (a
--    JSON list of event JSON), then finish.lua's but those already given (token, ttl_ms,
--    run_id, maxlen), its claim_id and claim arguments too; increments (each: field, by) the
--    tail, as finish.lua's
-- Returns finish.lua's reply; {'fenced'} or {'stale'} when the commit is refused (nothing
-- written).
local state = commit_step(A, 'final', '[]', cjson.decode(A.events_json), KEYS[3], KEYS[4],
  KEYS[5], KEYS[6], KEYS[7])
if state ~= 'ok' then
  return {state}
end
local ended = end_run(A, KEYS[3], KEYS[8], KEYS[9])
return claim_next(A, ended, KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS])
