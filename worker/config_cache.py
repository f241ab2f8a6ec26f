"""The config directory as this worker process last loaded it, and the agent a run started on.

A reload (``POST /v1/admin/reload``) bumps ``walrus:config:generation``; each process checks it
at most every ``config_poll`` seconds and re-reads the directory when it moved (a bad directory
is logged and the old config kept). A run pins its agent config when its first step starts
(``agent_config`` in the run record), so a run in flight finishes on the config it began with,
whichever worker runs its later steps.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import redis

from walrus_tasks import keys, runs
from walrus_tasks.config import AgentConfig, Config, load_config
from walrus_tasks.connection import get_redis
from walrus_tasks.errors import ConfigError, NotFound
from walrus_tasks.settings import get_settings

log = logging.getLogger("walrus.worker")

_lock = threading.Lock()
_config: Config | None = None
_generation: str | None = None
_checked_at = 0.0


def current_config(fresh: bool = False) -> Config:
    """The config directory, re-read when a reload moved the generation since we last looked.

    ``fresh``: check the generation now, even if we looked less than ``config_poll`` ago.
    """
    global _config, _generation, _checked_at
    settings = get_settings()
    with _lock:
        now = time.monotonic()
        if _config is not None and not fresh and now - _checked_at < settings.config_poll:
            return _config
        _checked_at = now
        try:
            generation: str | None = get_redis().get(keys.CONFIG_GENERATION)  # type: ignore[assignment]
        except redis.RedisError as e:
            if _config is None:
                raise
            log.warning("reload check: redis: %s", e)
            return _config
        if _config is not None and generation == _generation:
            return _config
        try:
            _config = load_config(settings.home)
            if _generation is not None or generation is not None:
                log.info("config loaded (generation %s)", generation)
        except ConfigError as e:
            if _config is None:
                raise
            log.error("config reload failed, keeping the old config: %s", e.message)
        _generation = generation
        return _config


@functools.lru_cache(maxsize=64)
def _parsed(pinned: str) -> AgentConfig:
    # Steps of one run, and runs of one config, pin the same text: parse it once per process.
    return AgentConfig.model_validate_json(pinned)


_dumped: dict[int, tuple[AgentConfig, str]] = {}


def pinned_json(agent: str) -> str:
    """The config a run of ``agent`` starting now pins (JSON).

    "" when the agent is not in this process's config (``agent_for_run`` then looks again, and
    fails clearly).
    """
    try:
        config = current_config().agent(agent)
    except NotFound:
        return ""
    held = _dumped.get(id(config))
    if held is None or held[0] is not config:
        if len(_dumped) > 256:  # a reload made new objects: the old ones are not asked for
            _dumped.clear()
        held = _dumped[id(config)] = (config, config.model_dump_json())
    return held[1]


def agent_for_run(
    r: redis.Redis, agent: str, run_id: str, record: dict[str, str] | None = None
) -> AgentConfig:
    """The agent config run ``run_id`` started on (pinned in its record on first use).

    ``record``: the run record, when the caller read it after the pin (``runs.begin_step``).
    """
    key = keys.run(run_id)
    pinned: str | None = (
        record.get("agent_config") if record is not None else r.hget(key, "agent_config")  # type: ignore[assignment]
    )
    if pinned is not None:
        return _parsed(pinned)
    try:
        config = current_config().agent(agent)
    except NotFound:
        # An agent created a moment ago (POST /v1/agents reloads before it answers) may be
        # newer than our cached config: look at the generation once more before failing.
        config = current_config(fresh=True).agent(agent)
    if not runs.pin_agent_config(r, run_id, config.model_dump_json()):
        theirs: str | None = r.hget(key, "agent_config")  # type: ignore[assignment]
        if theirs is not None:  # another step pinned it first: use theirs
            return _parsed(theirs)
    return config  # pinned now, or the run's record is gone
