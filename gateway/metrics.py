"""The gateway's ``GET /metrics``: its own HTTP figures and the cluster's, read from Redis.

Two kinds of figure, and where they come from:

- this gateway process: requests by method, route template and status; how long they took
  to answer (until the response headers, so a long SSE stream counts as its start); SSE streams
  and WebSockets open now; messages accepted by agent. An ASGI middleware sees them all, so no
  endpoint has to call anything.
- the whole cluster, read from Redis on each scrape (``walrus_tasks.metrics``): run outcomes
  and durations by agent (recorded by the workers), queue depths, messages in flight, leases
  held, active runs; LLM tokens, calls and cost by tenant, agent and model
  (``walrus_tasks.usage``). Every gateway reports the same cluster figures: aggregate
  them with ``max``, not ``sum``, across gateways.

Each app gets its own registry, so building several apps in one process (tests) is fine.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from walrus_tasks import limits, usage
from walrus_tasks import metrics as shared
from walrus_tasks.celery_app import ALL_QUEUES
from walrus_tasks.config import Config

SUBMIT_ROUTE = ("POST", "/v1/agents/{agent}/messages")
"""The route whose 2xx answers count as accepted messages of the ``agent`` path parameter."""
UNMATCHED = "unmatched"
"""The ``route`` label of a path no route matches (raw paths would grow the series unbounded)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods labelled as themselves; anything else is ``other``."""


class HttpMetrics:
    """The gateway's own figures, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "walrus_http_requests", "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "walrus_http_request_duration_seconds",
            "Time from request to response headers, by method and route template.",
            ["method", "route"], registry=registry,
        )  # fmt: skip
        self.streams = Gauge(
            "walrus_sse_streams_active", "SSE responses open now, by route template.",
            ["route"], registry=registry,
        )  # fmt: skip
        self.websockets = Gauge(
            "walrus_websockets_active", "WebSocket connections open now.", registry=registry
        )
        self.submitted = Counter(
            "walrus_messages_submitted", "Messages accepted (2xx) by this gateway, by agent.",
            ["agent"], registry=registry,
        )  # fmt: skip


