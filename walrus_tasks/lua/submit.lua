-- submit(): record the run as queued and append it to the conversation inbox, atomically; a
-- conversation that can start at once is marked ready in the fair dispatcher (lib/fair.lua).
-- Idempotent on run_id: a run that exists already is not submitted again.
-- Returns {'ok', interrupted run or false, whether the conversation was idle (a drain must
-- start it; a busy one's next message is started by finish.lua's start_next as its run ends,
-- and the reaper re-drains an inbox left waiting)}, {'exists', false}, {'other', false} (the run
-- id was taken by another message) or {'busy', active}.
-- KEYS: lease, fence, inbox, run, active
-- ARGV: run_id, agent, sender, content, on_busy, now_ms, cid, meta_json ({field: value}, with
--       at least `tenant`)
-- on_busy `rollback` is `interrupt` that also rolls the interrupted run back (rollback_run),
-- in this same step: its messages leave history before this message's run can start.
local earlier = redis.call('HGET', KEYS[4], 'content')
if earlier then  -- submitted before (a retry): the same message, or a reused run id
  return {earlier == ARGV[4] and 'exists' or 'other', false}
end
local busy = redis.call('EXISTS', KEYS[1]) == 1 or redis.call('LLEN', KEYS[3]) > 0
  or live_active(ARGV[7]) ~= false
if ARGV[5] == 'reject' and busy then
  return {'busy', redis.call('GET', KEYS[5]) or false}
end
local interrupted = false
if ARGV[5] == 'interrupt' or ARGV[5] == 'rollback' then
  interrupted = redis.call('GET', KEYS[5])
  if interrupted and ARGV[5] == 'rollback' then
    rollback_run(K.run(interrupted), K.conv_history(ARGV[7]), K.conv_epoch(ARGV[7]), interrupted)
  end
  if interrupted then
    redis.call('SET', K.run_cancel(interrupted), '1', 'EX', 86400)
  end
end
local seq = redis.call('INCR', K.conv_seq(ARGV[7]))
redis.call('HSET', KEYS[4], 'run_id', ARGV[1], 'agent', ARGV[2], 'sender', ARGV[3],
  'content', ARGV[4], 'status', 'queued', 'created_at', ARGV[6], 'seq', seq)
local meta = cjson.decode(ARGV[8])
if meta.cwd then  -- `cwd` on send: the conversation's working directory from now on
  redis.call('SET', K.conv_cwd(ARGV[7]), meta.cwd)
else  -- the run works where its conversation works
  meta.cwd = redis.call('GET', K.conv_cwd(ARGV[7])) or nil
end
for field, value in pairs(meta) do
  redis.call('HSET', KEYS[4], field, value)
end
redis.call('RPUSH', KEYS[3], ARGV[1])
if not busy then
  mark_ready(ARGV[7], ARGV[2], meta.tenant or ARGV[3], tonumber(ARGV[6]))
end
redis.call('ZADD', K.INBOXES, 'NX', ARGV[6], ARGV[7])
redis.call('ZADD', K.CONVERSATIONS, ARGV[6], ARGV[7])
redis.call('ZADD', K.RUNS, ARGV[6], ARGV[1])  -- the index of GET /v1/runs, capped
redis.call('ZREMRANGEBYRANK', K.RUNS, 0, -K.RUNS_MAXLEN - 1)
return {'ok', interrupted, not busy}
