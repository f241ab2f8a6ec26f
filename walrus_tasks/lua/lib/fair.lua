-- The fair dispatcher: which conversation a drain starts next (walrus_tasks/fair.py says why).
-- A conversation is *ready* when it could start at once: lease free, no live run, a message
-- queued. Ready conversations sit in their tenant's per-agent sets; tenants are served in
-- order of virtual time (weighted fair queueing), each pick moving the tenant on by 1 / weight.
-- Needs lib/runs.lua (live_active).

-- True when conversation `cid` can start a run now.
local function startable(cid)
  return redis.call('EXISTS', K.conv_lease(cid)) == 0
    and redis.call('LLEN', K.conv_inbox(cid)) > 0 and not live_active(cid)
end

-- Mark `cid` (of `agent`, for `tenant`) ready. A tenant that had nothing ready joins at
-- max(its own virtual time, the clock): it is served next, but banks no credit by idling.
-- True when newly marked.
local function mark_ready(cid, agent, tenant, now_ms)
  if redis.call('ZADD', K.fair_ready(tenant, agent), 'NX', now_ms, cid) == 0 then
    return false
  end
  redis.call('SADD', K.fair_agents(tenant), agent)
  if not redis.call('ZSCORE', K.FAIR_TENANTS, tenant) then
    local clock = tonumber(redis.call('HGET', K.FAIR_CLOCK, 'v') or '0')
    local own = tonumber(redis.call('ZSCORE', K.FAIR_AHEAD, tenant) or '0')
    redis.call('ZREM', K.FAIR_AHEAD, tenant)
    redis.call('ZADD', K.FAIR_TENANTS, math.max(own, clock), tenant)
  end
  return true
end

-- Drop `cid` from the ready set of (`tenant`, `agent`), and the emptied sets above it.
local function unmark(cid, agent, tenant)
  local ready = K.fair_ready(tenant, agent)
  if redis.call('ZREM', ready, cid) == 0 then
    return
  end
  if redis.call('ZCARD', ready) == 0 then
    redis.call('SREM', K.fair_agents(tenant), agent)
  end
  if redis.call('SCARD', K.fair_agents(tenant)) == 0 then
    local v = redis.call('ZSCORE', K.FAIR_TENANTS, tenant)
    if v then
      redis.call('ZREM', K.FAIR_TENANTS, tenant)
      redis.call('ZADD', K.FAIR_AHEAD, v, tenant)
    end
  end
end

-- Take the next conversation to start: the tenant of the lowest virtual time; within it the
-- agent of the highest priority (`priorities`: agent -> priority, default 0), the longest
-- waiting first among equals; within that agent, the conversation ready the longest. With
-- `look` (one Redis: the conversation's keys are at hand), entries that can no longer start
-- (their lease holder or a takeover started them) are dropped on the way; every turn of the
-- loop removes one entry, so it ends. Without (a cluster: they live in another slot), the
-- caller looks in a second step (start_picked.lua). The cid, or false: none ready.
local function pick(now_ms, weights, default_weight, priorities, look)
  while true do
    local top = redis.call('ZRANGE', K.FAIR_TENANTS, 0, 0, 'WITHSCORES')
    if #top == 0 then
      return false
    end
    local tenant, v = top[1], tonumber(top[2])
    local agents = K.fair_agents(tenant)
    local best, best_cid, best_prio, best_at = false, false, 0, 0
    for _, agent in ipairs(redis.call('SMEMBERS', agents)) do
      local head = redis.call('ZRANGE', K.fair_ready(tenant, agent), 0, 0, 'WITHSCORES')
      if #head == 0 then
        redis.call('SREM', agents, agent)
      else
        local prio, at = tonumber(priorities[agent] or 0), tonumber(head[2])
        if not best or prio > best_prio or (prio == best_prio and at < best_at) then
          best, best_cid, best_prio, best_at = agent, head[1], prio, at
        end
      end
    end
    if not best then
      redis.call('ZREM', K.FAIR_TENANTS, tenant)
      redis.call('ZADD', K.FAIR_AHEAD, v, tenant)
    else
      local ready = K.fair_ready(tenant, best)
      redis.call('ZREM', ready, best_cid)
      if redis.call('ZCARD', ready) == 0 then
        redis.call('SREM', agents, best)
      end
      if not look or startable(best_cid) then
        local after = v + 1 / (tonumber(weights[tenant]) or default_weight)
        if redis.call('SCARD', agents) > 0 then
          redis.call('ZADD', K.FAIR_TENANTS, after, tenant)
        else
          redis.call('ZREM', K.FAIR_TENANTS, tenant)
          redis.call('ZADD', K.FAIR_AHEAD, after, tenant)
        end
        redis.call('HSET', K.FAIR_CLOCK, 'v', v, 'picked_at', now_ms)
        -- Who is not ahead of the clock would join at the clock anyway: forget them.
        redis.call('ZREMRANGEBYSCORE', K.FAIR_AHEAD, '-inf', v)
        return best_cid
      end
    end
  end
end
