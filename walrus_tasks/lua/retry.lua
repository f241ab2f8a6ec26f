-- Record that step n's LLM call failed and will be made again, fenced: the attempt count and
-- model (persisted, so a delivery after a re-queue goes on counting), a restart marker when
-- the failed call had streamed output, then the retry event.
-- KEYS: lease, fence, run
-- ARGV: token, ttl_ms, step, attempts, fallback, run_id, maxlen, restart_json ('' = none),
--       retry_json, tries (on the model in use), not_before_ms (when the next attempt may go)
-- Returns 'ok', 'fenced' or 'stale'.
if not holds(ARGV[1], ARGV[2]) then
  return 'fenced'
end
if not at_step(KEYS[3], ARGV[3], 'llm') then
  return 'stale'
end
redis.call('HSET', KEYS[3], 'attempts', ARGV[4], 'fallback', ARGV[5], 'tries', ARGV[10],
  'not_before', ARGV[11])
if ARGV[8] ~= '' then
  emit(ARGV[6], ARGV[7], ARGV[8])
end
emit(ARGV[6], ARGV[7], ARGV[9])
return 'ok'
