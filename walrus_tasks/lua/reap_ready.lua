-- The reaper's look at inboxes left waiting (walrus_tasks/fair.py): mark each conversation
-- that could start (lease free, no live run, a message queued) ready in the fair dispatcher
-- again, and say which want a drain message: those the dispatcher was missing, and every one
-- of them once no drain has picked for `stale_ms` (their messages were lost, not queued behind
-- other work).
-- KEYS: a key of the conversations' bucket (their keys come from K)
-- A: now_ms, stale_ms, one_redis ('1': one Redis, the dispatcher's keys in reach; '0': a
--    cluster, the conversations of one bucket), conversations (their ids)
-- Returns the conversation ids to send a drain for; with one_redis '0', {cid, agent, tenant}
-- (flat) of each that could start: the caller marks them in the dispatcher's slot
-- (fair_mark.lua), and the rest of this script is the caller's.
local now, stale = tonumber(A.now_ms), tonumber(A.stale_ms)
local out = {}
if A.one_redis == '0' then  -- a cluster: only what this bucket knows
  for _, cid in ipairs(A.conversations) do
    if startable(cid) then
      local head = redis.call('LINDEX', K.conv_inbox(cid), 0)
      local r = redis.call('HMGET', K.run(head), 'agent', 'tenant')
      if r[1] and r[2] then
        out[#out + 1] = cid
        out[#out + 1] = r[1]
        out[#out + 1] = r[2]
      end
    end
  end
  return out
end
local picked_at = tonumber(redis.call('HGET', K.FAIR_CLOCK, 'picked_at') or '0')
local flowing = now - picked_at < stale
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
