-- End a run (terminal status + the `end` event) and start the conversation's next run (its
-- lease held for the dispatch grace, grace_ms, while its first step is queued), or release the
-- lease, in one atomic step. A delegated run also records its result with its
-- parent, waking the parent's `delegate` call when it was the last child to finish.
-- The run is counted in the cluster-wide figures (walrus_tasks/metrics.py) in the same step.
-- KEYS: lease, fence, run, the metrics hash, the index of the subscriptions to the agent's
--       `done` source
-- ARGV: token, ttl_ms, run_id, cid, status, error, end_json, now_ms, maxlen, events_ttl,
--       result_json (what the parent's delegate call reports for this run), grace_ms,
--       then the figure's fields (metrics.run_figure: count field, seconds field, seconds or
--       '', bucket field), or nothing to count none; then (field, increment) pairs, each
--       added to the same hash (metrics.tenant_figure: the run and its tokens by tenant)
-- A run marked `rollback` (lib/runs.lua rollback_run) has its messages removed from history here,
-- before the next run starts. A run with a `webhook` enters the webhook outbox, held for
-- grace_ms: the caller sends it, and the reaper again if the caller died first
-- (walrus_tasks/webhooks.py).
-- Returns {'ended', next_run_id or false, parent wake or false, subscriptions to `done`} or
-- {'fenced'} / {'stale'}; a parent wake is {token, step, index, call_id, parent agent, parent
-- sender, parent run}.
if not holds(ARGV[1], ARGV[2]) then
  return {'fenced'}
end
local status = redis.call('HGET', KEYS[3], 'status')
if status ~= 'running' then
  return {'stale'}
end
redis.call('HSET', KEYS[3], 'status', ARGV[5], 'finished_at', ARGV[8], 'phase', 'done')
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[3], 'error', ARGV[6])
end
emit(ARGV[3], ARGV[9], ARGV[7])
redis.call('EXPIRE', K.run_events(ARGV[3]), ARGV[10])
redis.call('EXPIRE', KEYS[3], ARGV[10])
redis.call('DEL', unpack(K.run_ended(ARGV[3])))
redis.call('SREM', K.ACTIVE_RUNS, ARGV[3])
if redis.call('HEXISTS', KEYS[3], 'rollback') == 1 then
  remove_run_messages(K.conv_history(ARGV[4]), K.conv_epoch(ARGV[4]), ARGV[3], KEYS[3])
end
if redis.call('HEXISTS', KEYS[3], 'webhook') == 1 then
  redis.call('ZADD', K.WEBHOOKS, tonumber(ARGV[8]) + tonumber(ARGV[12]), ARGV[3])
end
if ARGV[13] then  -- pcall: a bad figure never leaves a run unended
  redis.pcall('HINCRBY', KEYS[4], ARGV[13], 1)
  if ARGV[15] ~= '' then
    redis.pcall('HINCRBYFLOAT', KEYS[4], ARGV[14], ARGV[15])
    redis.pcall('HINCRBY', KEYS[4], ARGV[16], 1)
  end
  for i = 17, #ARGV - 1, 2 do
    redis.pcall('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
  end
end
local next_run = start_next(ARGV[4], ARGV[1], tonumber(ARGV[8]), tonumber(ARGV[2]), ARGV[9])
if next_run then  -- its first step waits in the queue: the lease gets the dispatch grace
  redis.call('PSETEX', KEYS[1], ARGV[12], ARGV[1])
  redis.call('ZADD', K.LEASES, tonumber(ARGV[8]) + tonumber(ARGV[12]), ARGV[4])
end
local parent_wake = false
local parent = redis.call('HMGET', KEYS[3], 'parent_run', 'parent_call')
if parent[1] and parent[2] then
  local children = K.call_children(parent[1], parent[2])
  if redis.call('HEXISTS', children, ARGV[3]) == 1 then
    redis.call('HSET', children, ARGV[3], ARGV[11])
    local done = true
    for _, v in ipairs(redis.call('HVALS', children)) do
      if v == '' then done = false end
    end
    local p = redis.call('HMGET', K.run(parent[1]), 'agent', 'sender')
    if done and p[1] then
      local pcid = K.cid(p[1], p[2])
      parent_wake = wake_call(parent[1], pcid, parent[2],
        cjson.encode({wait = 'delegate', kind = 'children', content = ''}),
        tonumber(ARGV[8]), tonumber(ARGV[12]), K.conv_lease(pcid), K.conv_fence(pcid))
      if parent_wake then
        table.insert(parent_wake, p[1])
        table.insert(parent_wake, p[2])
        table.insert(parent_wake, parent[1])
      end
    end
  end
end
return {'ended', next_run, parent_wake, redis.call('SCARD', KEYS[5])}
