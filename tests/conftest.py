"""Fixtures: a private Redis (started before any walrus module reads settings), a config
directory with test agents, a fake LLM server over real HTTP, and real walrus processes."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import tempfile
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from tests.cluster import Cluster, running
from tests.ha import SentinelGroup
from tests.redis_cluster import RedisClusterGroup
from walrus_tasks import connection
from walrus_tasks.config import AgentConfig, Config, load_config
from walrus_tasks.redis_server import RedisServer, start_redis
from walrus_tasks.settings import Settings
from worker.tools import ToolContext

_redis: RedisServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the test Redis and point every walrus setting at it before modules import."""
    global _redis
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller runs no test: each xdist worker starts its own
    from walrus_tasks.celery_app import app
    from walrus_tasks.settings import get_settings

    # Whatever WALRUS_REDIS_URL named when the suite started (a developer's Redis, production)
    # is never touched: nothing may have read the settings or configured Celery before this.
    assert get_settings.cache_info().currsize == 0, "settings were read before the test Redis"
    assert not app.configured, "the Celery app was configured before the test Redis started"
    data = Path(tempfile.mkdtemp(prefix="walrus-test-redis-"))
    _redis = start_redis(data, databases=DATABASES)
    os.environ["WALRUS_REDIS_URL"] = _redis.url
    os.environ["WALRUS_HOME"] = str(data / "home-unused")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis is not None:
        _redis.stop()


# --- markers: e2e, slow, ha (registered in pyproject.toml), set here so test modules need none ---

HA_MODULES = frozenset(
    {
        "test_broker_depth", "test_chaos", "test_compose_ha", "test_failover", "test_rabbitmq",
        "test_redis_outage", "test_redis_restart", "test_restart",
    }
)  # fmt: skip
"""Sentinel, failover, RabbitMQ and restarts of Redis or of every process."""

SLOW_TESTS = frozenset(
    {
        "test_a_master_killed_mid_load_loses_no_accepted_message",
        "test_a_thousand_sse_clients_all_get_their_end_on_a_constant_number_of_redis_connections",
        "test_no_accepted_message_is_lost_duplicated_reordered_or_unanswered_under_faults",
        "test_conversations_are_each_ordered_and_run_in_parallel",
        "test_steps_a_freed_slot_wakes_run_once_each",
        "test_walrus_events_cli",
        "test_messages_left_unacked_by_a_killed_worker_are_redelivered_as_no_ops",
        "test_kill_9_of_the_worker_mid_run_resumes_on_another_worker",
        "test_a_redelivered_step_resumes_the_run_without_the_reaper",
        "test_the_compose_stack_serves_a_message_and_passes_its_healthchecks",
        "test_ask_user_waits_without_a_worker_and_resumes_on_another",
        "test_a_ready_conversation_whose_drain_message_was_lost_is_drained_by_the_reaper",
        "test_a_tenants_share_caps_its_calls_whoever_sends_them",
        "test_a_worker_with_metrics_port_serves_step_and_tool_durations_of_its_pool",
        "test_heartbeats_arrive_each_interval_never_two_at_once_and_follow_a_reload",
        "test_in_process_tests_leave_a_decoy_redis_named_by_walrus_redis_url_untouched",
        "test_a_run_recovered_from_a_killed_worker_sends_its_webhook_once",
        "test_a_connection_idle_as_long_as_a_client_keeps_it_is_still_served",
        "test_max_concurrency_holds_across_workers_and_every_run_succeeds",
        "test_each_child_killed_is_restarted_and_the_next_message_is_answered",
        "test_kill_9_of_walrus_up_takes_its_children_along",
        "test_the_fanout_of_each_face_completes_every_stream_and_names_the_face",
    }
)
"""Tests whose call alone took 15 s or more in a full run (besides every ``ha`` test)."""

_PROCESS_WORDS = ("Cluster(", "running(", "subprocess", "Popen", "start_redis", "start_worker")


