-- An Agent Protocol thread bound to the assistant of its first run, in the round trip that
-- submits the run (gateway/thread_records.py, record_along): sent before submit.lua, whose
-- guard then finds the thread bound. It binds only a thread that is there with no assistant
-- yet and whose metadata is still A.seen (what the caller built A.metadata from); any other
-- thread is left as it is, and the guard refuses the submit unless it is A.agent's already.
-- The same writes as thread_operations.bind_thread, made conditional (a compare and set).
-- KEYS: thread
-- A: agent, seen (the thread's metadata the binding was built on; '{}' for none), metadata
--    (the thread's metadata once bound: A.seen with graph_id and assistant_id)
-- Returns 'bound' (to A.agent: now, or before), 'missing', 'other' (another assistant's) or
-- 'changed' (its metadata is not A.seen).
local thread = redis.call('HMGET', KEYS[1], 'thread_id', 'agent', 'metadata')
if not thread[1] then
  return 'missing'
end
if thread[2] and thread[2] ~= '' then
  if thread[2] == A.agent then
    return 'bound'
  end
  return 'other'
end
local metadata = thread[3]
if not metadata or metadata == '' then
  metadata = '{}'
end
if metadata ~= A.seen then
  return 'changed'
end
redis.call('HSET', KEYS[1], 'agent', A.agent, 'metadata', A.metadata)
return 'bound'
