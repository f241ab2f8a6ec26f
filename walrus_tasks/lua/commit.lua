-- Persist the outcome of one LLM step, fenced and idempotent on (run, step), after appending the
-- events that close its output (the last chunk, text_end) to the run's stream; count its usage.
-- KEYS: lease, fence, run, history, claim, usage hour, usage totals
-- A: token, ttl_ms, step, message_json ('' = nothing to append), next_phase
--    ('tools' | 'final' | 'cancelled'), calls_json, input_tokens, output_tokens, model,
--    run_id, maxlen, usage_field ('tenant|agent|model|', '' = no LLM call to count),
--    usage_expire_at (unix seconds: when the hour's usage bucket goes), events (event_json...,
--    appended first)
-- Returns 'ok', 'fenced' or 'stale'.
local refused = guard(A.token, A.ttl_ms, KEYS[3], A.step, 'llm')
if refused then
  return refused
end
for _, event in ipairs(A.events) do
  emit(A.run_id, A.maxlen, event)
end
if A.message_json ~= '' then
  redis.call('RPUSH', KEYS[4], A.message_json)
end
redis.call('HINCRBY', KEYS[3], 'input_tokens', A.input_tokens)
redis.call('HINCRBY', KEYS[3], 'output_tokens', A.output_tokens)
redis.call('HSET', KEYS[3], 'phase', A.next_phase, 'calls', A.calls_json, 'model', A.model)
redis.call('HDEL', KEYS[3], 'attempts', 'tries', 'fallback', 'not_before')  -- per step
redis.call('DEL', KEYS[5])
if A.usage_field ~= '' then  -- the hour's bucket and the all-time totals (walrus_tasks/usage.py)
  for _, key in ipairs({KEYS[6], KEYS[7]}) do
    redis.call('HINCRBY', key, A.usage_field .. 'in', A.input_tokens)
    redis.call('HINCRBY', key, A.usage_field .. 'out', A.output_tokens)
    redis.call('HINCRBY', key, A.usage_field .. 'calls', 1)
    if tonumber(A.step) == 0 then
      redis.call('HINCRBY', key, A.usage_field .. 'runs', 1)
    end
  end
  if redis.call('TTL', KEYS[6]) == -1 then  -- once per bucket
    redis.call('EXPIREAT', KEYS[6], A.usage_expire_at)
  end
end
return 'ok'
