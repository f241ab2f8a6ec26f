-- A conversation's history as one JSON array: one reply for the caller to read and one parse,
-- where the list itself is a reply element per message (on redis-py's asyncio client, a read
-- each; docs/benchmarks.md, issue 25, eleventh round). Its messages are JSON already.
-- KEYS: history
-- Returns the array's text ('[]' for no history).
return '[' .. table.concat(redis.call('LRANGE', KEYS[1], 0, -1), ',') .. ']'
