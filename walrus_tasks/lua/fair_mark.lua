-- On a cluster, the dispatcher's half of submit.lua and reap_ready.lua, in its own slot: mark
-- conversations that can start ready (lib/fair.lua mark_ready).
-- KEYS: the dispatcher's tenants (its slot)
-- A: now_ms, entries (each: cid, agent, tenant)
-- Returns {when a drain last picked (ms, 0 = never), the cids newly marked...}.
local now = tonumber(A.now_ms)
local out = {tonumber(redis.call('HGET', K.FAIR_CLOCK, 'picked_at') or '0')}
for _, e in ipairs(A.entries) do
  if mark_ready(e.cid, e.agent, e.tenant, now) then
    out[#out + 1] = e.cid
  end
end
return out
