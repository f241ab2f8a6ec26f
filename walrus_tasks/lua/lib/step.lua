-- The claim of an LLM step with the reads the step needs first: begin_step.lua's, and
-- acquire.lua's for the step 0 of the run a drain starts in its own conversation (one round
-- trip fewer before a new run's first token). Needs lib/fence.lua's KEYS convention.

local function set_of(words)
  local set = {}
  for word in string.gmatch(words, '%S+') do
    set[word] = true
  end
  return set
end

-- True when the run's stream has output of the current step after its last boundary event:
-- read newest first, a few entries at a time (the last event is nearly always one or other).
local function output_since_boundary(run_id, output, boundary)
  local stream, before = K.run_events(run_id), '+'
  while true do
    local entries = redis.call('XREVRANGE', stream, before, '-', 'COUNT', 16)
    if #entries == 0 then
      return false
    end
    for _, entry in ipairs(entries) do
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'data' then
          local kind = cjson.decode(fields[i + 1])['type']
          if output[kind] then
            return true
          elseif boundary[kind] then
            return false
          end
        end
      end
    end
    before = '(' .. entries[#entries][1]
  end
end

-- Claim LLM step `s.step` of run `s.run_id` (record `rk`, claim key `claim_key`) for delivery
-- `s.claim_id` under lease token `s.token`, and read what the step needs. `s` holds
-- begin_step.lua's arguments (its A); `history` and `epoch` are the conversation's keys,
-- `memory` the agent's memory (nil: not asked here). Returns begin_step.lua's reply.
local function begin_llm_step(s, rk, claim_key, history, epoch, memory)
  local state = claim(s.token, s.ttl_ms, rk, s.step, 'llm', claim_key, s.claim_id, '', '',
    s.task_id)
  if state ~= 'ok' then
    return {state}
  end
  if output_since_boundary(s.run_id, set_of(s.output_types), set_of(s.boundary_types)) then
    emit(s.run_id, s.maxlen, s.restart_json)
  end
  redis.call('PEXPIRE', KEYS[1], s.ttl_ms)
  redis.call('ZADD', K.leases(s.cid), tonumber(s.now_ms) + tonumber(s.ttl_ms), s.cid)
  if s.agent_config_json ~= '' then
    redis.call('HSETNX', rk, 'agent_config', s.agent_config_json)
  end
  local record = redis.call('HGETALL', rk)  -- with the previous attempt's step_span
  if s.step_span ~= '' then
    redis.call('HSET', rk, 'step_span', s.step_span)
  end
  local n = redis.call('LLEN', history)
  local at = redis.call('GET', epoch) or ''
  local held = tonumber(s.held_len)
  local from = 0
  if held > 0 and n >= held and at == s.held_epoch
      and redis.sha1hex(redis.call('LINDEX', history, 0)) == s.held_first_sha
      and redis.sha1hex(redis.call('LINDEX', history, held - 1)) == s.held_last_sha then
    from = held
  end
  return {
    'ok',
    record,
    redis.call('EXISTS', K.run_cancel(s.run_id)),
    redis.call('LLEN', K.run_steer(s.run_id)),
    memory and redis.call('EXISTS', memory) or 0,
    n,
    from,
    redis.call('LRANGE', history, from, -1),
    at,
  }
end

-- The step 0 of the next run that end_run (lib/outcome.lua) started, claimed for delivery
-- `e.claim_id` as begin_step.lua claims it, by finish.lua and commit_final.lua (`e`: their A,
-- with begin_step.lua's claim arguments): the task that ended the run runs that step in place
-- (worker/in_place.py), one round trip sooner. `ended` is end_run's reply; `history`, `epoch`
-- and `memory` are the conversation's and its agent's keys. Returns `ended` with
-- begin_step.lua's reply as its sixth element (false: nothing started, or no claim asked).
local function claim_next(e, ended, history, epoch, memory)
  local begun = false
  local next_run = ended[1] == 'ended' and ended[2]
  if next_run and e.claim_id ~= '' then
    local step = setmetatable({step = '0', run_id = next_run, task_id = ''}, {__index = e})
    begun = begin_llm_step(step, K.run(next_run), K.run_claim(next_run), history, epoch, memory)
  end
  ended[6] = begun
  return ended
end
