-- Claim one due heartbeat of an agent: at most one beat, once per due time.
-- KEYS: heartbeats (hash), fired (dedup key)
-- ARGV: agent, due_ms, next_ms, dedup_ttl_ms
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return false
end
local e = cjson.decode(raw)
if tonumber(e.next) ~= tonumber(ARGV[2]) then
  return false
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then
  return false
end
e.next = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(e))
return true
