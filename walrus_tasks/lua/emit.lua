-- Append one event to a run's stream, fenced.
-- KEYS: lease, fence
-- ARGV: token, ttl_ms, run_id, maxlen, event_json
if not holds(ARGV[1], ARGV[2]) then
  return false
end
return emit(ARGV[3], ARGV[4], ARGV[5])
