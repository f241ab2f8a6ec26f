-- End a run (terminal status + the `end` event) and start the conversation's next run (its
-- lease held for the dispatch grace, grace_ms, while its first step is queued), or release the
-- lease, in one atomic step. A delegated run also records its result with its
-- parent, waking the parent's `delegate` call when it was the last child to finish.
-- The run is counted in the cluster-wide figures (walrus_tasks/metrics.py) in the same step.
-- KEYS: lease, fence, run, the metrics hash (of the run's bucket), and on one Redis the index
--       of the subscriptions to the agent's `done` source (on a cluster it lives in another
--       slot: the caller counts them)
-- A: token, ttl_ms, run_id, cid, status, error, end_json, now_ms, maxlen, events_ttl,
--    result_json (what the parent's delegate call reports for this run), grace_ms,
--    the figure's fields (metrics.run_figure): count_field ('' = count nothing),
--    seconds_field, seconds ('' = never started), bucket_field; increments (each: field, by),
--    added to the same hash (metrics.tenant_figure: the run and its tokens by tenant),
--    one_redis ('1': one Redis, the parent's keys are in reach; '0': on a cluster the run
--    goes into its bucket's `parents` outbox and the caller tells the parent, child_done.lua)
-- A run marked `rollback` (lib/runs.lua rollback_run) has its messages removed from history here,
-- before the next run starts. A run with a `webhook` enters the webhook outbox, held for
-- grace_ms: the caller sends it, and the reaper again if the caller died first
-- (walrus_tasks/webhooks.py).
-- Returns {'ended', next_run_id or false, parent wake or false, subscriptions to `done` (-1:
-- not counted here), parent to tell or false} or {'fenced'} / {'stale'}; a parent wake is
-- {token, step, index, call_id, parent agent, parent sender, parent run}; a parent to tell
-- {parent run, parent call}.
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
local parent_wake, tell = false, false
local parent = redis.call('HMGET', KEYS[3], 'parent_run', 'parent_call')
if parent[1] and parent[2] then
  if A.one_redis == '1' then
    parent_wake = child_ended(parent[1], parent[2], A.run_id, A.result_json, tonumber(A.now_ms),
      tonumber(A.grace_ms))
  else  -- kept with the run until the parent has heard (the reaper tells it again if not)
    redis.call('HSET', KEYS[3], 'parent_result', A.result_json)
    redis.call('ZADD', K.parents(A.run_id), tonumber(A.now_ms) + tonumber(A.grace_ms), A.run_id)
    tell = {parent[1], parent[2]}
  end
end
local subs = -1
if KEYS[5] then
  subs = redis.call('SCARD', KEYS[5])
end
return {'ended', next_run, parent_wake, subs, tell}
