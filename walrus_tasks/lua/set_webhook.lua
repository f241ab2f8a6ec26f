-- Give a run that has not ended the URL its end is reported to (the Agent Protocol's resume with
-- a `webhook`): finish.lua puts a run with a `webhook` in the webhook outbox as it ends.
-- KEYS: run
-- A: url
-- Returns 1 when set; 0 when the run is missing or has ended (its end is decided: a URL set now
-- would never be sent).
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' and status ~= 'waiting' then
  return 0
end
redis.call('HSET', KEYS[1], 'webhook', A.url)
return 1
