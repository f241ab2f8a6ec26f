-- Claim an LLM step of a run (as begin.lua does) and, in the same round trip, what the step
-- needs first: the lease renewed to its TTL (a queued task's dispatch grace ends here), the
-- agent config pinned on the run's first step, and the reads of the step: the run record, the
-- kill flag, queued steering, whether the agent has memories, and the history. Of the history
-- only what follows the prefix the worker already holds is returned, when that prefix is still
-- there: the conversation's epoch (bumped by every rewrite of history) is the one it was read
-- at, and its length and the SHA-1 of its first and last messages match.
-- A step claimed again after its worker was lost may have streamed output that no restart
-- voided: the restart event (given) is appended first, in this script, so before any output of
-- the new attempt (event_types.py: STEP_OUTPUT, STEP_BOUNDARY).
-- KEYS: lease, fence, run, claim, history, the conversation's epoch, and on one Redis the
--       agent's memory (on a cluster it lives in another slot: the caller asks)
-- A: token, ttl_ms, step, claim_id, now_ms, cid, run_id, agent_config_json ('' = do not
--    pin), held_len (the held history's length, 0 = none), held_first_sha and held_last_sha
--    (SHA-1 of its first and last message), held_epoch (the epoch it was read at, '' = never
--    rewritten), task_id (the step message's id, '' = the drain's step 0 in place),
--    restart_json (the restart event), maxlen (the stream's), output_types and
--    boundary_types (the STEP_OUTPUT and STEP_BOUNDARY event types, space-separated),
--    step_span ('<step>:<span id>' of this attempt's trace span, stored as the run's
--    `step_span` after the record is read; '' = tracing off)
-- Returns {state} when the claim is not 'ok' (begin.lua's states); else {'ok', record (a flat
-- field/value list), kill flag set (0 | 1), queued steering messages, memories (0 | 1; 0 when
-- not asked here),
-- history length, index of the first message returned (0 or the held length), messages,
-- epoch}.
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

local state = claim(A.token, A.ttl_ms, KEYS[3], A.step, 'llm', KEYS[4], A.claim_id, '', '',
  A.task_id)
if state ~= 'ok' then
  return {state}
end
if output_since_boundary(A.run_id, set_of(A.output_types), set_of(A.boundary_types)) then
  emit(A.run_id, A.maxlen, A.restart_json)
end
redis.call('PEXPIRE', KEYS[1], A.ttl_ms)
redis.call('ZADD', K.leases(A.cid), tonumber(A.now_ms) + tonumber(A.ttl_ms), A.cid)
if A.agent_config_json ~= '' then
  redis.call('HSETNX', KEYS[3], 'agent_config', A.agent_config_json)
end
local record = redis.call('HGETALL', KEYS[3])  -- with the previous attempt's step_span
if A.step_span ~= '' then
  redis.call('HSET', KEYS[3], 'step_span', A.step_span)
end
local n = redis.call('LLEN', KEYS[5])
local epoch = redis.call('GET', KEYS[6]) or ''
local held = tonumber(A.held_len)
local from = 0
if held > 0 and n >= held and epoch == A.held_epoch
    and redis.sha1hex(redis.call('LINDEX', KEYS[5], 0)) == A.held_first_sha
    and redis.sha1hex(redis.call('LINDEX', KEYS[5], held - 1)) == A.held_last_sha then
  from = held
end
return {
  'ok',
  record,
  redis.call('EXISTS', K.run_cancel(A.run_id)),
  redis.call('LLEN', K.run_steer(A.run_id)),
  KEYS[7] and redis.call('EXISTS', KEYS[7]) or 0,
  n,
  from,
  redis.call('LRANGE', KEYS[5], from, -1),
  epoch,
}
