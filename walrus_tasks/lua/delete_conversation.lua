-- delete_conversation: forget a conversation that no run uses, atomically with the busy check.
-- KEYS: lease, fence, active, inbox, the conversation index, then the data keys to delete
--       (history, archive, read set, seq, cwd)
-- A: cid
-- Returns 'busy' (a run is active, waiting or queued, or a worker still holds the lease),
-- 'missing' (nothing to delete) or 'deleted'. The fence is kept on purpose: it must only ever
-- grow, so that the token of a worker from before the delete can never match again.
if redis.call('EXISTS', KEYS[1], KEYS[3]) > 0 or redis.call('LLEN', KEYS[4]) > 0 then
  return 'busy'
end
local indexed = redis.call('ZREM', KEYS[5], A.cid)
local deleted = redis.call('DEL', unpack(KEYS, 6))
if indexed == 0 and deleted == 0 then
  return 'missing'
end
return 'deleted'
