"""The gateway: validate, ``submit()``, relay run events. No provider, tool or runtime code.

The app is assembled here: the routes of every operation in :mod:`gateway.registry`, the
streams each face writes by hand, and the OpenAI (chat and Responses), Anthropic, Agent Protocol,
A2A and MCP faces; each is a thin adapter over :mod:`gateway.operations`.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from gateway import (
    a2a,
    admin,
    agent_protocol,
    anthropic_messages,
    bus,
    console,
    mcp_face,
    mcp_plain,
    native,
    openai_compat,
    registry,
    responses,
    route_index,
    sse_route,
    ws,
)
from gateway.a2a import subscribe as a2a_subscribe
from gateway.agent_protocol import runs as ap_runs
from gateway.anthropic_messages import route as anthropic_route
from gateway.asgi_app import GatewayApp
from gateway.auth import install_auth
from gateway.docs import install_docs
from gateway.errors import BodyLimit, install
from gateway.hub import Hub
from gateway.json_guard import JsonDepthGuard
from gateway.metrics import install_metrics
from gateway.origin import OriginGuard, cors_options
from gateway.page_headers import PageHeaders, docs_csp
from gateway.responses import routes as response_routes
from gateway.stream_limit import StreamCounts, StreamLimitMiddleware
from walrus_tasks import keys, migrate, tracing
from walrus_tasks.config import Config, load_config
from walrus_tasks.connection import async_redis, client
from walrus_tasks.errors import ConfigError
from walrus_tasks.settings import Settings, get_settings

TRACE_EXCLUDED = "/healthz$,/metrics$"
"""URLs (patterns) whose requests make no span: the probes and the scrapes."""


def create_app(settings: Settings | None = None, config: Config | None = None) -> FastAPI:
    """Build the ASGI app (config loaded now, so a bad config fails at start-up).

    The routes use the Redis that ``settings`` names (their ``deps.Redis``, and the streams'
    asyncio client), so an app built with explicit settings (an in-process test's) reads and
    writes only its own database, whatever the process's ``WALRUS_REDIS_URL``.
    """
    settings = settings or get_settings()
    config = config or load_config(settings.home)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Its XREADs block for up to sse_keepalive: reads may take that long, and a bit more.
        app.state.aredis = async_redis(
            settings.redis_url, settings.sse_keepalive + 10, settings.gateway_redis_connections
        )
        if migrate.pending(app.state.redis):
            raise ConfigError(migrate.PENDING)
        app.state.config_generation = await app.state.aredis.get(keys.CONFIG_GENERATION)
        app.state.hub = Hub(settings)  # every stream this process relays is read by it
        app.state.hub.start()
        follower = asyncio.create_task(admin.follow_reloads(app, app.state.aredis, settings))
        async with mcp_face.serving(app, settings):
            yield
        follower.cancel()
        await app.state.hub.close()
        await app.state.aredis.aclose()
        app.state.redis.close()

    app = GatewayApp(
        title="walrus_tasks gateway",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, from local assets
        redoc_url=None,
    )
    app.state.config, app.state.settings = config, settings
    app.state.redis = client(settings.redis_url)  # the routes' (deps.Redis)
    install(app)
    # Innermost: what FastAPI routes read is a JSON body no deeper than the limit (the plain
    # streams below check the bodies they parse themselves, keeping no frame of this layer).
    app.add_middleware(JsonDepthGuard)
    # After the checks below.
    sse_route.install(
        app,
        [
            sse_route.native(native.runs),
            native.PLAIN_SEND,
            openai_compat.PLAIN_CHAT,
            anthropic_route.PLAIN_MESSAGE,
            response_routes.PLAIN_CREATE,
            ap_runs.PLAIN_JOIN_STREAM,
            ap_runs.PLAIN_CREATE,
            ap_runs.PLAIN_JOIN,
            response_routes.PLAIN_STREAM,
            a2a_subscribe.PLAIN_SUBSCRIBE,
            mcp_plain.PLAIN_CALL,
        ],
    )
    # Inside the bearer check: a stream counts for the request's token (else its address).
    app.add_middleware(
        StreamLimitMiddleware, counts=StreamCounts(settings.gateway_max_streams_per_client)
    )
    app.add_middleware(PageHeaders, docs_policy=docs_csp(install_docs(app)))
    install_auth(app, config)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if cors := cors_options(settings):  # the allowed origins' pages may call the API
        app.add_middleware(CORSMiddleware, **cors)
    # Added last, so it runs first: a foreign Host or Origin learns nothing, not even a 401.
    app.add_middleware(OriginGuard, config=config, settings=settings)
    if (traced := tracing.asgi_middleware()) is not None:  # outermost: the request's span
        # One span per request: not one per ASGI message too (a chunk of a stream each).
        app.add_middleware(traced, excluded_urls=TRACE_EXCLUDED, exclude_spans=["receive", "send"])

    for api in (
        *native.ROUTERS,
        *registry.routers(),
        bus.router,
        openai_compat.router,
        responses.router,
    ):
        route_index.include(app, api)
    route_index.include(app, anthropic_messages.router)
    for api in agent_protocol.ROUTERS:
        route_index.include(app, api)
    a2a.install(app)
    mcp_face.install(app)
    ws.register(app, settings)
    console.register(app)
    install_metrics(app)  # last: it labels requests by the routes registered above
    return app
