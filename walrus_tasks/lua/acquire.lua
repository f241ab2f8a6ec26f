-- Drain: start the conversation the fair dispatcher picks (lib/fair.lua), whichever one this
-- drain message was sent for, taking its free lease; when the dispatcher has nothing ready (or
-- is off), this drain's own conversation, as long as its lease is free.
-- KEYS: lease, fence (of the drain's own conversation)
-- A: cid (own), now_ms, ttl_ms, maxlen, fair ('1' | '0'), weights_json ({tenant: weight}),
--    default_weight, priorities_json ({agent: priority}), start_own ('0': only look for an
--    orphan), one_redis ('1': the dispatcher's keys are in reach, one Redis; '0': on a
--    cluster, where runs.acquire picks in steps of its own and fair is '0')
-- Returns false when it started nothing and found no orphan; else {token or '', run_id or
-- false, cid started or false, orphan or false, unmark or false}. An orphan is the own
-- conversation's active run whose lease expired (its worker died): the caller takes it over;
-- the own conversation's next message is never started past it. `unmark` is {agent, tenant}
-- of an own conversation started here that the dispatcher may still hold ready, when
-- one_redis is '0': the caller takes it off there (fair_unmark.lua).
local own, now, ttl = A.cid, tonumber(A.now_ms), tonumber(A.ttl_ms)
local orphan = false
if redis.call('EXISTS', KEYS[1]) == 0 then
  orphan = live_active(own)
end
local cid = false
if A.fair == '1' then
  cid = pick(now, cjson.decode(A.weights_json), tonumber(A.default_weight),
    cjson.decode(A.priorities_json), true)
end
local unmarked = false
if not cid and not orphan and A.start_own == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  local head = redis.call('LINDEX', K.conv_inbox(own), 0)
  if head then
    cid = own  -- not (or no longer) in the dispatcher: take it off, start it
    local r = redis.call('HMGET', K.run(head), 'agent', 'tenant')
    if r[1] and r[2] then
      if A.one_redis == '1' then
        unmark(own, r[1], r[2])
      else
        unmarked = {r[1], r[2]}
      end
    end
  end
end
if not cid then
  if orphan then
    return {'', false, false, orphan, false}
  end
  return false
end
local token = next_token(K.conv_fence(cid))
local run_id = start_next(cid, token, now, ttl, A.maxlen)
return {token, run_id, cid, orphan, unmarked}
