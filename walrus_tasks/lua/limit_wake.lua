-- On a cluster, the last step of a release that freed a slot, in the run's slot: wake the
-- step limit_next.lua took off a waiting set (lib/runs.lua wake_deferred).
-- KEYS: the run
-- A: run_id, task_id (of the woken step's message)
-- Returns {agent, sender, run_id, lease token, step}, or false.
return wake_deferred(A.run_id, A.task_id)