def _starts_processes(obj: Any) -> bool:
    """Whether a function's source starts real processes (a cluster, a CLI, a Redis)."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return False
    return any(word in source for word in _PROCESS_WORDS)


def _is_e2e(item: pytest.Function) -> bool:
    """A test that runs real walrus processes: itself, a fixture or a module helper it calls."""
    fixtures = item._fixtureinfo.name2fixturedefs.values()
    if any(_starts_processes(defs[-1].func) for defs in fixtures if defs):
        return True
    helpers = [item.module.__dict__.get(n) for n in item.function.__code__.co_names]
    called = [h for h in helpers if inspect.isfunction(h) and h.__module__ == item.module.__name__]
    return any(_starts_processes(f) for f in [item.function, *called])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``e2e`` (real processes), ``ha`` (by module) and ``slow`` (by measured time).

    With ``--state-on-cluster``, keep only the state-layer tests: those on the ``r`` fixture
    that start no process and hold for one Redis and a cluster alike (not ``one_redis``).
    """
    _mark(items)
    if config.getoption("--state-on-cluster"):
        kept, dropped = [], []
        for item in items:
            on_r = "r" in getattr(item, "fixturenames", ())
            alike = not item.get_closest_marker("e2e") and not item.get_closest_marker("one_redis")
            (kept if on_r and alike else dropped).append(item)
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _mark(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        module = item.module.__name__.rpartition(".")[2]
        ha = module in HA_MODULES
        if ha or _is_e2e(item):
            item.add_marker(pytest.mark.e2e)
        if ha:
            item.add_marker(pytest.mark.ha)
        if ha or item.originalname in SLOW_TESTS or item.get_closest_marker("chaos"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    assert _redis is not None
    return _redis


DATABASES = 1024
"""Databases of the test Redis: db 0 is this test process's (its settings and Celery app: what
in-process tests send), every cluster, the session's too, takes one of its own."""
_db_counter = iter(range(1, DATABASES))


def redis_db_url(server: RedisServer) -> str:
    """A fresh database of the test Redis (db 0 belongs to this process's in-process tests)."""
    return f"redis://127.0.0.1:{server.port}/{next(_db_counter)}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--state-on-cluster", action="store_true",
        help="the `r` fixture is a client of a Redis Cluster of the session's own (3 masters, "
        "3 replicas): the state-layer tests run on a cluster, where a cross-slot access fails",
    )  # fmt: skip


@pytest.fixture(scope="session")
def state_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisClusterGroup | None]:
    """With ``--state-on-cluster``, the session's Redis Cluster; else None."""
    if not request.config.getoption("--state-on-cluster"):
        yield None
        return
    group = RedisClusterGroup(tmp_path_factory.mktemp("state-cluster"))
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture
def r(redis_server: RedisServer, state_cluster: RedisClusterGroup | None) -> Iterator[redis.Redis]:
    """A client of a fresh database of the test Redis, flushed afterwards.

    With ``--state-on-cluster`` a client of the session's Redis Cluster, every master flushed
    afterwards.
    """
    if state_cluster is not None:
        on_cluster = connection.client(state_cluster.url)
        yield on_cluster
        on_cluster.flushall(target_nodes="primaries")  # type: ignore[call-arg]
        on_cluster.close()
        return
    client = redis.Redis.from_url(redis_db_url(redis_server), decode_responses=True)
    yield client
    client.flushdb()  # a database of the Redis this test session started
    client.close()


OnLoop = Callable[[Callable[[aioredis.Redis], Awaitable[Any]]], Any]
"""``on_loop(go)``: ``await go(aredis)`` on an event loop of its own (see :func:`on_loop`)."""


