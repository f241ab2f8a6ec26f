"""Cron entries over HTTP, and the config reload that every process follows.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

A reload is a counter in Redis (``walrus:config:generation``): ``POST /v1/admin/reload``
validates the config directory first (a bad one is a 422 and changes nothing), then bumps the
counter; every gateway (:func:`follow_reloads`), worker and beat polls it and re-reads its config
when it moves. Runs in flight keep the agent config they started with.
"""

import asyncio
import logging

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from gateway import operations as ops
from gateway.deps import Cfg, Redis, Sets, Who
from gateway.errors import responses
from walrus_tasks import keys
from walrus_tasks.config import load_config
from walrus_tasks.errors import ConfigError
from walrus_tasks.models import CronEntry, CronSpec
from walrus_tasks.settings import Settings

log = logging.getLogger("walrus.gateway")

ERRORS = responses({404: "unknown agent or cron", 422: "invalid entry or config"})


class Reloaded(BaseModel):
    """``200`` of a reload: the new generation and the agents it knows."""

    generation: int
    agents: list[str]


router = APIRouter(tags=["crons and config"])


@router.post("/v1/crons", status_code=201, response_model=CronEntry, responses=ERRORS)
def create_cron(spec: CronSpec, r: Redis, config: Cfg, who: Who) -> CronEntry:
    """Add a cron entry; it fires from the next schedule time on, without a restart."""
    return ops.create_cron(r, config, spec, who)


@router.get("/v1/crons", response_model=dict[str, list[CronEntry]])
def list_crons(r: Redis, who: Who) -> dict[str, list[CronEntry]]:
    """Every cron entry (of the token's tenant) with its last and next fire time and last run."""
    return {"crons": ops.list_crons(r, who)}


@router.get("/v1/crons/{cron_id}", response_model=CronEntry, responses=ERRORS)
def get_cron(cron_id: str, r: Redis, who: Who) -> CronEntry:
    """One cron entry."""
    return ops.get_cron(r, cron_id, who)


@router.delete("/v1/crons/{cron_id}", responses=ERRORS)
def delete_cron(cron_id: str, r: Redis, who: Who) -> dict[str, str]:
    """Delete a cron entry (it never fires again): ``{"deleted": id}``, or 404."""
    return ops.delete_cron(r, cron_id, who)


@router.post("/v1/admin/reload", response_model=Reloaded, responses=ERRORS)
def reload(r: Redis, request: Request, settings: Sets) -> Reloaded:
    """Re-read the config directory here, then make every process follow (422 if bad)."""
    return reload_config(request.app, r, settings)


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
