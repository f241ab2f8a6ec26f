-- Record the children a `delegate` tool call submits, once: a redelivered call gets the ids its
-- first delivery chose. A foreground call also enters each child in its children hash (''
-- until the child ends: finish.lua records its result there and wakes the call with the last).
-- KEYS: the call's spawned marker, its children hash
-- A: ids_json (the run ids this delivery chose), foreground ('1' | '0'), ttl_s
-- Returns the ids that hold: this delivery's, or the first delivery's.
local ids = cjson.decode(A.ids_json)
if not redis.call('SET', KEYS[1], A.ids_json, 'NX', 'EX', A.ttl_s) then
  ids = cjson.decode(redis.call('GET', KEYS[1]) or '[]')
end
if A.foreground == '1' then
  for _, run_id in ipairs(ids) do
    redis.call('HSETNX', KEYS[2], run_id, '')
  end
  redis.call('EXPIRE', KEYS[2], A.ttl_s)
end
return ids
