-- Delete one subscription and its index entry.
-- KEYS: subscriptions hash
-- ARGV: id
-- Returns 1 if it existed, else 0.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', K.subs_source(cjson.decode(raw).source), ARGV[1])
return 1
