-- Keep the lease (and the run's execution claim) alive while work is in progress.
-- KEYS: lease, fence, claim
-- ARGV: token, ttl_ms, now_ms, cid, claim_id
if not holds(ARGV[1], ARGV[2]) then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', K.LEASES, tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) == ARGV[5] then
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return 1
