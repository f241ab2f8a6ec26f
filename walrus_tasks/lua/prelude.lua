-- Shared by every script (prepended by scripts.py). KEYS[1] = lease, KEYS[2] = fence.
local PREFIX = 'walrus:'

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

local function run_key(run_id) return PREFIX .. 'run:' .. run_id end
local function conv_key(cid, part) return PREFIX .. 'conv:' .. cid .. ':' .. part end

-- The live feed (keys.FEED): every run event of every run, bounded; read by GET /v1/events.
local FEED_MAXLEN = 10000

-- Append an event to the run's stream and, in the same atomic step, to the live feed.
local function emit(run_id, maxlen, event)
  local id = redis.call('XADD', run_key(run_id) .. ':events', 'MAXLEN', '~', maxlen, '*',
    'data', event)
  local who = redis.call('HMGET', run_key(run_id), 'agent', 'sender')
  redis.call('XADD', PREFIX .. 'feed', 'MAXLEN', '~', FEED_MAXLEN, '*',
    'run_id', run_id, 'agent', who[1] or '', 'sender', who[2] or '', 'data', event)
  return id
end

-- The conversation's active run while it has not ended (running or waiting), else false.
-- Invariant 3: no path starts a conversation's next message while this is set. A run whose
-- lease expired with its worker stays active until a takeover resumes or fails it.
local function live_active(cid)
  local active = redis.call('GET', conv_key(cid, 'active'))
  if not active then
    return false
  end
  local status = redis.call('HGET', run_key(active), 'status')
  if status == 'running' or status == 'waiting' then
    return active
  end
  return false
end

-- Pop the next inbox entry of `cid` and start its run under `token`, or release the lease.
-- Called with the lease held; atomic with the caller, so a message appended by submit() is
-- either seen here or finds the lease free (invariant 4: nothing stranded).
local function start_next(cid, token, now_ms, ttl_ms, maxlen)
  local live = live_active(cid)
  if live then  -- a caller's bug, never a state to write over: fail the script loudly
    error('start_next over the live run ' .. live .. ' of ' .. cid)
  end
  local run_id = redis.call('LPOP', conv_key(cid, 'inbox'))
  if redis.call('LLEN', conv_key(cid, 'inbox')) == 0 then
    redis.call('ZREM', PREFIX .. 'inboxes', cid)
  end
  if not run_id then
    redis.call('DEL', KEYS[1], conv_key(cid, 'active'))
    redis.call('ZREM', PREFIX .. 'leases', cid)
    return false
  end
  local rk = run_key(run_id)
  redis.call('PSETEX', KEYS[1], ttl_ms, token)
  redis.call('ZADD', PREFIX .. 'leases', now_ms + ttl_ms, cid)
  redis.call('SET', conv_key(cid, 'active'), run_id)
  redis.call('HSET', rk, 'status', 'running', 'started_at', now_ms, 'step', 0, 'phase', 'llm')
  redis.call('SADD', PREFIX .. 'runs:active', run_id)
  local r = redis.call('HMGET', rk, 'agent', 'sender', 'content', 'kind')
  if r[4] ~= 'compact' then  -- a compaction request is no message of the conversation
    redis.call('RPUSH', conv_key(cid, 'history'),
      cjson.encode({role = 'user', content = r[3], run_id = run_id}))
  end
  redis.call('ZADD', PREFIX .. 'conversations', now_ms, cid)
  emit(run_id, maxlen, cjson.encode({type = 'start', run_id = run_id, agent = r[1], sender = r[2]}))
  return run_id
end

-- End the wait of tool call `call` of run `run_id` with `wake` (JSON), and hand the run's lease
-- to the call's next delivery: it must start within `grace_ms`. The run is `running` again once
-- no wait is left. Returns {token, step, call index, call id} for the dispatch, or false when
-- the call is not waiting. lease_key, fence_key: the run's conversation lease and fence.
local function wake_call(run_id, cid, call, wake, now_ms, grace_ms, lease_key, fence_key)
  local rk = run_key(run_id)
  if redis.call('HDEL', rk .. ':waits', call) == 0 then
    return false
  end
  redis.call('HSET', rk .. ':wakes', call, wake)
  if redis.call('HLEN', rk .. ':waits') == 0 then
    redis.call('HSET', rk, 'status', 'running')
    redis.call('HDEL', rk, 'wait_until')
  end
  local token = redis.call('GET', lease_key) or redis.call('GET', fence_key)
  redis.call('PSETEX', lease_key, grace_ms, token)
  redis.call('ZADD', PREFIX .. 'leases', now_ms + grace_ms, cid)
  local r = redis.call('HMGET', rk, 'step', 'calls')
  local index = -1
  for i, c in ipairs(cjson.decode(r[2] or '[]')) do
    if c['id'] == call then index = i - 1 end
  end
  return {token, r[1], index, call}
end

-- The latest deadline (ms) of the run's waits, or 0.
local function latest_deadline(run_id)
  local latest = 0
  local waits = redis.call('HVALS', run_key(run_id) .. ':waits')
  for _, w in ipairs(waits) do
    local d = tonumber(cjson.decode(w).deadline)
    if d > latest then latest = d end
  end
  return latest
end
