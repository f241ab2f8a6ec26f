"""A gateway that stops ends its open streams with a resumable error, not a cut connection.

``gateway.server._Server`` asks the hub to end every stream as the server starts to stop
(``Hub.end_streams``): an SSE client reads an ``unavailable`` error that says to resume, a
WebSocket ``feed`` an error frame before the socket is closed with 1012 (service restart), both
before uvicorn's graceful timeout; the log has no ``CancelledError``.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.cluster import Cluster, running
from tests.conftest import redis_db_url
from walrus_tasks.redis_server import RedisServer


def read_sse(url: str, got: list[str], opened: threading.Event) -> None:
    """Read the live feed's lines into ``got`` until the server ends the stream."""
    with httpx.stream("GET", url + "/v1/events", timeout=30) as resp:
        assert resp.status_code == 200
        opened.set()
        for line in resp.iter_lines():
            got.append(line)


def test_stopping_the_gateway_ends_each_stream_with_a_resumable_error(
    redis_server: RedisServer, home: Path, tmp_path: Path
) -> None:
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    with running(c, workers=()):
        got: list[str] = []
        opened = threading.Event()
        reader = threading.Thread(target=read_sse, args=(c.gateway_url, got, opened))
        reader.start()
        assert opened.wait(20)
        ws_url = c.gateway_url.replace("http://", "ws://") + "/v1/ws"
        with connect(ws_url, open_timeout=10) as ws:
            ws.send(json.dumps({"id": "f", "op": "feed"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
            started = time.monotonic()
            c.stop(["gateway"])
            frames: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frames.append(json.loads(ws.recv(timeout=10)))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        reader.join(10)
        assert not reader.is_alive(), "the SSE stream was not ended"
        # Ended by the hub, not by uvicorn's 3 s graceful timeout cancelling the task.
        assert time.monotonic() - started < 3
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "unavailable"
    assert "shutting down" in frames[-1]["error"]["message"]
    data = [json.loads(line[5:]) for line in got if line.startswith("data:")]
    assert data and data[-1]["type"] == "error" and data[-1]["code"] == "unavailable"
    assert "shutting down" in data[-1]["message"] and "resume" in data[-1]["message"]
    assert "event: error" in got
    log = (tmp_path / "gateway.log").read_text()
    assert "CancelledError" not in log and "Traceback" not in log, log[-3000:]
    # uvicorn re-raises the SIGTERM it caught once it has shut down cleanly.
    assert c.procs["gateway"].returncode in (0, -signal.SIGTERM)


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory, fake_llm: Any) -> Path:
    from tests.conftest import write_home

    return write_home(tmp_path_factory.mktemp("stop-home"), fake_llm.base_url)
