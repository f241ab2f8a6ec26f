-- Pin the agent config a run works with on its first use, unless one is pinned already (by
-- another step, or begin_step.lua). A missing run record (expired) is not made anew as a stub.
-- KEYS: run
-- A: agent_config_json
-- Returns 1 when pinned now; 0 when a config was pinned first or the run is missing.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return redis.call('HSETNX', KEYS[1], 'agent_config', A.agent_config_json)
