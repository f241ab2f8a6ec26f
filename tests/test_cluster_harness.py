"""The test harness itself: a gateway whose free port another process took first."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests import cluster as harness
from tests.cluster import Cluster, running
from tests.conftest import redis_db_url, write_home
from tests.fakellm import FakeLLM
from walrus_tasks.redis_server import RedisServer, free_port


def test_a_gateway_whose_free_port_was_taken_meanwhile_starts_on_another(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # free_port() says which port was free a moment ago; under xdist another process can bind
    # it before the gateway does (CI saw "address already in use"). The harness starts the
    # gateway again on another port.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(harness, "free_port", lambda: next(ports, None) or free_port())
        home = write_home(tmp_path / "home", fake_llm.base_url)
        c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
        with running(c, workers=()):
            assert c.gateway_url != f"http://127.0.0.1:{taken}" and c.port_retries == 1
            assert httpx.get(c.gateway_url + "/healthz", timeout=5).status_code == 200
