"""Process settings, read once from ``WALRUS_*`` environment variables."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from walrus_tasks.errors import ConfigError, InvalidInput
from walrus_tasks.redis_url import is_cluster, parse_cluster

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Where a development machine usually has Redis; ``walrus up`` embeds one if it is not there."""

DEFAULT_LEASE_TTL = 15.0
"""Seconds a conversation lease lives without renewal; workers renew it every third of this."""


GATEWAY_KEEP_ALIVE = 75
"""Seconds the gateway keeps an idle keep-alive connection (uvicorn's default is 5).

A client reuses a pooled connection until its own idle expiry; a server that closes it
sooner races that reuse: the request arrives as the server closes, the kernel answers
with a reset, and the client sees a dropped connection (``httpx.ReadError``) for a request
the gateway never read. httpx (our clients, the CLI, most Python SDKs) expires idle
connections after 5 s, uvicorn after 5 s too, so a connection idle for about 5 s could go
either way. The gateway waits longer than common clients and proxies keep an idle
connection (httpx 5 s, aiohttp 15 s, nginx ``keepalive_timeout`` and an AWS ALB 60 s).
"""


class Settings(BaseSettings):
    """Everything a walrus process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="WALRUS_", extra="ignore")

    home: Path = Field(default=Path(".walrus"), description="config directory")
    redis_url: str = Field(
        default=DEFAULT_REDIS_URL,
        description="the state Redis: redis://, rediss://, sentinel://h1:26379,h2:26379/master, "
        "or a Redis Cluster, redis+cluster://h1:6379,h2:6379 (rediss+cluster:// over TLS), "
        "which needs WALRUS_BROKER_URL",
    )
    broker_url: str = Field(
        default="",
        description="Celery's broker when it is not the state Redis: redis://, sentinel://, "
        "amqp://; required with a Redis Cluster state, never one itself (Celery's result "
        "backend then goes with it, or is off on RabbitMQ)",
    )
    replica_ack_timeout: float = Field(
        default=1.0,
        ge=0,
        description="seconds submit() waits for a replica to hold a message (WAIT); 0: off",
    )
    submit_retry: float = Field(
        default=15.0,
        ge=0,
        description="seconds submit() keeps retrying a Redis that is failing over",
    )
    gateway_host: str = Field(
        default="127.0.0.1",
        description="address the gateway listens on; a non-loopback one needs a token",
    )
    gateway_port: int = Field(default=8765, description="port the gateway listens on")
    gateway_allowed_origins: str = Field(
        default="",
        description="comma-separated browser origins (https://app.example) the gateway also "
        "serves, besides loopback and same-origin; their hosts are accepted as Host too",
    )
    gateway_keep_alive: int = Field(
        default=GATEWAY_KEEP_ALIVE,
        ge=1,
        description="seconds the gateway keeps an idle HTTP/1.1 connection open: keep it above "
        "the idle expiry of its clients' connection pools and of any proxy in front",
    )
    gateway_idle_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds a new connection may stay silent before its first byte; then it "
        "is closed",
    )
    gateway_header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds from a request's first byte until its headers are complete; then "
        "it is answered 408 and closed (slow-header clients)",
    )
    gateway_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="most bytes of a request's line and headers; a larger head is answered 431",
    )
    gateway_max_connections_per_client: int = Field(
        default=1024,
        ge=1,
        description="open connections one client address may hold (per gateway process); "
        "the next is answered 429 and closed",
    )
    gateway_redis_connections: int = Field(
        default=100,
        ge=2,
        description="most connections the gateway's asyncio Redis client holds (per process; "
        "event streams share one more reader); a command that finds them all busy waits for "
        "one, up to 20 s, instead of failing (on a Redis Cluster: per node, and it fails)",
    )
    gateway_max_streams_per_client: int = Field(
        default=1024,
        ge=1,
        description="open event streams (SSE, and WebSocket stream/feed) one token "
        "may hold, or one client address when no tokens are configured (per gateway process); "
        "the next is answered 429",
    )
    gateway_trusted_proxies: str = Field(
        default="",
        description="comma-separated addresses or networks (10.0.0.0/8) of reverse proxies "
        "whose X-Forwarded-For names the client; empty: the peer address is the client",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field(
        default="console",
        pattern="^(json|console)$",
        description="json: one JSON object a line (agent, sender, run_id, task_id); console: "
        "for people",
    )

    lease_ttl: float = Field(
        default=DEFAULT_LEASE_TTL,
        gt=0,
        description="seconds a conversation's lease lives without renewal (renewed every third)",
    )
    dispatch_grace: float = Field(
        default=60.0, gt=0, description="seconds a dispatched task may wait in its queue"
    )
    reaper_interval: float = Field(default=3.0, gt=0, description="seconds between lease sweeps")
    max_recoveries: int = Field(default=3, ge=0, description="resumes of one run before it fails")
    fair_dispatch: bool = Field(
        default=True,
        description="a drain starts the conversation due by tenant weight and agent priority "
        "(walrus_tasks.fair); false: its own, in arrival order",
    )
    cancel_poll: float = Field(default=0.1, gt=0, description="seconds between cancel-flag checks")
    next_run_in_place_ms: float = Field(
        default=50.0,
        ge=0,
        description="ms from a run task's start during which a run that ends with its "
        "conversation's next message queued has the task run that next run itself, instead of "
        "sending a task for it (worker.in_place; 0: always a task)",
    )

    task_events_batch_ms: float = Field(
        default=20.0,
        ge=0,
        description="a worker publishes the Celery task events (Flower's) buffered this many ms "
        "after the first, in one message (worker.consumer; 0: at the event loop's next turn, "
        "as Celery does)",
    )

    step_soft_time_limit: int = Field(
        default=300, description="seconds a task may run before Celery asks it to stop"
    )
    step_time_limit: int = Field(default=330, description="seconds before Celery kills a task")
    visibility_timeout: int = Field(default=3600, description="above the step time limit")

    events_maxlen: int = Field(default=10_000, description="approximate cap of one run's stream")
    events_ttl: int = Field(default=24 * 3600, description="seconds a finished run's stream lives")
    usage_retention_days: int = Field(
        default=35,
        ge=1,
        le=3660,
        description="days an hourly usage bucket (tokens, calls and runs by tenant, agent and "
        "model: GET /v1/usage) is kept after its hour ends",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        description="largest request body (and WebSocket frame); a larger one is answered 413",
    )
    sse_keepalive: float = Field(
        default=15.0, description="seconds between keep-alive comments on an idle event stream"
    )
    chunk_flush_ms: float = Field(
        default=5.0,
        ge=0,
        description="tokens arriving within this many ms of the last chunk event written are "
        "coalesced into the next one (the first token of a burst goes out at once; 0: one "
        "event per token)",
    )
    sse_buffer: int = Field(
        default=10_000,
        gt=0,
        description="events a stream subscriber may fall behind before it is cut with a "
        "resumable slow_consumer error (as many as a run's stream holds)",
    )
    sse_redis_grace: float = Field(
        default=30.0,
        gt=0,
        description="seconds an open SSE stream waits for Redis to come back before it ends "
        "with an error event (the client resumes with Last-Event-ID)",
    )

    beat_lock_ttl: float = Field(
        default=5.0, gt=0, description="seconds a dead beat holds the lock: the failover time"
    )
    beat_tick: float = Field(default=0.25, gt=0, description="longest sleep of the firing beat")
    timer_deadline: float = Field(
        default=60.0, ge=0, description="a timer fire later than this is skipped, not replayed"
    )
    sandbox: str = Field(
        default="auto",
        pattern="^(auto|bwrap|none)$",
        description="where bash runs: auto or bwrap (bubblewrap, else bash refuses), or none "
        "(unsandboxed, as the worker's user)",
    )
    sandbox_uid: int = Field(
        default=65534, ge=1, description="host uid bash runs as when the worker is root (nobody)"
    )
    sandbox_gid: int = Field(
        default=65534, ge=1, description="host gid bash runs as when the worker is root (nogroup)"
    )
    paths_resolve: str = Field(
        default="auto",
        pattern="^(auto|walk)$",
        description=(
            "how the file tools open a path beneath the working directory: auto (the kernel's "
            "openat2 RESOLVE_BENEATH where it has it, else the walk) or walk (one component at "
            "a time with O_NOFOLLOW)"
        ),
    )
    worker_preload_sdks: bool = Field(
        default=True,
        description="a worker imports the provider SDKs (anthropic, openai) before its pool "
        "forks, so no pool process pays seconds of imports on its first LLM call; false: each "
        "pool process imports one when it first calls it (workers whose agents use no SDK)",
    )
    config_poll: float = Field(
        default=1.0, gt=0, description="seconds between checks for a config reload"
    )
    flower_basic_auth: str | None = Field(
        default=None, description="user:password of `walrus flower`'s UI and API (none: open UI)"
    )

    @model_validator(mode="after")
    def _broker_off_the_cluster(self) -> Settings:
        """A Redis Cluster holds the state only: Celery's broker must be named apart.

        Raises InvalidInput, which pydantic does not wrap: a ValidationError would print every
        setting given, passwords in URLs included.
        """
        try:
            parse_cluster(self.redis_url)  # a bad cluster URL fails at start, not at first use
        except InvalidInput as e:
            raise InvalidInput(f"WALRUS_REDIS_URL: {e.message}") from None
        if is_cluster(self.broker_url):
            raise InvalidInput(
                "WALRUS_BROKER_URL cannot name a Redis Cluster (kombu's Redis transport does "
                "not support one): use a redis://, sentinel:// or amqp:// URL"
            )
        if is_cluster(self.redis_url) and not self.broker_url:
            raise InvalidInput(
                "WALRUS_REDIS_URL names a Redis Cluster, which cannot be Celery's broker "
                "(kombu's Redis transport does not support one): set WALRUS_BROKER_URL to a "
                "redis://, sentinel:// or amqp:// URL"
            )
        return self

    def allowed_origins(self) -> list[str]:
        """``gateway_allowed_origins`` as a list of normalized origins (lower case, no ``/``)."""
        return [
            o.strip().rstrip("/").lower()
            for o in self.gateway_allowed_origins.split(",")
            if o.strip()
        ]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use.

    Raises :class:`ConfigError` for settings that are not valid, one clause per setting naming
    its variable and what is wrong, never the value given (a URL may hold a password; pydantic's
    own error would print it).
    """
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigError("; ".join(map(_setting_error, e.errors()))) from None
    except InvalidInput as e:  # the checks across settings (_broker_off_the_cluster)
        raise ConfigError(e.message) from None


def settings_or_exit(process: str) -> Settings:
    """:func:`get_settings`; one line on stderr and exit code 4 if a setting is not valid.

    Exit code 4 is the processes' code for a bad config. ``python -m gateway``, ``worker`` and
    ``beat`` read their settings with it first.
    """
    try:
        return get_settings()
    except ConfigError as e:
        print(f"{process}: bad setting: {e.message}", file=sys.stderr)
        raise SystemExit(4) from None


def _setting_error(error: ErrorDetails) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    return f"WALRUS_{name.upper()}: {error['msg']}"
