-- Persist the outcome of one LLM step, fenced and idempotent on (run, step), after appending the
-- events that close its output (the last chunk, text_end) to the run's stream; count its usage.
-- KEYS: lease, fence, run, history, claim, usage hour, usage totals
-- A: token, ttl_ms, step, message_json ('' = nothing to append), next_phase
--    ('tools' | 'final' | 'cancelled'), calls_json, input_tokens, output_tokens, model,
--    run_id, maxlen, usage_field ('tenant|agent|model|', '' = no LLM call to count),
--    usage_expire_at (unix seconds: when the hour's usage bucket goes), events (event_json...,
--    appended first)
-- Returns 'ok', 'fenced' or 'stale'.
return commit_step(A, A.next_phase, A.calls_json, A.events, KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  KEYS[7])
