-- On a cluster, the second step of a delegated child's end (finish.lua put it in its bucket's
-- `parents` outbox): record its result with the parent's delegate call and wake the call when
-- it was the last child to end (lib/runs.lua child_ended), in the parent's slot. Told again by
-- the reaper when its caller died first: idempotent.
-- KEYS: the parent run (its slot)
-- A: parent_run, call_id, run_id (the child), result_json, now_ms, grace_ms
-- Returns the parent wake (finish.lua's) or false.
return child_ended(A.parent_run, A.call_id, A.run_id, A.result_json, tonumber(A.now_ms),
  tonumber(A.grace_ms))
