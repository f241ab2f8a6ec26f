-- A step's outcome and a run's end: commit.lua commits an LLM step, finish.lua ends a run, and
-- commit_final.lua does both for a run's last step, in one step (one round trip fewer at the
-- end of every run). Needs lib/fence.lua's KEYS convention and lib/runs.lua.

-- Commit LLM step `c.step` of run `c.run_id` (`c`: commit.lua's arguments, its A): `events`
-- (the step's closing events, JSON) appended first, then the assistant message, the run's
-- `next_phase` and tool calls (`calls_json`) and the step's usage. `rk` is the run record,
-- `history` the conversation's, `claim` the step's claim key, `hour` and `totals` the usage
-- buckets (walrus_tasks/usage.py). Returns 'ok', or the refusal, 'fenced' or 'stale', having
-- written nothing.
local function commit_step(c, next_phase, calls_json, events, rk, history, claim, hour, totals)
  local refused = guard(c.token, c.ttl_ms, rk, c.step, 'llm')
  if refused then
    return refused
  end
  for _, event in ipairs(events) do
    emit(c.run_id, c.maxlen, event)
  end
  if c.message_json ~= '' then
    redis.call('RPUSH', history, c.message_json)
  end
  redis.call('HINCRBY', rk, 'input_tokens', c.input_tokens)
  redis.call('HINCRBY', rk, 'output_tokens', c.output_tokens)
  redis.call('HSET', rk, 'phase', next_phase, 'calls', calls_json, 'model', c.model)
  redis.call('HDEL', rk, 'attempts', 'tries', 'fallback', 'not_before')  -- per step
  redis.call('DEL', claim)
  if c.usage_field ~= '' then  -- the hour's bucket and the all-time totals
    for _, key in ipairs({hour, totals}) do
      redis.call('HINCRBY', key, c.usage_field .. 'in', c.input_tokens)
      redis.call('HINCRBY', key, c.usage_field .. 'out', c.output_tokens)
      redis.call('HINCRBY', key, c.usage_field .. 'calls', 1)
      if tonumber(c.step) == 0 then
        redis.call('HINCRBY', key, c.usage_field .. 'runs', 1)
      end
    end
    if redis.call('TTL', hour) == -1 then  -- once per bucket
      redis.call('EXPIREAT', hour, c.usage_expire_at)
    end
  end
  return 'ok'
end

-- End run `e.run_id` (finish.lua's arguments, its A), which holds the lease (the caller
-- checked): its terminal status and `end` event, its figures, its parent told, and the
-- conversation's next run started or the lease released. `rk` is the run record, `metrics` the
-- figures' hash of its bucket, `subs` the index of the subscriptions to the agent's `done`
-- source (nil: not counted here). Returns finish.lua's reply.
local function end_run(e, rk, metrics, subs)
  redis.call('HSET', rk, 'status', e.status, 'finished_at', e.now_ms, 'phase', 'done')
  if e.error ~= '' then
    redis.call('HSET', rk, 'error', e.error)
  end
  emit(e.run_id, e.maxlen, e.end_json)
  redis.call('EXPIRE', K.run_events(e.run_id), e.events_ttl)
  redis.call('EXPIRE', rk, e.events_ttl)
  redis.call('DEL', unpack(K.run_ended(e.run_id)))
  redis.call('SREM', K.runs_active(e.run_id), e.run_id)
  if redis.call('HEXISTS', rk, 'rollback') == 1 then
    remove_run_messages(K.conv_history(e.cid), K.conv_epoch(e.cid), e.run_id, rk)
  end
  if redis.call('HEXISTS', rk, 'webhook') == 1 then
    redis.call('ZADD', K.webhooks(e.run_id), tonumber(e.now_ms) + tonumber(e.grace_ms), e.run_id)
  end
  if e.count_field ~= '' then  -- pcall: a bad figure never leaves a run unended
    redis.pcall('HINCRBY', metrics, e.count_field, 1)
    if e.seconds ~= '' then
      redis.pcall('HINCRBYFLOAT', metrics, e.seconds_field, e.seconds)
      redis.pcall('HINCRBY', metrics, e.bucket_field, 1)
    end
    for _, inc in ipairs(e.increments) do
      redis.pcall('HINCRBY', metrics, inc.field, inc.by)
    end
  end
  local next_run = start_next(e.cid, e.token, tonumber(e.now_ms), tonumber(e.ttl_ms), e.maxlen)
  if next_run then  -- its first step waits in the queue: the lease gets the dispatch grace
    redis.call('PSETEX', KEYS[1], e.grace_ms, e.token)
    redis.call('ZADD', K.leases(e.cid), tonumber(e.now_ms) + tonumber(e.grace_ms), e.cid)
  end
  local parent_wake, tell = false, false
  local parent = redis.call('HMGET', rk, 'parent_run', 'parent_call')
  if parent[1] and parent[2] then
    if e.one_redis == '1' then
      parent_wake = child_ended(parent[1], parent[2], e.run_id, e.result_json,
        tonumber(e.now_ms), tonumber(e.grace_ms))
    else  -- kept with the run until the parent has heard (the reaper tells it again if not)
      redis.call('HSET', rk, 'parent_result', e.result_json)
      redis.call('ZADD', K.parents(e.run_id), tonumber(e.now_ms) + tonumber(e.grace_ms), e.run_id)
      tell = {parent[1], parent[2]}
    end
  end
  local n = -1
  if subs then
    n = redis.call('SCARD', subs)
  end
  return {'ended', next_run, parent_wake, n, tell}
end
