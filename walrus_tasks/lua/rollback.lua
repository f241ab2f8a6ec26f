-- Roll a run back (the Agent Protocol's `rollback`): its messages leave its conversation's
-- history. A run that has not ended is only marked: lua/finish.lua removes them atomically with
-- its end, before the next run of the conversation starts and reads history.
-- KEYS: run, history, the conversation's epoch (bumped when messages go: history rewritten)
-- A: run_id
-- Returns the number of messages removed (the run had ended), or -1 (marked).
return rollback_run(KEYS[1], KEYS[2], KEYS[3], A.run_id)
