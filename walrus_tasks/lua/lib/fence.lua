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

-- The conversation's next fencing token, stored in its fence counter (`fence_key`, by default
-- KEYS[2]).
-- Not a bare INCR: Redis replication is asynchronous, so a replica promoted by a failover may
-- have missed the last increments of the old master, and INCR there would hand out a token a
-- worker of the old master still holds. The token is max(counter + 1, the master's clock in
-- ms) (a hybrid logical clock): a failover takes at least the sentinels'
-- down-after-milliseconds, so with clocks in step within that the new master's first token
-- is past every token the old master handed out, and tokens never go back.
local function next_token(fence_key)
  fence_key = fence_key or KEYS[2]
  local t = redis.call('TIME')
  local clock_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local n = math.max((tonumber(redis.call('GET', fence_key)) or 0) + 1, clock_ms)
  local token = string.format('%d', n)
  redis.call('SET', fence_key, token)
  return token
end
