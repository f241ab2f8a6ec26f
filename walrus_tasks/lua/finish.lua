-- End a run (terminal status + the `end` event) and start the conversation's next run (its
-- lease held for the dispatch grace, grace_ms, while its first step is queued), or release the
-- lease, in one atomic step (lib/outcome.lua's end_run, which commit_final.lua calls too, after
-- a run's last step). A delegated run also records its result with its
-- parent, waking the parent's `delegate` call when it was the last child to finish.
-- The run is counted in the cluster-wide figures (walrus_tasks/metrics.py) in the same step.
-- KEYS: lease, fence, run, the metrics hash (of the run's bucket), and on one Redis the index
--       of the subscriptions to the agent's `done` source (on a cluster it lives in another
--       slot: the caller counts them)
-- A: token, ttl_ms, run_id, cid, status, error, end_json, now_ms, maxlen, events_ttl,
--    result_json (what the parent's delegate call reports for this run), grace_ms,
--    the figure's fields (metrics.run_figure): count_field ('' = count nothing),
--    seconds_field, seconds ('' = never started), bucket_field; increments (each: field, by),
--    added to the same hash (metrics.tenant_figure: the run and its tokens by tenant),
--    one_redis ('1': one Redis, the parent's keys are in reach; '0': on a cluster the run
--    goes into its bucket's `parents` outbox and the caller tells the parent, child_done.lua)
-- A run marked `rollback` (lib/runs.lua rollback_run) has its messages removed from history here,
-- before the next run starts. A run with a `webhook` enters the webhook outbox, held for
-- grace_ms: the caller sends it, and the reaper again if the caller died first
-- (walrus_tasks/webhooks.py).
-- With a claim_id (and begin_step.lua's claim arguments; one Redis only, the conversation's
-- history and epoch and the agent's memory then the last three KEYS) the next run's step 0 is
-- claimed in the same step (lib/step.lua claim_next): the caller runs it in place.
-- Returns {'ended', next_run_id or false, parent wake or false, subscriptions to `done` (-1:
-- not counted here), parent to tell or false, the next run's step 0 claimed (begin_step.lua's
-- reply) or false} or {'fenced'} / {'stale'}; a parent wake is {token, step, index, call_id,
-- parent agent, parent sender, parent run}; a parent to tell {parent run, parent call}.
local refused = guard(A.token, A.ttl_ms, KEYS[3])
if refused then
  return {refused}
end
local ended = end_run(A, KEYS[3], KEYS[4], KEYS[5])
return claim_next(A, ended, KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS])
