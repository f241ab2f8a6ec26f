-- Record the run a cron fire started, unless the entry was deleted meanwhile.
-- KEYS: crons (hash)
-- A: id, run_id
local raw = redis.call('HGET', KEYS[1], A.id)
if not raw then
  return false
end
local e = cjson.decode(raw)
e.last_run_id = A.run_id
redis.call('HSET', KEYS[1], A.id, cjson.encode(e))
return true
