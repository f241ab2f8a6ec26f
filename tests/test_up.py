"""``walrus up`` and the client commands, as a new user runs them: real processes, real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cluster import wait_for
from walrus_tasks.redis_server import free_port, reachable


@dataclass
class Up:
    process: subprocess.Popen[str]
    env: dict[str, str]
    url: str
    log: Path

    def walrus(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """``walrus up`` in a fresh directory, with no Redis where WALRUS_REDIS_URL points."""
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUS_")}
    env.update(
        WALRUS_HOME=str(tmp_path / ".walrus"),
        WALRUS_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        WALRUS_GATEWAY_PORT=str(port),
        WALRUS_URL=f"http://127.0.0.1:{port}",
    )
    log = tmp_path / "up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "walrus_tasks.cli", "up", "--concurrency", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    u = Up(process, env, f"http://127.0.0.1:{port}", log)
    try:
        wait_for(lambda: healthy(u.url) or process.poll() is not None, 60, 0.2, "walrus up")
        assert process.poll() is None, log.read_text()
        wait_for(lambda: "walrus chat assistant" in log.read_text(), 30, 0.1, "the ready panel")
        yield u
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_walrus_up_runs_an_embedded_redis_and_answers_the_default_agent(up: Up) -> None:
    text = up.log.read_text()
    assert "starting an embedded one" in text
    sent = up.walrus("send", "assistant", "hello")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "Hello! I am the walrus mock model" in sent.stdout
    history = up.walrus("history", "assistant", "--json")
    assert history.returncode == 0, history.stderr
    messages = json.loads(history.stdout)
    messages = messages["messages"] if isinstance(messages, dict) else messages
    assert [m["role"] for m in messages] == ["user", "assistant"]
    status = up.walrus("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)


def test_the_banner_comes_once_the_workers_answer_and_links_the_console(up: Up) -> None:
    from walrus_tasks.cli.up import workers_ready

    text = up.log.read_text()
    assert f"{up.url}/console" in text
    # Printed only once both workers answered a ping: they answer now, with no wait.
    assert workers_ready(up.env["WALRUS_REDIS_URL"], ("runs", "tools"))
    assert httpx.get(f"{up.url}/console", timeout=5).status_code == 200


def test_walrus_chat_streams_replies_line_by_line(up: Up) -> None:
    chat = up.walrus("chat", "assistant", "--sender", "chatter", stdin="hi\nagain\n/quit\n")
    assert chat.returncode == 0, chat.stdout + chat.stderr
    assert chat.stdout.count("Hello! I am the walrus mock model") == 2


def test_ctrl_c_stops_every_process_walrus_up_started(up: Up) -> None:
    assert reachable(up.env["WALRUS_REDIS_URL"]), "the embedded Redis listens where the URL says"
    os.killpg(up.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert up.process.wait(timeout=30) == 0, up.log.read_text()
    assert not healthy(up.url)
    assert not reachable(up.env["WALRUS_REDIS_URL"]), "the embedded Redis was left running"
