-- Record that step n's LLM call failed and will be made again, fenced: the attempt count and
-- model (persisted, so a delivery after a re-queue goes on counting), a restart marker when
-- the failed call had streamed output, then the retry event.
-- KEYS: lease, fence, run
-- A: token, ttl_ms, step, attempts, fallback, run_id, maxlen, restart_json ('' = none),
--    retry_json, tries (on the model in use), not_before_ms (when the next attempt may go)
-- Returns 'ok', 'fenced' or 'stale'.
local refused = guard(A.token, A.ttl_ms, KEYS[3], A.step, 'llm')
if refused then
  return refused
end
redis.call('HSET', KEYS[3], 'attempts', A.attempts, 'fallback', A.fallback, 'tries', A.tries,
  'not_before', A.not_before_ms)
if A.restart_json ~= '' then
  emit(A.run_id, A.maxlen, A.restart_json)
end
emit(A.run_id, A.maxlen, A.retry_json)
return 'ok'
