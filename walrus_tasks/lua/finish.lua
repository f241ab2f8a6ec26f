-- End a run (terminal status + the `end` event) and start the conversation's next run, or
-- release the lease, in one atomic step.
-- KEYS: lease, fence, run
-- ARGV: token, ttl_ms, run_id, cid, status, error, end_json, now_ms, maxlen, events_ttl
-- Returns {'ended', next_run_id or false} or {'fenced'} / {'stale'}.
if not holds(ARGV[1], ARGV[2]) then
  return {'fenced'}
end
local status = redis.call('HGET', KEYS[3], 'status')
if status ~= 'running' then
  return {'stale'}
end
redis.call('HSET', KEYS[3], 'status', ARGV[5], 'finished_at', ARGV[8], 'phase', 'done')
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[3], 'error', ARGV[6])
end
emit(ARGV[3], ARGV[9], ARGV[7])
local rk = run_key(ARGV[3])
redis.call('EXPIRE', rk .. ':events', ARGV[10])
redis.call('EXPIRE', rk, ARGV[10])
redis.call('DEL', rk .. ':cancel', rk .. ':claim', rk .. ':results')
redis.call('SREM', PREFIX .. 'runs:active', ARGV[3])
local next_run = start_next(ARGV[4], ARGV[1], tonumber(ARGV[8]), tonumber(ARGV[2]), ARGV[9])
return {'ended', next_run}
