-- submit(): record the run as queued and append it to the conversation inbox, atomically; a
-- conversation that can start at once is marked ready in the fair dispatcher (lib/fair.lua).
-- Idempotent on run_id: a run that exists already is not submitted again.
-- Returns {'ok', interrupted run or false, whether the conversation was idle (a drain must
-- start it, pushed here when given; a busy one's next message is started by finish.lua's
-- start_next as its run ends, and the reaper re-drains an inbox left waiting)},
-- {'exists', false}, {'other', false} (the run id was taken by another message) or
-- {'busy', active}.
-- {'guarded', false}: a guard was given (KEYS[6], guard_field, guard_value) and the hash field
-- did not hold the value (nothing written): the Agent Protocol's create sends a run into its
-- thread's conversation only while the thread is there and bound to the run's assistant.
-- KEYS: lease, fence, inbox, run, active, and the guard's hash when guard_field is not ""
-- A: run_id, agent, sender, content, on_busy, now_ms, cid, meta_json ({field: value}, with
--    at least `tenant`), queued ('1': `interrupt` and `rollback` also cancel every run still
--    waiting in the inbox, as the Agent Protocol's strategies do; '0': those still run),
--    one_redis ('1': mark the conversation ready here, one Redis; '0': on a cluster the
--    caller marks it in the dispatcher's own slot, fair_mark.lua), task_queue, task_message,
--    task_channel, task_event (the drain's Celery message and its `task-sent` event, pushed
--    here when the conversation was idle: walrus_tasks/task_push.py; "" when the caller sends
--    the drain itself), guard_field, guard_value ("": no guard)
-- on_busy `rollback` is `interrupt` that also rolls the interrupted run back (rollback_run),
-- in this same step: its messages leave history before this message's run can start. A queued
-- run so cancelled ends `cancelled` at its first step (begin_step.lua reads the flag).
if A.guard_field ~= '' and redis.call('HGET', KEYS[6], A.guard_field) ~= A.guard_value then
  return {'guarded', false}
end
local earlier = redis.call('HGET', KEYS[4], 'content')
if earlier then  -- submitted before (a retry): the same message, or a reused run id
  return {earlier == A.content and 'exists' or 'other', false}
end
local busy = redis.call('EXISTS', KEYS[1]) == 1 or redis.call('LLEN', KEYS[3]) > 0
  or live_active(A.cid) ~= false
if A.on_busy == 'reject' and busy then
  return {'busy', redis.call('GET', KEYS[5]) or false}
end
local interrupted = false
if A.on_busy == 'interrupt' or A.on_busy == 'rollback' then
  interrupted = redis.call('GET', KEYS[5])
  if interrupted and A.on_busy == 'rollback' then
    rollback_run(K.run(interrupted), K.conv_history(A.cid), K.conv_epoch(A.cid), interrupted)
  end
  if interrupted then
    redis.call('SET', K.run_cancel(interrupted), '1', 'EX', 86400)
  end
  if A.queued == '1' then
    for _, queued in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
      if A.on_busy == 'rollback' then
        rollback_run(K.run(queued), K.conv_history(A.cid), K.conv_epoch(A.cid), queued)
      end
      redis.call('SET', K.run_cancel(queued), '1', 'EX', 86400)
    end
  end
end
local seq = redis.call('INCR', K.conv_seq(A.cid))
redis.call('HSET', KEYS[4], 'run_id', A.run_id, 'agent', A.agent, 'sender', A.sender,
  'content', A.content, 'status', 'queued', 'created_at', A.now_ms, 'seq', seq)
local meta = cjson.decode(A.meta_json)
if meta.cwd then  -- `cwd` on send: the conversation's working directory from now on
  redis.call('SET', K.conv_cwd(A.cid), meta.cwd)
else  -- the run works where its conversation works
  meta.cwd = redis.call('GET', K.conv_cwd(A.cid)) or nil
end
for field, value in pairs(meta) do
  redis.call('HSET', KEYS[4], field, value)
end
redis.call('RPUSH', KEYS[3], A.run_id)
if not busy and A.one_redis == '1' then
  mark_ready(A.cid, A.agent, meta.tenant or A.sender, tonumber(A.now_ms))
end
if not busy and A.task_message ~= '' then
  redis.call('LPUSH', A.task_queue, A.task_message)
  if A.task_channel ~= '' then
    redis.call('PUBLISH', A.task_channel, A.task_event)
  end
end
redis.call('ZADD', K.inboxes(A.cid), 'NX', A.now_ms, A.cid)
redis.call('ZADD', K.conversations(A.cid), A.now_ms, A.cid)
redis.call('ZADD', K.runs(A.run_id), A.now_ms, A.run_id)  -- the index of GET /v1/runs, capped
redis.call('ZREMRANGEBYRANK', K.runs(A.run_id), 0, -K.RUNS_MAXLEN - 1)
return {'ok', interrupted, not busy}
