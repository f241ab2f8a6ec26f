"""``walrus up`` and the client commands, as a new user runs them: real processes, real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def start_up(tmp_path: Path, **env_vars: str) -> Up:
    """``walrus up`` in ``tmp_path`` (HOME, WALRUS_HOME, TMPDIR there) on a free gateway port.

    ``env_vars`` are added to its environment; no WALRUS_ variable is inherited.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUS_")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(
        HOME=str(tmp_path),
        TMPDIR=str(tmp_path / "tmp"),
        WALRUS_HOME=str(tmp_path / ".walrus"),
        WALRUS_GATEWAY_PORT=str(port),
        WALRUS_URL=f"http://127.0.0.1:{port}",
        **env_vars,
    )
    log = tmp_path / "up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "walrus_tasks.cli", "up", "--concurrency", "2"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return Up(process, env, f"http://127.0.0.1:{port}", log)


def wait_ready(u: Up) -> None:
    """Wait for the gateway's health and the ready panel (sent once the workers answer)."""
    wait_for(lambda: healthy(u.url) or u.process.poll() is not None, 90, 0.2, "walrus up")
    assert u.process.poll() is None, u.log.read_text()
    wait_for(lambda: "walrus chat assistant" in u.log.read_text(), 60, 0.1, "the ready panel")


