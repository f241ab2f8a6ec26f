-- Take the subscriptions a publish fires: every subscription to the source; a `once` one is
-- removed in the same atomic step, so of concurrent publishers exactly one fires it.
-- KEYS: subscriptions hash, the source's index set
-- Returns the fired subscriptions' JSON.
local fired = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then
    redis.call('SREM', KEYS[2], id)  -- an index entry without its subscription
  else
    if cjson.decode(raw).once == true then
      redis.call('HDEL', KEYS[1], id)
      redis.call('SREM', KEYS[2], id)
    end
    table.insert(fired, raw)
  end
end
return fired
