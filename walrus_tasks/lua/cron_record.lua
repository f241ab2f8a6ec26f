-- Record the run a cron fire started, unless the entry was deleted meanwhile.
-- KEYS: crons (hash)
-- ARGV: id, run_id
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return false
end
local e = cjson.decode(raw)
e.last_run_id = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(e))
return true
