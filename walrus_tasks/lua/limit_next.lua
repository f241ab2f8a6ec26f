-- On a cluster, the second step of a release that freed slots (limit_release.lua), in the
-- limits' slot: take the run that has waited longest for a slot of the first of `names` that
-- has one waiting. The caller then wakes it in its own slot (limit_wake.lua), or, when it can
-- no longer be woken, takes the next.
-- KEYS: the limits' seen set (their slot)
-- A: now_ms, names (the limits whose slot was freed, in order)
-- Returns {name, run_id} or false.
for _, name in ipairs(A.names) do
  local first = next_waiting(name, tonumber(A.now_ms))
  if first then
    return {name, first}
  end
end
return false
