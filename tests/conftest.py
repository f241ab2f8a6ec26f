"""Fixtures: a private Redis (started before any walrus module reads settings), a config
directory with test agents, a fake LLM server over real HTTP, and real walrus processes."""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster import Cluster, running
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.redis_server import RedisServer, start_redis
from worker.tools import ToolContext

_redis: RedisServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the test Redis and point every walrus setting at it before modules import."""
    global _redis
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


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    assert _redis is not None
    return _redis


DATABASES = 1024
"""Databases of the test Redis: db 0 is the shared cluster's, each private cluster takes one."""
_db_counter = iter(range(1, DATABASES))


def redis_db_url(server: RedisServer) -> str:
    """A fresh database of the test Redis (db 0 belongs to the shared cluster)."""
    return f"redis://127.0.0.1:{server.port}/{next(_db_counter)}"


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of a fresh database of the test Redis, flushed afterwards."""
    client = redis.Redis.from_url(redis_db_url(redis_server), decode_responses=True)
    yield client
    client.flushdb()  # a database of the Redis this test session started
    client.close()


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
    return write_home(tmp_path_factory.mktemp("home"), fake_llm.base_url)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def cluster(
    redis_server: RedisServer, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The shared cluster on db 0: a gateway, two workers (all queues) and beat."""
    c = Cluster(
        redis_url=redis_server.url,
        home=home,
        log_dir=tmp_path_factory.mktemp("logs"),
        env_extra={"WALRUS_REAPER_INTERVAL": "1"},
    )
    with running(c, workers=("worker1", "worker2"), beat=True):
        yield c


@pytest.fixture
def private_cluster(redis_server: RedisServer, home: Path, tmp_path: Path) -> Iterator[Cluster]:
    """An empty cluster on a fresh Redis database; the test starts the processes it needs."""
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def sender() -> str:
    """A conversation of its own for each test."""
    return f"t-{uuid.uuid4().hex[:12]}"
