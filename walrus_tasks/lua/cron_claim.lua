-- Claim one due fire of a cron entry: at most one beat, once per due time, ever.
-- KEYS: crons (hash), crons_due (zset), fired (dedup key)
-- A: id, due_ms, next_ms ('' = delete the entry), fired ('1') or skipped ('0'), now_s,
--    dedup_ttl_ms
-- Returns the entry JSON as it was before this claim, or false (not due at due_ms any more,
-- already claimed, or deleted).
local score = redis.call('ZSCORE', KEYS[2], A.id)
if not score or tonumber(score) ~= tonumber(A.due_ms) then
  return false
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', A.dedup_ttl_ms) then
  return false
end
local raw = redis.call('HGET', KEYS[1], A.id)
if not raw then
  redis.call('ZREM', KEYS[2], A.id)
  return false
end
if A.next_ms == '' then
  redis.call('HDEL', KEYS[1], A.id)
  redis.call('ZREM', KEYS[2], A.id)
  return raw
end
local e = cjson.decode(raw)
e.next_fire_at = tonumber(A.next_ms) / 1000
if A.fired == '1' then
  e.last_fire_at = tonumber(A.now_s)
  e.fires = (tonumber(e.fires) or 0) + 1
else
  e.skipped = (tonumber(e.skipped) or 0) + 1
end
redis.call('HSET', KEYS[1], A.id, cjson.encode(e))
redis.call('ZADD', KEYS[2], A.next_ms, A.id)
return raw
