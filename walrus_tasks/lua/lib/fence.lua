-- The fence check of every fenced script. Scripts that use it take KEYS[1] = the conversation's
-- lease and KEYS[2] = its fence counter.

-- True when `token` holds the conversation lease. A lease that expired while nobody took it
-- over (the fence still equals our token) is taken back: expiry alone never fences a worker,
-- only another holder does.
local function holds(token, ttl_ms)
  local cur = redis.call('GET', KEYS[1])
  if cur == token then
    return true
  end
  if not cur and redis.call('GET', KEYS[2]) == token then
    redis.call('SET', KEYS[1], token, 'PX', ttl_ms)
    return true
  end
  return false
end
