-- Claim one due heartbeat of an agent: at most one beat, once per due time.
-- KEYS: heartbeats (hash), fired (dedup key)
-- A: agent, due_ms, next_ms, dedup_ttl_ms
local raw = redis.call('HGET', KEYS[1], A.agent)
if not raw then
  return false
end
local e = cjson.decode(raw)
if tonumber(e.next) ~= tonumber(A.due_ms) then
  return false
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', A.dedup_ttl_ms) then
  return false
end
e.next = tonumber(A.next_ms)
redis.call('HSET', KEYS[1], A.agent, cjson.encode(e))
return true
