-- Keep the lease (and the run's execution claim) alive while work is in progress.
-- KEYS: lease, fence, claim
-- A: token, ttl_ms, now_ms, cid, claim_id
if not holds(A.token, A.ttl_ms) then
  return 0
end
redis.call('PEXPIRE', KEYS[1], A.ttl_ms)
redis.call('ZADD', K.leases(A.cid), tonumber(A.now_ms) + tonumber(A.ttl_ms), A.cid)
if A.claim_id ~= '' and redis.call('GET', KEYS[3]) == A.claim_id then
  redis.call('PEXPIRE', KEYS[3], A.ttl_ms)
end
return 1
