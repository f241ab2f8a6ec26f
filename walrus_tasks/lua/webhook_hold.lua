-- Hold a run's webhook for one delivery attempt: the reaper sends it again only after
-- `until_ms`. Only the current chain of deliveries may hold it: the reaper's re-send starts a
-- new chain, and a delivery of an older one (a message that was late, not lost) finds itself
-- stale and sends nothing.
-- KEYS: run, webhooks (the outbox)
-- A: run_id, chain, until_ms
-- Returns 'ok', 'done' (sent or given up: no longer in the outbox) or 'stale'.
if not redis.call('ZSCORE', KEYS[2], A.run_id) then
  return 'done'
end
if (redis.call('HGET', KEYS[1], 'webhook_chain') or '0') ~= A.chain then
  return 'stale'
end
redis.call('ZADD', KEYS[2], A.until_ms, A.run_id)
return 'ok'
