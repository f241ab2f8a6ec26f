-- On a cluster, a drain's first step (runs.acquire), in the dispatcher's own slot: pick the
-- conversation that is due (lib/fair.lua, without looking at it: its keys live in another
-- slot) and hold it with a claim until `claim_ms` from now. The drain starts it in a second
-- step (start_picked.lua) and drops the claim; a claim that runs out (its drain died between
-- the steps) is looked at again by the reaper (fair.claims_due).
-- KEYS: the dispatcher's tenants (its slot)
-- A: now_ms, weights_json ({tenant: weight}), default_weight, priorities_json
--    ({agent: priority}), claim_ms
-- Returns the cid picked, or false: none ready.
local now = tonumber(A.now_ms)
local cid = pick(now, cjson.decode(A.weights_json), tonumber(A.default_weight),
  cjson.decode(A.priorities_json), false)
if cid then
  redis.call('ZADD', K.FAIR_CLAIMS, now + tonumber(A.claim_ms), cid)
end
return cid