@pytest.fixture
def on_loop(r: redis.Redis, state_cluster: RedisClusterGroup | None) -> OnLoop:
    """Runs ``go(aredis)`` on a new event loop, ``aredis`` an asyncio client of ``r``'s state.

    As the gateway makes it (``connection.async_redis``): of ``r``'s database, or of the
    session's Redis Cluster with ``--state-on-cluster``.
    """
    if state_cluster is not None:
        url = state_cluster.url
    else:
        kw = r.connection_pool.connection_kwargs
        url = f"redis://{kw['host']}:{kw['port']}/{kw['db']}"

    def run(go: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            aredis = connection.async_redis(url)
            try:
                return await go(aredis)
            finally:
                await aredis.aclose()

        return asyncio.run(main())

    return run


def tool_context(
    r: redis.Redis,
    agent: AgentConfig,
    cwd: Path,
    config: Config | None = None,
    sender: str = "alice",
    cancelled: Callable[[], bool] = lambda: False,
) -> ToolContext:
    """What a tool task gives a tool body, for calling tools directly (run ``run-1``).

    Without ``config``, ``cwd`` is the agent's workspace root (what bash's sandbox binds) and
    the config directory lies next to it (bash refuses a workspace that holds it).
    """
    if config is None:
        agent = agent if agent.workdir else agent.model_copy(update={"workdir": str(cwd)})
        config = Config(home=cwd.parent / f"{cwd.name}.home", agents={agent.name: agent})
    return ToolContext(
        agent=agent,
        config=config,
        sender=sender,
        run_id="run-1",
        call_id="call-1",
        redis=r,
        cwd=cwd,
        pause=time.sleep,
        cancelled=cancelled,
    )


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[object]:
    from tests.fakellm import FakeLLM

    fake = FakeLLM()
    fake.start()
    yield fake
    fake.stop()


AGENTS = {
    "echo": """
        model = "mock"
        description = "Replies at once"
        [mock]
        reply = "Hello from the mock model."
    """,
    "slow": """
        model = "mock"
        [mock]
        reply = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20"
        chunk_delay_ms = 250
    """,
    "paced": """
        model = "mock"
        [mock]
        reply = "a b c d e"
        chunk_delay_ms = 20
    """,
    "tooly": """
        model = "mock"
        tools = ["clock"]
        [mock]
        tool_calls = ["clock", "clock", "clock"]
        reply = "It is late."
    """,
    "sleepy": """
        model = "mock"
        tools = ["sleep"]
        [mock]
        tool_calls = ["sleep"]
        reply = "rested"
    """,
    "slowtool": """
        model = "mock"
        tools = ["clock"]
        [mock]
        tool_calls = ["clock"]
        reply = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20"
        chunk_delay_ms = 250
    """,
    "budget": """
        model = "mock"
        max_iterations = 1
        tools = ["clock"]
        [mock]
        tool_calls = ["clock"]
    """,
    "outsider": """
        model = "mock"
        [mock]
        tool_calls = ["clock"]
        reply = "done"
    """,
    "broken": """
        model = "mock"
        [mock]
        fail = "the mock model was told to fail"
    """,
    "oai": """
        model = "fake/m-oai"
        tools = ["clock"]
    """,
    "oaierr": """
        model = "fake/m-oaierr"
        retries = 0
    """,
    "anth": """
        model = "fakeant/m-anth"
        tools = ["clock"]
    """,
}


SHARED_AGENT_MODULES = (
    "tests.test_a2a", "tests.test_agent_protocol", "tests.test_client_tools", "tests.test_console",
    "tests.test_mcp_face", "tests.test_memory", "tests.test_ws_turns",
)  # fmt: skip
"""Modules whose ``AGENTS`` the session ``home`` carries too: their tests run on the session
``cluster`` instead of starting a cluster of their own only to add an agent."""


def shared_agents() -> dict[str, str]:
    """The test agents plus those of ``SHARED_AGENT_MODULES`` (one name, one definition)."""
    agents = dict(AGENTS)
    for module in SHARED_AGENT_MODULES:
        for name, body in importlib.import_module(module).AGENTS.items():
            assert agents.setdefault(name, body) == body, f"{module} redefines agent {name!r}"
    return agents


def write_home(home: Path, fake_base_url: str) -> Path:
    (home / "agents").mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        textwrap.dedent(f"""
        [providers.fake]
        kind = "openai"
        base_url = "{fake_base_url}/v1"
        api_key = "test-key"
        timeout = 10

        [providers.fakeant]
        kind = "anthropic"
        base_url = "{fake_base_url}"
        api_key = "test-key"
        timeout = 10
        """)
    )
    write_agents(home, AGENTS)
    (home / "agents" / "echo.md").write_text("You are the echo agent.\n")
    return home


