-- Roll an ended run back: remove its messages from its conversation's history (the Agent
-- Protocol's `rollback`). Fenced on the run having ended: a live run's messages stay.
-- KEYS: run, history, the conversation's epoch (bumped: history rewritten)
-- ARGV: run_id
-- Returns the number of messages removed, or -1 while the run has not ended.
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'succeeded' and status ~= 'failed' and status ~= 'cancelled' then
  return -1
end
local kept, removed = {}, 0
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local ok, m = pcall(cjson.decode, raw)
  if ok and type(m) == 'table' and m.run_id == ARGV[1] then
    removed = removed + 1
  else
    table.insert(kept, raw)
  end
end
if removed > 0 then
  redis.call('DEL', KEYS[2])
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(kept, i, math.min(i + 999, #kept)))
  end
  redis.call('HSET', KEYS[1], 'rolled_back', removed)
  redis.call('INCR', KEYS[3])
end
return removed
