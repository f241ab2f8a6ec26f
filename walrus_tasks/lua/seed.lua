-- Give a new conversation its prior messages (a stateless OpenAI-compatible request: the
-- client sends the whole context). Fenced on the conversation being new: no lease, nothing
-- queued or active, no history; otherwise nothing is written.
-- KEYS: lease, inbox, active, history
-- A: messages_json (a JSON array of messages)
-- Returns the number of messages written, or -1 when the conversation is not new.
for i = 1, 4 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return -1
  end
end
local messages = cjson.decode(A.messages_json)
for _, m in ipairs(messages) do
  redis.call('RPUSH', KEYS[4], cjson.encode(m))
end
return #messages
