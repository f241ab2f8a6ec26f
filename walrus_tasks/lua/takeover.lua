-- Recovery: take the lease of a conversation whose holder stopped renewing it.
-- KEYS: lease, fence
-- A: cid, now_ms, ttl_ms, maxlen
-- Returns false if the lease is alive (or the run only waits), else
-- {token, active run id or false, started run or false}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local now = tonumber(A.now_ms)
local active = redis.call('GET', K.conv_active(A.cid))
local status = active and redis.call('HGET', K.run(active), 'status')
local timed_out = false
if status == 'waiting' then
  -- A waiting run holds no worker: its lease lapsing is no failure. Before the first deadline,
  -- give the lease back its life until then; past it, time those waits out and resume the run.
  local waits = redis.call('HGETALL', K.run_waits(active))
  local fence = redis.call('GET', KEYS[2])
  for i = 1, #waits, 2 do
    local w = cjson.decode(waits[i + 1])
    if tonumber(w.deadline) <= now then
      wake_call(active, A.cid, waits[i],
        cjson.encode({wait = w.kind, kind = 'timeout', content = ''}), now, 1, KEYS[1], KEYS[2])
      timed_out = true
    end
  end
  if not timed_out then
    local until_ms = latest_deadline(active)
    redis.call('PSETEX', KEYS[1], math.max(until_ms - now, 1), fence)
    redis.call('ZADD', K.leases(A.cid), until_ms, A.cid)
    return false
  end
  redis.call('DEL', KEYS[1])
  status = 'running'
end
local token = next_token()
if status == 'running' then
  redis.call('PSETEX', KEYS[1], A.ttl_ms, token)
  redis.call('ZADD', K.leases(A.cid), now + tonumber(A.ttl_ms), A.cid)
  redis.call('DEL', K.run_claim(active))
  expect_step_task(K.run(active))  -- the resumed step is sent anew
  if not timed_out then
    redis.call('HINCRBY', K.run(active), 'recoveries', 1)
  end
  return {token, active, false}
end
local started = start_next(A.cid, token, now, tonumber(A.ttl_ms), A.maxlen)
return {token, false, started}
