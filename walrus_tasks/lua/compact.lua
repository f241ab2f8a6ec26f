-- Replace a conversation's history by a summary, archiving what it replaces; fenced.
-- KEYS: lease, fence, history, archive, the conversation's epoch (bumped: history rewritten)
-- A: token, ttl_ms, run_id, keep (messages at the end kept after the summary),
--    summary_json, event_json, maxlen, now_ms, expected_len (history's length as read)
-- Returns {'ok', archived message count} or {'fenced'} / {'stale'} (history moved on).
if not holds(A.token, A.ttl_ms) then
  return {'fenced'}
end
local n = redis.call('LLEN', KEYS[3])
if n ~= tonumber(A.expected_len) then
  return {'stale'}
end
local keep = math.min(tonumber(A.keep), n)
local old = redis.call('LRANGE', KEYS[3], 0, n - keep - 1)
local tail = {}
if keep > 0 then
  tail = redis.call('LRANGE', KEYS[3], n - keep, n - 1)
end
-- Built as text so the archived messages stay byte for byte what history held.
redis.call('RPUSH', KEYS[4], '{"archived_at":' .. A.now_ms .. ',"run_id":' ..
  cjson.encode(A.run_id) .. ',"messages":[' .. table.concat(old, ',') .. ']}')
redis.call('DEL', KEYS[3])
redis.call('INCR', KEYS[5])
redis.call('RPUSH', KEYS[3], A.summary_json)
for _, m in ipairs(tail) do
  redis.call('RPUSH', KEYS[3], m)
end
emit(A.run_id, A.maxlen, A.event_json)
return {'ok', #old}
