"""The config reload that every process follows.

A reload is a counter in Redis (``walrus:config:generation``): ``POST /v1/admin/reload``
validates the config directory first (a bad one is a 422 and changes nothing), then bumps the
counter; every gateway (:func:`follow_reloads`), worker and beat polls it and re-reads its config
when it moves. Runs in flight keep the agent config they started with.
"""

import asyncio
import logging

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from walrus_tasks import keys
from walrus_tasks.config import load_config
from walrus_tasks.errors import ConfigError
from walrus_tasks.settings import Settings

log = logging.getLogger("walrus.gateway")


class Reloaded(BaseModel):
    """``200`` of a reload: the new generation and the agents it knows."""

    generation: int
    agents: list[str]


def reload_config(app: FastAPI, r: redis.Redis, settings: Settings) -> Reloaded:
    """Load the config (ConfigError before anything changes), install it, bump the generation."""
    config = load_config(settings.home)
    generation = int(r.incr(keys.CONFIG_GENERATION))
    app.state.config, app.state.config_generation = config, str(generation)
    log.info("config reloaded (generation %d)", generation)
    return Reloaded(generation=generation, agents=sorted(config.agents))


async def follow_reloads(app: FastAPI, aredis: aioredis.Redis, settings: Settings) -> None:
    """Re-read the config whenever another process bumps the generation (runs forever)."""
    while True:
        await asyncio.sleep(settings.config_poll)
        try:
            generation = await aredis.get(keys.CONFIG_GENERATION)
        except aioredis.RedisError as e:
            log.warning("reload check: redis: %s", e)
            continue
        if generation == getattr(app.state, "config_generation", None):
            continue
        try:
            app.state.config = await run_in_threadpool(load_config, settings.home)
            log.info("config reloaded (generation %s)", generation)
        except ConfigError as e:
            log.error("config reload failed, keeping the old config: %s", e.message)
        app.state.config_generation = generation
