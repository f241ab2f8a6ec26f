-- Delete one subscription and its index entry.
-- KEYS: subscriptions hash
-- A: id
-- Returns 1 if it existed, else 0.
local raw = redis.call('HGET', KEYS[1], A.id)
if not raw then
  return 0
end
redis.call('HDEL', KEYS[1], A.id)
redis.call('SREM', K.subs_source(cjson.decode(raw).source), A.id)
return 1
