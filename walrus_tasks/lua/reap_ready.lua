-- The reaper's look at inboxes left waiting (walrus_tasks/fair.py): mark each conversation
-- that could start (lease free, no live run, a message queued) ready in the fair dispatcher
-- again, and say which want a drain message: those the dispatcher was missing, and every one
-- of them once no drain has picked for `stale_ms` (their messages were lost, not queued behind
-- other work).
-- KEYS: none (the conversations' keys come from K)
-- A: now_ms, stale_ms, conversations (their ids)
-- Returns the conversation ids to send a drain for.
local now, stale = tonumber(A.now_ms), tonumber(A.stale_ms)
local picked_at = tonumber(redis.call('HGET', K.FAIR_CLOCK, 'picked_at') or '0')
local flowing = now - picked_at < stale
local out = {}
for _, cid in ipairs(A.conversations) do
  if startable(cid) then
    local head = redis.call('LINDEX', K.conv_inbox(cid), 0)
    local r = redis.call('HMGET', K.run(head), 'agent', 'tenant')
    local missing = false
    if r[1] and r[2] then
      missing = mark_ready(cid, r[1], r[2], now)
    end
    if missing or not flowing then
      redis.call('ZADD', K.inboxes(cid), 'XX', now, cid)
      out[#out + 1] = cid
    end
  end
end
return out
