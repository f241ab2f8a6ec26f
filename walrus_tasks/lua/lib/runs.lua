-- The run transitions that several scripts share: guard a fenced write, emit an event, start
-- the next message, end a wait. Needs lib/fence.lua's KEYS convention where it says so.

-- Append an event to the run's stream and, in the same atomic step, to the live feed (read by
-- GET /v1/events).
local function emit(run_id, maxlen, event)
  local id = redis.call('XADD', K.run_events(run_id), 'MAXLEN', '~', maxlen, '*', 'data', event)
  local who = redis.call('HMGET', K.run(run_id), 'agent', 'sender')
  redis.call('XADD', K.feed(run_id), 'MAXLEN', '~', K.FEED_MAXLEN, '*',
    'run_id', run_id, 'agent', who[1] or '', 'sender', who[2] or '', 'data', event)
  return id
end

-- True when the run (record key `rk`) is at step `step` in phase `phase`, still live: running
-- (an LLM step), or running or waiting (its tool calls; a sibling call may be parked). What
-- makes every step-scoped transition idempotent: a replay of a done step finds it moved on.
local function at_step(rk, step, phase)
  local r = redis.call('HMGET', rk, 'status', 'step', 'phase')
  local live = r[1] == 'running' or (r[1] == 'waiting' and phase == 'tools')
  return live and r[2] == tostring(step) and r[3] == phase
end

-- The opening of every fenced step transition: nil when `token` holds the conversation lease
-- (lib/fence.lua) and the run (record `rk`) is at step `step` in phase `phase` (at_step), else
-- the refusal to return: 'fenced' (lease lost) or 'stale' (the run moved on). With no `step`,
-- the run need only be `running` (its end, finish.lua). Nothing is written past a refusal.
local function guard(token, ttl_ms, rk, step, phase)
  if not holds(token, ttl_ms) then
    return 'fenced'
  end
  if step == nil then
    if redis.call('HGET', rk, 'status') ~= 'running' then
      return 'stale'
    end
  elseif not at_step(rk, step, phase) then
    return 'stale'
  end
  return nil
end

-- The one writer of a run's `step_task`: step `step` of the run (record `rk`) is expected from
-- the message `task_id` alone, any other message of that step is stale (claim). defer.lua sets
-- it as it puts a step back in the queue; limit_release.lua moves it to the message that sends a
-- step woken by a freed slot at once; with no `step`, takeover.lua forgets it (the resumed step
-- is sent anew).
local function expect_step_task(rk, step, task_id)
  if step == nil then
    redis.call('HDEL', rk, 'step_task')
  else
    redis.call('HSET', rk, 'step_task', step .. '/' .. task_id)
  end
end

