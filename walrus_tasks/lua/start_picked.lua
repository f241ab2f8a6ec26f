-- On a cluster, a drain's second step (runs.acquire): start the conversation that
-- fair_pick.lua handed out, if it still can start (lease free, no live run, a message queued):
-- someone else may have started it meanwhile (its own drain, a takeover).
-- KEYS: lease, fence (of the picked conversation)
-- A: cid, now_ms, ttl_ms, maxlen
-- Returns false, or {token, run_id}.
if not startable(A.cid) then
  return false
end
local token = next_token()
return {token, start_next(A.cid, token, tonumber(A.now_ms), tonumber(A.ttl_ms), A.maxlen)}
