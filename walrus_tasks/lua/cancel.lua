-- Cancel a run: set its cancel flag and end every wait it has (a question, an approval, its
-- delegated children), and the same for each foreground child of a waiting `delegate` call,
-- in one step: no reply or child can slip in between the flag and the wakes.
-- KEYS: the run
-- A: cancel flag TTL (s), now_ms, grace_ms (the lease a woken call is dispatched under)
-- Returns a flat list, 7 fields per woken call to dispatch: run_id, agent, sender, token,
-- step, index, call_id.
local ttl, now_ms, grace_ms = A.cancel_ttl, tonumber(A.now_ms), tonumber(A.grace_ms)
local out = {}

local function cancel(rk)
  local run_id = redis.call('HGET', rk, 'run_id')
  if not run_id then
    return
  end
  redis.call('SET', K.run_cancel(run_id), '1', 'EX', ttl)
  local waits = redis.call('HGETALL', K.run_waits(run_id))
  for i = 2, #waits, 2 do
    local data = cjson.decode(waits[i]).data
    if type(data) == 'table' and type(data.children) == 'table' then
      for _, child in ipairs(data.children) do
        cancel(K.run(child))
      end
    end
  end
  local record = redis.call('HMGET', rk, 'agent', 'sender')
  local cid = K.cid(record[1], record[2])
  for i = 1, #waits, 2 do
    local wake = cjson.encode({wait = cjson.decode(waits[i + 1]).kind, kind = 'cancelled',
      content = ''})
    local woken = wake_call(run_id, cid, waits[i], wake, now_ms, grace_ms, K.conv_lease(cid),
      K.conv_fence(cid))
    if woken then
      for _, v in ipairs({run_id, record[1], record[2], woken[1], woken[2], woken[3], woken[4]}) do
        table.insert(out, v)
      end
    end
  end
end

cancel(KEYS[1])
return out
