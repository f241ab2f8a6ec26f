-- Free one LLM call's capacity, and wake the step that has waited longest for a slot of one
-- of its concurrency limits: it is due now, not when its countdown ends. The woken step gets
-- a new message id (`step_task`), so the message of its countdown, when it comes, is stale
-- (begin.lua): the step runs once. That move is the run state machine's (lib/runs.lua
-- expect_step_task). Charges the tokens the estimate missed to the token limits.
-- KEYS: none (the limits' keys come from K, by name)
-- A: now_ms, holder, task_id (of a woken step's message), extra_tokens, limits (each:
--    name, max_concurrency, tokens_per_minute)
-- Returns false, or the step to send now: {agent, sender, run_id, lease token, step}.
local now, holder, task_id = tonumber(A.now_ms), A.holder, A.task_id
local extra = tonumber(A.extra_tokens)
local woken = false
for _, l in ipairs(A.limits) do
  local name, conc, tpm = l.name, tonumber(l.max_concurrency), tonumber(l.tokens_per_minute)
  if tpm > 0 and extra > 0 then
    -- Pushes the limit's arrival time on: later calls wait for the tokens really used.
    redis.call('INCRBYFLOAT', K.limit_tokens(name), extra * 60000 / tpm)
  end
  if conc > 0 and redis.call('ZREM', K.limit_slots(name), holder) == 1 then
    local waiting = K.limit_waiting(name)
    redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)  -- entries of steps long gone
    while not woken do
      local first = redis.call('ZRANGE', waiting, 0, 0)[1]
      if not first then
        break
      end
      redis.call('ZREM', waiting, first)
      local r = redis.call('HMGET', K.run(first), 'status', 'phase', 'step', 'agent', 'sender')
      local token = r[4] and redis.call('GET', K.conv_lease(K.cid(r[4], r[5])))
      -- Only a step put back in the queue (its claim free) and still holding its lease.
      if r[1] == 'running' and r[2] == 'llm' and token
          and redis.call('EXISTS', K.run_claim(first)) == 0 then
        expect_step_task(K.run(first), r[3], task_id)
        woken = {r[4], r[5], first, token, r[3]}
      end
    end
  end
end
return woken
