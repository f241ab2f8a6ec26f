-- Recovery: take the lease of a conversation whose holder stopped renewing it.
-- KEYS: lease, fence
-- ARGV: cid, now_ms, ttl_ms, maxlen
-- Returns false if the lease is alive, else {token, active run id or false, started run or false}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local token = tostring(redis.call('INCR', KEYS[2]))
local active = redis.call('GET', conv_key(ARGV[1], 'active'))
if active and redis.call('HGET', run_key(active), 'status') == 'running' then
  redis.call('PSETEX', KEYS[1], ARGV[3], token)
  redis.call('ZADD', PREFIX .. 'leases', tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
  redis.call('DEL', run_key(active) .. ':claim')
  redis.call('HINCRBY', run_key(active), 'recoveries', 1)
  return {token, active, false}
end
local started = start_next(ARGV[1], token, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
return {token, false, started}
