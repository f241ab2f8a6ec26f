-- On a cluster, the dispatcher's half of acquire.lua, in its own slot: a drain started its own
-- conversation directly, so the dispatcher holds it ready no more (lib/fair.lua unmark).
-- KEYS: the dispatcher's tenants (its slot)
-- A: cid, agent, tenant
unmark(A.cid, A.agent, A.tenant)
return 1