def stop(u: Up) -> None:
    """Ctrl-C ``walrus up`` if it still runs (SIGKILL to its group if it hangs)."""
    if u.process.poll() is None:
        os.killpg(u.process.pid, signal.SIGINT)
        try:
            u.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(u.process.pid, signal.SIGKILL)
            u.process.wait()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """``walrus up`` in a fresh directory, with no Redis where WALRUS_REDIS_URL points."""
    u = start_up(tmp_path, WALRUS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        wait_ready(u)
        yield u
    finally:
        stop(u)


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


def children(u: Up) -> dict[str, dict[str, Any]]:
    """``walrus status --json``'s view of ``walrus up``'s children (name → pid, restarts…)."""
    status = u.walrus("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    up_state = json.loads(status.stdout)["up"]
    assert up_state is not None, status.stdout
    result: dict[str, dict[str, Any]] = up_state["children"]
    return result


def group_members(pgid: int) -> list[int]:
    """PIDs of the processes in process group ``pgid`` (a child and, for a worker, its pool)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.timeout(600)
def test_each_child_killed_is_restarted_and_the_next_message_is_answered(tmp_path: Path) -> None:
    # No WALRUS_REDIS_URL: walrus up embeds its Redis on a port of its own, never the default
    # one, and `walrus status` (no URL set either) finds it from up's state file.
    from walrus_tasks.config import init_home

    init_home(tmp_path / ".walrus")  # the starter config, and an agent slow enough to kill under
    (tmp_path / ".walrus" / "agents" / "slow.toml").write_text(
        'model = "mock"\n[mock]\nreply = "one two three four five six seven eight"\n'
        "chunk_delay_ms = 1000\n"
    )
    u = start_up(tmp_path)
    try:
        wait_ready(u)
        assert "WALRUS_REDIS_URL is not set; starting an embedded Redis" in u.log.read_text()
        before = children(u)
        assert set(before) == {"redis", "gateway", "runs", "tools", "beat"}
        state = json.loads((tmp_path / ".walrus" / "run" / "up.json").read_text())
        assert not state["redis_url"].startswith("redis://127.0.0.1:6379")
        for n, name in enumerate(["runs", "tools", "gateway", "beat", "redis"]):
            streaming, got = None, bytearray()
            if name == "runs":  # a reply streaming to a client while its worker is killed
                streaming = subprocess.Popen(
                    [sys.executable, "-m", "walrus_tasks.cli", "send", "slow", "hi"],
                    env=u.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                assert streaming.stdout is not None
                fd = streaming.stdout.fileno()
                os.set_blocking(fd, False)

                def streamed(fd: int = fd, got: bytearray = got) -> bool:
                    with contextlib.suppress(BlockingIOError):
                        got.extend(os.read(fd, 4096))
                    return b"two" in got

                wait_for(streamed, 60, 0.05, "the second streamed word")
                os.set_blocking(fd, True)
            os.kill(before[name]["pid"], signal.SIGKILL)

            def restarted(name: str = name) -> bool:
                state = json.loads((tmp_path / ".walrus" / "run" / "up.json").read_text())
                now = state["children"][name]
                return bool(now["state"] == "running" and now["restarts"] == 1)

            wait_for(restarted, 60, 0.2, f"{name} restarted")
            assert u.process.poll() is None, u.log.read_text()
            text = u.log.read_text()
            assert f"{name} exited with signal SIGKILL; restarting in 0.5 s" in text
            now = children(u)
            assert now[name]["last_exit"] == "signal SIGKILL"
            others = [c for c in before if c != name and now[c]["restarts"] == 0]
            assert all(now[c]["pid"] == before[c]["pid"] for c in others)  # they kept serving
            wait_for(lambda: healthy(u.url), 60, 0.2, "the gateway")
            sent = u.walrus("send", "assistant", f"hello {n}", "--sender", f"after-{name}")
            assert sent.returncode == 0, sent.stdout + sent.stderr + u.log.read_text()[-3000:]
            assert "Hello! I am the walrus mock model" in sent.stdout
            if streaming is not None:  # its stream stayed open: the run resumed, the reply ended
                rest, _ = streaming.communicate(timeout=120)
                assert streaming.returncode == 0, (got + rest).decode()
                assert b"eight" in rest
        assert all(c["restarts"] == 1 for c in children(u).values())
    finally:
        stop(u)
    assert u.process.returncode == 0, u.log.read_text()[-3000:]


def test_kill_9_of_walrus_up_takes_its_children_along(tmp_path: Path) -> None:
    u = start_up(tmp_path)
    pids: list[int] = []
    try:
        wait_ready(u)
        pids = [c["pid"] for c in children(u).values()]
        assert all(group_members(pid) for pid in pids)
        # A second walrus up of the same config directory refuses, naming the first.
        second = subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", "up"],
            env=u.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert f"walrus up already runs for {tmp_path / '.walrus'}" in second.stderr
        os.kill(u.process.pid, signal.SIGKILL)  # what the OOM killer does
        u.process.wait()
        # Each child and what it started (a worker's pool) is gone: their groups are empty.
        wait_for(lambda: not any(group_members(pid) for pid in pids), 30, 0.2, "no child left")
    finally:
        stop(u)
        for pid in pids:
            for member in group_members(pid):
                os.kill(member, signal.SIGKILL)
    assert list((tmp_path / "tmp").iterdir()) == []  # no temp directory left behind (beat's)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".walrus", "tmp", "up.log"]


def test_a_child_failing_five_times_in_a_minute_stops_walrus_up_saying_which_and_why(
    tmp_path: Path,
) -> None:
    # A gateway that cannot start: a `gateway` package ahead of the real one on the path.
    fake = tmp_path / "fake" / "gateway"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import sys\nprint('fake gateway: cannot bind, giving up', flush=True)\nsys.exit(3)\n"
    )
    u = start_up(tmp_path, PYTHONPATH=str(tmp_path / "fake"))
    try:
        assert u.process.wait(timeout=90) == 1
    finally:
        stop(u)
    text = u.log.read_text()
    assert text.count("gateway exited with exit code 3; restarting in") == 4
    assert "gateway failed 5 times within 60 s (last: exit code 3); stopping walrus up" in text
    last_lines = text.split("stopping walrus up")[1]
    assert "fake gateway: cannot bind, giving up" in last_lines
    assert not (tmp_path / ".walrus" / "run" / "up.json").exists()


def test_a_refused_walrus_up_writes_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUS_")}
        env.update(HOME=str(tmp_path), WALRUS_HOME=str(tmp_path / ".walrus"))
        env.update(WALRUS_GATEWAY_PORT=str(port))
        refused = subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", "up"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"port {port} on 127.0.0.1 is in use" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # no starter config, no state file


def test_a_state_file_left_by_a_killed_walrus_up_is_ignored(tmp_path: Path) -> None:
    from walrus_tasks.cli.up_state import read_state, state_path, write_state

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    write_state(tmp_path, {"pid": int(dead.stdout), "redis_url": "redis://127.0.0.1:1/0"})
    assert state_path(tmp_path).stat().st_mode & 0o077 == 0  # the URL may carry a password
    assert read_state(tmp_path) is None  # no second `walrus up` refused, no Redis adopted
    write_state(tmp_path, {"pid": os.getpid(), "redis_url": "redis://127.0.0.1:1/0"})
    assert read_state(tmp_path) == {"pid": os.getpid(), "redis_url": "redis://127.0.0.1:1/0"}
