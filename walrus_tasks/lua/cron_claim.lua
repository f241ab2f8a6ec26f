-- Claim one due fire of a cron entry: at most one beat, once per due time, ever.
-- KEYS: crons (hash), crons_due (zset), fired (dedup key)
-- ARGV: id, due_ms, next_ms ('' = delete the entry), fired ('1') or skipped ('0'), now_s,
--       dedup_ttl_ms
-- Returns the entry JSON as it was before this claim, or false (not due at due_ms any more,
-- already claimed, or deleted).
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return false
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[6]) then
  return false
end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return false
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return raw
end
local e = cjson.decode(raw)
e.next_fire_at = tonumber(ARGV[3]) / 1000
if ARGV[4] == '1' then
  e.last_fire_at = tonumber(ARGV[5])
  e.fires = (tonumber(e.fires) or 0) + 1
else
  e.skipped = (tonumber(e.skipped) or 0) + 1
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(e))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return raw
