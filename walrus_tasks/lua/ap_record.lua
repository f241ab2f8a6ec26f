-- What the Agent Protocol was asked of run A.run_id, recorded in the round trip that submits it
-- (gateway/thread_records.py, record_along): sent right after submit.lua on one Redis, it
-- writes only if that submit wrote the run, so a refused submit (`busy`) leaves no record.
-- The same writes as thread_records._queue_thread_run, made conditional and idempotent (a
-- run already recorded is not listed twice).
-- KEYS: run, ap_run, thread_runs, thread
-- A: run_id, sender (the thread's conversation's: the run must be of it), now_ms, fields_json
--    ({field: value} of the Agent Protocol's record)
-- Returns the run's record (field, value, ...), or false when there is no such run of the
-- thread's conversation (nothing written).
if redis.call('HGET', KEYS[1], 'sender') ~= A.sender then
  return false
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  for field, value in pairs(cjson.decode(A.fields_json)) do
    redis.call('HSET', KEYS[2], field, value)
  end
  redis.call('RPUSH', KEYS[3], A.run_id)
end
redis.call('HSET', KEYS[4], 'updated_at', A.now_ms)
return redis.call('HGETALL', KEYS[1])
