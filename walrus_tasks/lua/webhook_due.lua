-- The reaper's sweep of the webhook outbox: a webhook still there past its hold lost its
-- delivery (the worker that ended the run died before sending it, or died mid-delivery). Each
-- gets a new chain (so a late delivery of the old one stays silent) and a new hold; the caller
-- sends it again.
-- KEYS: webhooks (the outbox)
-- ARGV: now_ms, hold_ms, limit
-- Returns {run_id, chain, run_id, chain, ...}.
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, run_id in ipairs(due) do
  if redis.call('EXISTS', K.run(run_id)) == 0 then
    redis.call('ZREM', KEYS[1], run_id)  -- its record expired: nothing left to send
  else
    table.insert(out, run_id)
    table.insert(out, redis.call('HINCRBY', K.run(run_id), 'webhook_chain', 1))
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), run_id)
  end
end
return out