class MetricsMiddleware:
    """Count and time every HTTP request; track open SSE streams and WebSockets."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._flat: list[Any] | None = None
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        """The request counter's and duration histogram's series of each (method, route,
        status) seen: prometheus_client's ``labels()`` checks, converts and locks each call.
        Bounded: methods, route templates and statuses are."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Wrap ``send`` to see the response status and content type.

        Not a coroutine: its frame (and closures) would stay for as long as an SSE stream is
        open. An HTTP request is seen through :class:`_Observed`, ended by a done callback of
        the request's task (the server runs each request in a task of its own).
        """
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send)
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            return self.app(scope, receive, send)
        observed = _Observed(self, scope, send)
        task.add_done_callback(observed.ended)
        return self.app(scope, receive, observed.send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.metrics.websockets.track_inprogress():
            await self.app(scope, receive, send)

    def answered(self, scope: Scope, status: int, started: float) -> str:
        """Count and time the answer ``status`` to ``scope``; its route label."""
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = self._route(scope)
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[method, route, status] = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.duration.labels(method, route),
            )
        series[0].inc()
        series[1].observe(time.perf_counter() - started)
        if (method, route) == SUBMIT_ROUTE and 200 <= status < 300:
            self.metrics.submitted.labels(scope["path_params"]["agent"]).inc()
        return route

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # answered before routing (413 of the body limit) or no route matched
            if self._flat is None:  # on first use: every route is registered by then
                self._flat = flat_routes(self.routes)
            route = next((r for r in self._flat if r.matches(scope)[0] != Match.NONE), None)
        return str(getattr(route, "path", UNMATCHED))


class _Observed:
    """One HTTP request as :class:`MetricsMiddleware` sees it: its response's start, its end."""

    __slots__ = ("middleware", "responded", "scope", "send_on", "started", "stream_route")

    def __init__(self, middleware: MetricsMiddleware, scope: Scope, send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self.send_on = send
        self.started = time.perf_counter()
        self.responded = False
        self.stream_route: str | None = None

    async def send(self, message: Message) -> None:
        """Count the response at its start (an SSE response as an open stream), then send."""
        if message["type"] == "http.response.start":
            self.responded = True
            route = self.middleware.answered(self.scope, message["status"], self.started)
            headers = dict(message.get("headers", ()))
            if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                self.stream_route = route
                self.middleware.metrics.streams.labels(route).inc()
        await self.send_on(message)

    def ended(self, task: asyncio.Task[Any]) -> None:
        """The request's task ended: its open stream is closed.

        A request answered without us is the server's 500: the app failed (the server error
        middleware outside answered), or it returned without an answer (the server did).
        """
        if not self.responded:
            self.middleware.answered(self.scope, 500, self.started)
        if self.stream_route is not None:
            self.middleware.metrics.streams.labels(self.stream_route).dec()


def flat_routes(routes: list[BaseRoute]) -> list[Any]:
    """Every route with its full path, the routes of included routers among them.

    FastAPI 0.16x keeps an included router as one lazy entry of ``app.routes`` that matches its
    whole subtree and has no ``path``; ``iter_route_contexts`` lists its routes. Older FastAPI
    copies the routes into ``app.routes``.
    """
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return list(routes)
    return list(iter_route_contexts(routes))


class ClusterCollector:
    """Cluster-wide figures read from Redis on every scrape."""

    def __init__(
        self,
        agents: Callable[[], Iterable[str]],
        client: Callable[[], redis.Redis],
        config: Callable[[], Config | None] = lambda: None,
    ) -> None:
        self.agents = agents
        self.client = client
        self.config = config

    def describe(self) -> Iterator[Metric]:
        """The metric names, without reading Redis (so registering it costs nothing)."""
        yield from self._families(None)
        yield from _tenant_families({})
        yield from _usage_families({})

    def collect(self) -> Iterator[Metric]:
        """Read the figures; ``walrus_redis_up 0`` and nothing else when Redis does not answer."""
        try:
            r = self.client()
            figures = shared.read_figures(r, ALL_QUEUES)
            config = self.config()
            uses = limits.usage(r, config) if config else []
            used = usage.metric_cells(usage.read_totals(r), config)
        except (redis.RedisError, OSError):
            yield GaugeMetricFamily("walrus_redis_up", "1 when Redis answered this scrape.", 0)
            return
        yield from self._families(figures)
        yield from _tenant_families(tenant_labels(figures.tenants, config))
        yield from _limit_families(uses)
        yield from _usage_families(used)

    def _families(self, f: shared.Figures | None) -> Iterator[Metric]:
        yield GaugeMetricFamily("walrus_redis_up", "1 when Redis answered this scrape.", 1)
        queue = GaugeMetricFamily(
            "walrus_queue_depth", "Task messages waiting in each Celery queue.", labels=["queue"]
        )
        for name, depth in (f.queues if f else {}).items():
            queue.add_metric([name], depth)
        yield queue
        yield GaugeMetricFamily(
            "walrus_broker_up", "1 when the broker answered this scrape.",
            (1 if f.broker_up else 0) if f else None,
        )  # fmt: skip
        for name, doc, value in [
            ("walrus_tasks_unacked", "Task messages delivered, not yet acknowledged.", "unacked"),
            ("walrus_leases_held", "Conversation leases held (a run in progress).", "leases"),
            ("walrus_runs_active", "Runs in running or waiting state.", "active_runs"),
            ("walrus_conversations", "Conversations known.", "conversations"),
            ("walrus_inboxes_pending", "Conversations with queued messages.", "inboxes"),
        ]:
            yield GaugeMetricFamily(name, doc, getattr(f, value) if f else None)
        runs = CounterMetricFamily(
            "walrus_runs", "Runs ended, by agent and status (cluster-wide).",
            labels=["agent", "status"],
        )  # fmt: skip
        durations = HistogramMetricFamily(
            "walrus_run_duration_seconds", "Run durations, start to end, by agent (cluster-wide).",
            labels=["agent"],
        )  # fmt: skip
        if f is not None:
            stats = {a: shared.RunStats() for a in self.agents()} | f.runs
            for agent, s in sorted(stats.items()):
                for status, n in s.outcomes.items():
                    runs.add_metric([agent, status], n)
                buckets = [(shared.bound_label(b), n) for b, n in s.cumulative()]
                durations.add_metric([agent], buckets, s.seconds_sum)
        yield runs
        yield durations


OTHER_TENANT = "(other)"
"""The label of the tenants no token of the config names (an admin token may name any tenant):
their figures are summed into one series, so the series stay as many as the config's tenants."""


def tenant_labels(
    tenants: dict[str, shared.TenantStats], config: Config | None
) -> dict[str, shared.TenantStats]:
    """``tenants`` by label: the config's tenants and the default, the rest as ``OTHER_TENANT``."""
    known = {g.tenant for g in config.gateway.tokens if g.tenant} if config else set()
    out: dict[str, shared.TenantStats] = {}
    for name, s in tenants.items():
        label = name if name == shared.DEFAULT_TENANT or name in known else OTHER_TENANT
        out.setdefault(label, shared.TenantStats()).add(s)
    return out


def _tenant_families(tenants: dict[str, shared.TenantStats]) -> Iterator[Metric]:
    """Runs ended and tokens used, by tenant (cluster-wide)."""
    runs = CounterMetricFamily(
        "walrus_tenant_runs", "Runs ended, by tenant and status (cluster-wide; the default "
        f"tenant is {shared.DEFAULT_TENANT!r}).", labels=["tenant", "status"],
    )  # fmt: skip
    tokens = CounterMetricFamily(
        "walrus_tenant_tokens", "LLM tokens used by ended runs, by tenant and kind "
        "(input | output).", labels=["tenant", "kind"],
    )  # fmt: skip
    for tenant, s in sorted(tenants.items()):
        for status, n in s.outcomes.items():
            runs.add_metric([tenant, status], n)
        tokens.add_metric([tenant, "input"], s.input_tokens)
        tokens.add_metric([tenant, "output"], s.output_tokens)
    yield runs
    yield tokens


def _usage_families(cells: dict[usage.Cell, usage.Counts]) -> Iterator[Metric]:
    """LLM tokens, calls and cost by tenant, agent and model (``walrus_tasks.usage``).

    Labels the config does not name are summed as ``(other)``. The cost is the tokens at
    today's ``[prices]``: a price change moves it (a decrease reads as a counter reset), and a
    model without a price has no cost series.
    """
    labels = ["tenant", "agent", "model"]
    tokens = CounterMetricFamily(
        "walrus_llm_tokens", "LLM tokens of committed steps, by tenant, agent, model (the one "
        "that answered) and direction (input | output).", labels=[*labels, "direction"],
    )  # fmt: skip
    calls = CounterMetricFamily(
        "walrus_llm_calls", "LLM calls of committed steps, by tenant, agent and model.",
        labels=labels,
    )  # fmt: skip
    cost = CounterMetricFamily(
        "walrus_llm_cost_usd", "The cost of those tokens in USD at the [prices] of config.toml "
        "now, by tenant, agent and model (priced models only).", labels=labels,
    )  # fmt: skip
    for cell, c in sorted(cells.items()):
        tokens.add_metric([*cell, "input"], c.input_tokens)
        tokens.add_metric([*cell, "output"], c.output_tokens)
        calls.add_metric(list(cell), c.calls)
        if c.priced:
            cost.add_metric(list(cell), c.cost_usd)
    yield tokens
    yield calls
    yield cost


_LIMIT_GAUGES = (
    ("walrus_limit_in_flight", "LLM calls holding a slot of the limit.", "in_flight"),
    ("walrus_limit_max_concurrency", "The limit's max_concurrency (if set).", "max_concurrency"),
    ("walrus_limit_requests_last_minute", "Calls the limit admitted in the last minute.",
     "requests_last_minute"),
    ("walrus_limit_tokens_last_minute", "Estimated tokens admitted in the last minute.",
     "tokens_last_minute"),
    ("walrus_limit_waiting", "Steps deferred, waiting for the limit's capacity.", "waiting"),
)  # fmt: skip


def _limit_families(uses: list[limits.LimitUse]) -> Iterator[Metric]:
    """One gauge per figure of the cluster-wide limits, labelled by the limit's name."""
    for name, doc, attr in _LIMIT_GAUGES:
        family = GaugeMetricFamily(name, doc, labels=["limit"])
        for use in uses:
            value = getattr(use, attr)
            if value is not None:
                family.add_metric([use.name], value)
        yield family


def install_metrics(app: FastAPI) -> None:
    """Add ``GET /metrics`` and the request-counting middleware to the gateway ``app``."""

    def agents() -> list[str]:
        config = getattr(app.state, "config", None)  # read per scrape: a reload may replace it
        return sorted(config.agents) if config else []

    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: OpenMetrics only
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    http = HttpMetrics(registry)
    for agent in agents():
        http.submitted.labels(agent)  # a series from zero: the first message shows in rate()
    cluster = ClusterCollector(
        agents, lambda: app.state.redis, lambda: getattr(app.state, "config", None)
    )
    registry.register(cluster)
    app.add_middleware(MetricsMiddleware, metrics=http, routes=app.router.routes)
    app.state.metrics_registry = registry

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    def metrics() -> Response:
        """Prometheus text format: this gateway's HTTP figures and the cluster's run figures."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
