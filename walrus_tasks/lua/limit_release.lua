-- Free one LLM call's capacity, and wake the step that has waited longest for a slot of one
-- of its concurrency limits: it is due now, not when its countdown ends. The woken step gets
-- a new message id (`step_task`), so the message of its countdown, when it comes, is stale
-- (begin.lua): the step runs once. That move is the run state machine's (lib/runs.lua
-- expect_step_task). Charges the tokens the estimate missed to the token limits.
-- KEYS: the limits' seen set (their slot; the limits' keys come from K, by name)
-- A: now_ms, holder, task_id (of a woken step's message), extra_tokens, one_redis ('1': one
--    Redis, the runs' keys in reach; '0': on a cluster the caller wakes in steps of its own,
--    limit_next.lua then limit_wake.lua), limits (each: name, max_concurrency,
--    tokens_per_minute)
-- Returns false, or the step to send now: {agent, sender, run_id, lease token, step}; with
-- one_redis '0', the names of the limits a slot of which was freed.
local now, holder, task_id = tonumber(A.now_ms), A.holder, A.task_id
local extra = tonumber(A.extra_tokens)
local woken, freed = false, {}
for _, l in ipairs(A.limits) do
  local name, conc, tpm = l.name, tonumber(l.max_concurrency), tonumber(l.tokens_per_minute)
  if tpm > 0 and extra > 0 then
    -- Pushes the limit's arrival time on: later calls wait for the tokens really used.
    redis.call('INCRBYFLOAT', K.limit_tokens(name), extra * 60000 / tpm)
  end
  if conc > 0 and redis.call('ZREM', K.limit_slots(name), holder) == 1 then
    freed[#freed + 1] = name
    while A.one_redis == '1' and not woken do
      local first = next_waiting(name, now)
      if not first then
        break
      end
      woken = wake_deferred(first, task_id)
    end
  end
end
if A.one_redis == '0' then
  return freed
end
return woken
