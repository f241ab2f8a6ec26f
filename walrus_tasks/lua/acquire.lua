-- Drain: take the free lease of a conversation and start its next queued run.
-- KEYS: lease, fence
-- ARGV: cid, now_ms, ttl_ms, maxlen
-- Returns false when the lease is held (its holder drains); {'', false, run_id} when the lease
-- expired under a run that has not ended (an orphan: take it over, never start past it);
-- else {token, run_id or false}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local orphan = live_active(ARGV[1])
if orphan then
  return {'', false, orphan}
end
if redis.call('LLEN', K.conv_inbox(ARGV[1])) == 0 then
  return {'', false}
end
local token = next_token()
local run_id = start_next(ARGV[1], token, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
return {token, run_id}
