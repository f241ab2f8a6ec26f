-- The reaper's sweep of the webhook outbox: a webhook still there past its hold lost its
-- delivery (the worker that ended the run died before sending it, or died mid-delivery). Each
-- gets a new chain (so a late delivery of the old one stays silent) and a new hold; the caller
-- sends it again.
-- KEYS: webhooks (the outbox)
-- A: now_ms, hold_ms, limit
-- Returns {run_id, chain, run_id, chain, ...}.
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', A.now_ms, 'LIMIT', 0, A.limit)
for _, run_id in ipairs(due) do
  if redis.call('EXISTS', K.run(run_id)) == 0 then
    redis.call('ZREM', KEYS[1], run_id)  -- its record expired: nothing left to send
  else
    table.insert(out, run_id)
    table.insert(out, redis.call('HINCRBY', K.run(run_id), 'webhook_chain', 1))
    redis.call('ZADD', KEYS[1], tonumber(A.now_ms) + tonumber(A.hold_ms), run_id)
  end
end
return out