-- Claim the execution of step `step` in phase `phase` ('llm' | 'tools'; tool call `call` of it,
-- or '' for the LLM call) of the run with record `rk`: delivery `claim_id` takes the claim key
-- `claim` for ttl_ms. Fenced (lib/fence.lua's KEYS). `results`: the run's finished tool calls.
-- `task_id`: the delivering message's id ('' = the drain's step 0 in place, or a tool call).
-- Returns 'ok', 'fenced' (lease lost), 'stale' (already done / not this step, or a re-queued
-- step's message that another one replaced) or 'busy' (another delivery of the same work is
-- executing it).
local function claim(token, ttl_ms, rk, step, phase, claim_key, claim_id, results, call, task_id)
  local refused = guard(token, ttl_ms, rk, step, phase)
  if refused then
    return refused
  end
  -- A step put back in the queue expects one message (`step_task`, expect_step_task above): any other of that step is stale.
  if task_id and task_id ~= '' then
    local expected = redis.call('HGET', rk, 'step_task')
    local prefix = step .. '/'
    if expected and expected:sub(1, #prefix) == prefix and expected ~= prefix .. task_id then
      return 'stale'
    end
  end
  if call ~= '' and redis.call('HEXISTS', results, call) == 1 then
    return 'stale'
  end
  local ok = redis.call('SET', claim_key, claim_id, 'NX', 'PX', ttl_ms)
  if not ok and redis.call('GET', claim_key) ~= claim_id then
    return 'busy'
  end
  return 'ok'
end

-- The conversation's active run while it has not ended (running or waiting), else false.
-- docs/design.md, invariant 3: no path starts a conversation's next message while this is
-- set. A run whose lease expired with its worker stays active until a takeover resumes or fails it.
local function live_active(cid)
  local active = redis.call('GET', K.conv_active(cid))
  if not active then
    return false
  end
  local status = redis.call('HGET', K.run(active), 'status')
  if status == 'running' or status == 'waiting' then
    return active
  end
  return false
end

-- Pop the next inbox entry of `cid` and start its run under `token`, or release the lease.
-- Called with the lease held (or free and being taken: acquire.lua); atomic with the caller,
-- so a message appended by submit() is either seen here or finds the lease free (docs/design.md, invariant 4:
-- nothing stranded).
local function start_next(cid, token, now_ms, ttl_ms, maxlen)
  local live = live_active(cid)
  if live then  -- a caller's bug, never a state to write over: fail the script loudly
    error('start_next over the live run ' .. live .. ' of ' .. cid)
  end
  local run_id = redis.call('LPOP', K.conv_inbox(cid))
  if redis.call('LLEN', K.conv_inbox(cid)) == 0 then
    redis.call('ZREM', K.inboxes(cid), cid)
  end
  if not run_id then
    redis.call('DEL', K.conv_lease(cid), K.conv_active(cid))
    redis.call('ZREM', K.leases(cid), cid)
    return false
  end
  local rk = K.run(run_id)
  redis.call('PSETEX', K.conv_lease(cid), ttl_ms, token)
  redis.call('ZADD', K.leases(cid), now_ms + ttl_ms, cid)
  redis.call('SET', K.conv_active(cid), run_id)
  redis.call('HSET', rk, 'status', 'running', 'started_at', now_ms, 'step', 0, 'phase', 'llm')
  redis.call('SADD', K.runs_active(run_id), run_id)
  local r = redis.call('HMGET', rk, 'agent', 'sender', 'content', 'kind')
  if r[4] ~= 'compact' then  -- a compaction request is no message of the conversation
    redis.call('RPUSH', K.conv_history(cid),
      cjson.encode({role = 'user', content = r[3], run_id = run_id}))
  end
  redis.call('ZADD', K.conversations(cid), now_ms, cid)
  emit(run_id, maxlen, cjson.encode({type = 'start', run_id = run_id, agent = r[1], sender = r[2]}))
  return run_id
end

-- End the wait of tool call `call` of run `run_id` with `wake` (JSON), and hand the run's lease
-- to the call's next delivery: it must start within `grace_ms`. The run is `running` again once
-- no wait is left. Returns {token, step, call index, call id} for the dispatch, or false when
-- the call is not waiting. lease_key, fence_key: the run's conversation lease and fence.
local function wake_call(run_id, cid, call, wake, now_ms, grace_ms, lease_key, fence_key)
  local rk = K.run(run_id)
  local waiting = redis.call('HGET', K.run_waits(run_id), call)
  if not waiting then
    return false
  end
  redis.call('HDEL', K.run_waits(run_id), call)
  -- The wake carries when the wait began (ms), for the call's trace span.
  local decoded = cjson.decode(wake)
  decoded.since = cjson.decode(waiting).since
  redis.call('HSET', K.run_wakes(run_id), call, cjson.encode(decoded))
  if redis.call('HLEN', K.run_waits(run_id)) == 0 then
    redis.call('HSET', rk, 'status', 'running')
    redis.call('HDEL', rk, 'wait_until')
  end
  local token = redis.call('GET', lease_key) or redis.call('GET', fence_key)
  redis.call('PSETEX', lease_key, grace_ms, token)
  redis.call('ZADD', K.leases(cid), now_ms + grace_ms, cid)
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
  local waits = redis.call('HVALS', K.run_waits(run_id))
  for _, w in ipairs(waits) do
    local d = tonumber(cjson.decode(w).deadline)
    if d > latest then latest = d end
  end
  return latest
end

-- Remove run `run_id`'s messages from the history list `history`, and record how many on its
-- record `rk` (`rolled_back`). Returns that number.
local function remove_run_messages(history, epoch, run_id, rk)
  local kept, removed = {}, 0
  for _, raw in ipairs(redis.call('LRANGE', history, 0, -1)) do
    local ok, m = pcall(cjson.decode, raw)
    if ok and type(m) == 'table' and m.run_id == run_id then
      removed = removed + 1
    else
      table.insert(kept, raw)
    end
  end
  if removed > 0 then
    redis.call('DEL', history)
    for i = 1, #kept, 1000 do
      redis.call('RPUSH', history, unpack(kept, i, math.min(i + 999, #kept)))
    end
    redis.call('HSET', rk, 'rolled_back', removed)
    redis.call('INCR', epoch)  -- history rewritten: workers read it again (history_cache.py)
  end
  return removed
end

-- Roll run `run_id` (record `rk`, its conversation's history `history` and epoch `epoch`) back: an ended run's
-- messages leave history now; a run that has not ended is marked `rollback`, and finish.lua
-- removes them in the script that ends it, before the conversation's next run can start (so no
-- next run ever reads them). Returns the number removed, or -1 when marked.
local function rollback_run(rk, history, epoch, run_id)
  local status = redis.call('HGET', rk, 'status')
  if status ~= 'succeeded' and status ~= 'failed' and status ~= 'cancelled' then
    redis.call('HSET', rk, 'rollback', '1')
    return -1
  end
  return remove_run_messages(history, epoch, run_id, rk)
end

-- A delegated child run `run_id` ended with `result_json` (what the parent's delegate call
-- reports for it): record it with the parent's call `call` of run `parent_run`, and wake that
-- call when it was the last child to end. Idempotent: told twice, the call is woken once.
-- Returns the parent wake {token, step, index, call_id, parent agent, parent sender, parent
-- run} or false.
local function child_ended(parent_run, call, run_id, result_json, now_ms, grace_ms)
  local children = K.call_children(parent_run, call)
  if redis.call('HEXISTS', children, run_id) == 0 then
    return false
  end
  redis.call('HSET', children, run_id, result_json)
  for _, v in ipairs(redis.call('HVALS', children)) do
    if v == '' then
      return false
    end
  end
  local p = redis.call('HMGET', K.run(parent_run), 'agent', 'sender')
  if not p[1] then
    return false
  end
  local pcid = K.cid(p[1], p[2])
  local wake = wake_call(parent_run, pcid, call,
    cjson.encode({wait = 'delegate', kind = 'children', content = ''}),
    now_ms, grace_ms, K.conv_lease(pcid), K.conv_fence(pcid))
  if wake then
    table.insert(wake, p[1])
    table.insert(wake, p[2])
    table.insert(wake, parent_run)
  end
  return wake
end

-- The step of run `run_id` that waited for a limit's slot (limit_acquire.lua), woken as the
-- message `task_id`: only a step put back in the queue (its claim free) and still holding its
-- lease. Returns {agent, sender, run_id, lease token, step}, or false.
local function wake_deferred(run_id, task_id)
  local r = redis.call('HMGET', K.run(run_id), 'status', 'phase', 'step', 'agent', 'sender')
  local token = r[4] and redis.call('GET', K.conv_lease(K.cid(r[4], r[5])))
  if r[1] == 'running' and r[2] == 'llm' and token
      and redis.call('EXISTS', K.run_claim(run_id)) == 0 then
    expect_step_task(K.run(run_id), r[3], task_id)
    return {r[4], r[5], run_id, token, r[3]}
  end
  return false
end

-- Take the run that has waited longest for a slot of limit `name` off its waiting set (those
-- whose wait ran out are dropped first: steps long gone). The run id, or nil.
local function next_waiting(name, now_ms)
  local waiting = K.limit_waiting(name)
  redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now_ms)
  local first = redis.call('ZRANGE', waiting, 0, 0)[1]
  if first then
    redis.call('ZREM', waiting, first)
  end
  return first
end
