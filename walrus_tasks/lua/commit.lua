-- Persist the outcome of one LLM step, fenced and idempotent on (run, step), after appending the
-- events that close its output (the last chunk, text_end) to the run's stream.
-- KEYS: lease, fence, run, history, claim
-- ARGV: token, ttl_ms, step, message_json ('' = nothing to append), next_phase
--       ('tools' | 'final' | 'cancelled'), calls_json, input_tokens, output_tokens, model,
--       run_id, maxlen, then the events to append first (event_json...)
-- Returns 'ok', 'fenced' or 'stale'.
if not holds(ARGV[1], ARGV[2]) then
  return 'fenced'
end
if not at_step(KEYS[3], ARGV[3], 'llm') then
  return 'stale'
end
for i = 12, #ARGV do
  emit(ARGV[10], ARGV[11], ARGV[i])
end
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[4])
end
redis.call('HINCRBY', KEYS[3], 'input_tokens', ARGV[7])
redis.call('HINCRBY', KEYS[3], 'output_tokens', ARGV[8])
redis.call('HSET', KEYS[3], 'phase', ARGV[5], 'calls', ARGV[6], 'model', ARGV[9])
redis.call('HDEL', KEYS[3], 'attempts', 'tries', 'fallback', 'not_before')  -- per step
redis.call('DEL', KEYS[5])
return 'ok'
