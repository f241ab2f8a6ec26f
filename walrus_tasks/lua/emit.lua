-- Append events to a run's stream, in order, fenced.
-- KEYS: lease, fence
-- A: token, ttl_ms, run_id, maxlen, events (event_json...)
-- Returns the entry id of the last event, or false when fenced.
if not holds(A.token, A.ttl_ms) then
  return false
end
local id
for _, event in ipairs(A.events) do
  id = emit(A.run_id, A.maxlen, event)
end
return id
