-- End a run (terminal status + the `end` event) and start the conversation's next run (its
-- lease held for the dispatch grace, grace_ms, while its first step is queued), or release the
-- lease, in one atomic step. A delegated run also records its result with its
-- parent, waking the parent's `delegate` call when it was the last child to finish.
-- The run is counted in the cluster-wide figures (walrus_tasks/metrics.py) in the same step.
-- KEYS: lease, fence, run, the metrics hash, the index of the subscriptions to the agent's
--       `done` source
-- A: token, ttl_ms, run_id, cid, status, error, end_json, now_ms, maxlen, events_ttl,
--    result_json (what the parent's delegate call reports for this run), grace_ms,
--    the figure's fields (metrics.run_figure): count_field ('' = count nothing),
--    seconds_field, seconds ('' = never started), bucket_field; increments (each: field, by),
--    added to the same hash (metrics.tenant_figure: the run and its tokens by tenant)
-- A run marked `rollback` (lib/runs.lua rollback_run) has its messages removed from history here,
-- before the next run starts. A run with a `webhook` enters the webhook outbox, held for
-- grace_ms: the caller sends it, and the reaper again if the caller died first
-- (walrus_tasks/webhooks.py).
-- Returns {'ended', next_run_id or false, parent wake or false, subscriptions to `done`} or
-- {'fenced'} / {'stale'}; a parent wake is {token, step, index, call_id, parent agent, parent
-- sender, parent run}.
local refused = guard(A.token, A.ttl_ms, KEYS[3])
if refused then
  return {refused}
end
redis.call('HSET', KEYS[3], 'status', A.status, 'finished_at', A.now_ms, 'phase', 'done')
if A.error ~= '' then
  redis.call('HSET', KEYS[3], 'error', A.error)
end
emit(A.run_id, A.maxlen, A.end_json)
redis.call('EXPIRE', K.run_events(A.run_id), A.events_ttl)
redis.call('EXPIRE', KEYS[3], A.events_ttl)
redis.call('DEL', unpack(K.run_ended(A.run_id)))
redis.call('SREM', K.runs_active(A.run_id), A.run_id)
if redis.call('HEXISTS', KEYS[3], 'rollback') == 1 then
  remove_run_messages(K.conv_history(A.cid), K.conv_epoch(A.cid), A.run_id, KEYS[3])
end
if redis.call('HEXISTS', KEYS[3], 'webhook') == 1 then
  redis.call('ZADD', K.webhooks(A.run_id), tonumber(A.now_ms) + tonumber(A.grace_ms), A.run_id)
end
if A.count_field ~= '' then  -- pcall: a bad figure never leaves a run unended
  redis.pcall('HINCRBY', KEYS[4], A.count_field, 1)
  if A.seconds ~= '' then
    redis.pcall('HINCRBYFLOAT', KEYS[4], A.seconds_field, A.seconds)
    redis.pcall('HINCRBY', KEYS[4], A.bucket_field, 1)
  end
  for _, inc in ipairs(A.increments) do
    redis.pcall('HINCRBY', KEYS[4], inc.field, inc.by)
  end
end
local next_run = start_next(A.cid, A.token, tonumber(A.now_ms), tonumber(A.ttl_ms), A.maxlen)
if next_run then  -- its first step waits in the queue: the lease gets the dispatch grace
  redis.call('PSETEX', KEYS[1], A.grace_ms, A.token)
  redis.call('ZADD', K.leases(A.cid), tonumber(A.now_ms) + tonumber(A.grace_ms), A.cid)
end
local parent_wake = false
local parent = redis.call('HMGET', KEYS[3], 'parent_run', 'parent_call')
if parent[1] and parent[2] then
  local children = K.call_children(parent[1], parent[2])
  if redis.call('HEXISTS', children, A.run_id) == 1 then
    redis.call('HSET', children, A.run_id, A.result_json)
    local done = true
    for _, v in ipairs(redis.call('HVALS', children)) do
      if v == '' then done = false end
    end
    local p = redis.call('HMGET', K.run(parent[1]), 'agent', 'sender')
    if done and p[1] then
      local pcid = K.cid(p[1], p[2])
      parent_wake = wake_call(parent[1], pcid, parent[2],
        cjson.encode({wait = 'delegate', kind = 'children', content = ''}),
        tonumber(A.now_ms), tonumber(A.grace_ms), K.conv_lease(pcid), K.conv_fence(pcid))
      if parent_wake then
        table.insert(parent_wake, p[1])
        table.insert(parent_wake, p[2])
        table.insert(parent_wake, parent[1])
      end
    end
  end
end
return {'ended', next_run, parent_wake, redis.call('SCARD', KEYS[5])}
