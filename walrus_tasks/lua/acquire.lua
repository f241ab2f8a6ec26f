-- Drain: start the conversation the fair dispatcher picks (lib/fair.lua), whichever one this
-- drain message was sent for, taking its free lease; when the dispatcher has nothing ready (or
-- is off), this drain's own conversation, as long as its lease is free.
-- When the run started is the own conversation's and `claim_id` is not '', its step 0 is
-- claimed in the same script, as begin_step.lua claims it (lib/step.lua): the drain runs that
-- step in place, one round trip sooner.
-- KEYS: lease, fence (of the drain's own conversation); with a claim_id also its history, its
--       epoch and the agent's memory (one Redis only: on a cluster the step is begun apart)
-- A: cid (own), now_ms, ttl_ms, maxlen, fair ('1' | '0'), weights_json ({tenant: weight}),
--    default_weight, priorities_json ({agent: priority}), start_own ('0': only look for an
--    orphan), one_redis ('1': the dispatcher's keys are in reach, one Redis; '0': on a
--    cluster, where runs.acquire picks in steps of its own and fair is '0'); for the claim of
--    step 0 ('' = no claim): claim_id, and begin_step.lua's agent_config_json, held_len,
--    held_first_sha, held_last_sha, held_epoch, restart_json, output_types, boundary_types,
--    step_span
-- Returns false when it started nothing and found no orphan; else {token or '', run_id or
-- false, cid started or false, orphan or false, unmark or false, begun or false}. An orphan is
-- the own conversation's active run whose lease expired (its worker died): the caller takes it
-- over; the own conversation's next message is never started past it. `unmark` is {agent,
-- tenant} of an own conversation started here that the dispatcher may still hold ready, when
-- one_redis is '0': the caller takes it off there (fair_unmark.lua). `begun` is begin_step.lua's
-- reply for the step 0 claimed here.
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
    return {'', false, false, orphan, false, false}
  end
  return false
end
local token = next_token(K.conv_fence(cid))
local run_id = start_next(cid, token, now, ttl, A.maxlen)
local begun = false
if run_id and cid == own and A.claim_id ~= '' then
  -- begin_step.lua's arguments: these four, the rest as given
  local step = setmetatable({token = token, step = '0', run_id = run_id, task_id = ''},
    {__index = A})
  begun = begin_llm_step(step, K.run(run_id), K.run_claim(run_id), KEYS[3], KEYS[4], KEYS[5])
end
return {token, run_id, cid, orphan, unmarked, begun}