def write_agents(home: Path, agents: dict[str, str]) -> None:
    """Write ``agents/<name>.toml`` for each agent, its (indented) body dedented."""
    for name, body in agents.items():
        (home / "agents" / f"{name}.toml").write_text(textwrap.dedent(body))


def agents_home(root: Path, fake_base_url: str, agents: dict[str, str]) -> Path:
    """A config dir at ``root``: the test agents of ``write_home`` plus ``agents``."""
    write_agents(write_home(root, fake_base_url), agents)
    return root


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory, fake_llm: object) -> Path:
    root = write_home(tmp_path_factory.mktemp("home"), fake_llm.base_url)  # type: ignore[attr-defined]
    write_agents(root, shared_agents())
    return root


@pytest.fixture(scope="session")
def cluster(
    redis_server: RedisServer, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The shared cluster on a database of its own: a gateway, two workers (all queues) and beat.

    Not db 0: there the Celery messages of in-process tests (``submit()`` called directly) go,
    which its workers would otherwise take.
    """
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=home,
        log_dir=tmp_path_factory.mktemp("logs"),
        env_extra={"WALRUS_REAPER_INTERVAL": "1"},
    )
    with running(c, workers=("worker1", "worker2"), beat=True):
        yield c


@contextmanager
def in_process_gateway(redis_url: str, home: Path, **settings: Any) -> Iterator[TestClient]:
    """The gateway app served in this process (Starlette's ``TestClient``), on ``redis_url``.

    For tests that need only the gateway's answers (validation, auth, origin checks, the
    OpenAPI document, page headers): no process to start. The app is built with explicit
    settings, so its routes, checks and streams use ``redis_url`` (the app's own client,
    ``app.state.redis``). A message it sends goes to the process's Celery app, which
    ``pytest_configure`` bound to the test Redis.
    """
    from gateway.app import create_app
    from walrus_tasks.celery_app import app as celery

    assert _redis is not None
    broker = urlsplit(celery.conf.broker_url)
    assert (broker.hostname, broker.port) == ("127.0.0.1", _redis.port), "not the test Redis"
    app = create_app(Settings(redis_url=redis_url, home=home, **settings), load_config(home))
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        yield client


@pytest.fixture(scope="module")
def gateway_client(redis_server: RedisServer, home: Path) -> Iterator[TestClient]:
    """An in-process gateway alone on a fresh database (``in_process_gateway``), per module."""
    with in_process_gateway(redis_db_url(redis_server), home) as client:
        yield client


@pytest.fixture
def private_cluster(redis_server: RedisServer, home: Path, tmp_path: Path) -> Iterator[Cluster]:
    """An empty cluster on a fresh Redis database; the test starts the processes it needs."""
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    try:
        yield c
    finally:
        c.stop()


def drains_off(monkeypatch: pytest.MonkeyPatch, sent: Callable[..., None] | None = None) -> None:
    """``submit()`` neither sends nor pushes a drain message; it calls ``sent`` (as
    ``send_drain(agent, sender, run_id)``) where it would, if given. For the state-layer tests
    that drain by hand."""
    from walrus_tasks import submit

    monkeypatch.setattr(submit, "send_drain", sent or (lambda agent, sender, run_id=None: None))
    monkeypatch.setattr(submit, "drain_push", lambda *_: None)  # sent, not pushed


@pytest.fixture
def no_drain_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """``drains_off`` for a whole module (``pytestmark = pytest.mark.usefixtures(...)``)."""
    drains_off(monkeypatch)


@pytest.fixture
def sender() -> str:
    """A conversation of its own for each test."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Redis master, its replica and three sentinels of our own (``tests.ha``), stopped after."""
    group = SentinelGroup(tmp_path / "redis")
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterGroup]:
    """A Redis Cluster of our own (``tests.redis_cluster``): 3 masters, 3 replicas, stopped after.

    One per test (about 2 s to start): a test may kill a master (``kill9_master``).
    """
    group = RedisClusterGroup(tmp_path / "redis-cluster")
    try:
        yield group.start()
    finally:
        group.stop()
