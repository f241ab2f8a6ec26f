-- Append events to a run's stream, in order, fenced.
-- KEYS: lease, fence
-- ARGV: token, ttl_ms, run_id, maxlen, event_json, more event_json...
-- Returns the entry id of the last event, or false when fenced.
if not holds(ARGV[1], ARGV[2]) then
  return false
end
local id
for i = 5, #ARGV do
  id = emit(ARGV[3], ARGV[4], ARGV[i])
end
return id
