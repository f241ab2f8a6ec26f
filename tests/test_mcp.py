"""MCP servers: sessions to a real stdio and a real streamable-HTTP server (tests/mcp_server.py),
reconnection after the server dies, the ``<server>__<tool>`` tool source, and a round trip
through real workers."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import redis

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url, tool_context
from tests.fakellm import FakeReply
from walrus_tasks.config import AgentConfig, Config, McpServerConfig
from walrus_tasks.errors import Cancelled
from walrus_tasks.redis_server import RedisServer, free_port
from worker.mcp_client import McpFailed, McpSessions, sessions
from worker.tools import ToolContext, call_tool, specs_for
from worker.tools.mcp import mcp_tools, render, tool_name

SERVER = Path(__file__).with_name("mcp_server.py")
STDIO = McpServerConfig(command=sys.executable, args=[str(SERVER), "stdio"], timeout=20)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of ours stays a zombie until reaped; count that as dead (and one reaped
    # between the kill and the read too).
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return not status.split(") ")[-1].startswith("Z")


class HttpServer:
    """tests/mcp_server.py over streamable HTTP on a fixed port, started and ended by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.log_dir / "mcp-http.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SERVER), "http", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._listening, 20, 0.05, f"MCP HTTP server on port {self.port}")

    def _listening(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, (self.log_dir / "mcp-http.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def call(m: McpSessions, *args: Any, **kwargs: Any) -> tuple[str, bool]:
    """``(output, is_error)`` as the model sees them."""
    result = m.call(*args, **kwargs)
    return render(result), bool(result.is_error)


@pytest.fixture
def mgr() -> Iterator[McpSessions]:
    m = McpSessions()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def process_sessions() -> Iterator[None]:
    """For tests that go through the tool source: close the process's sessions afterwards."""
    yield
    sessions().close()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- sessions ----------------------------------------------------------------------------------


def test_a_stdio_server_lists_its_tools_and_answers_calls(mgr: McpSessions, tmp_path: Path) -> None:
    tools = {t.name: t for t in mgr.tools("calc", STDIO, tmp_path)}
    assert {"add", "echo", "pid", "fail", "sleep", "dotted.name"} <= set(tools)
    assert tools["add"].input_schema["required"] == ["a", "b"]
    assert call(mgr, "calc", STDIO, tmp_path, "add", {"a": 2, "b": 3}) == ("5", False)
    assert call(mgr, "calc", STDIO, tmp_path, "echo", {"text": "héllo ✓"}) == ("héllo ✓", False)
    # One session serves every call: the server process stays the same.
    pid, _ = call(mgr, "calc", STDIO, tmp_path, "pid", {})
    assert call(mgr, "calc", STDIO, tmp_path, "pid", {}) == (pid, False)


def test_a_streamable_http_server_lists_its_tools_and_answers_calls(
    mgr: McpSessions, http_server: HttpServer, tmp_path: Path
) -> None:
    server = McpServerConfig(url=http_server.url, timeout=20)
    assert "add" in {t.name for t in mgr.tools("web", server, tmp_path)}
    assert call(mgr, "web", server, tmp_path, "add", {"a": 2, "b": 3}) == ("5", False)
    assert http_server.proc is not None
    assert call(mgr, "web", server, tmp_path, "pid", {}) == (str(http_server.proc.pid), False)


def test_error_results_are_errors(mgr: McpSessions, tmp_path: Path) -> None:
    output, is_error = call(mgr, "calc", STDIO, tmp_path, "fail", {"message": "boom"})
    assert is_error and "boom" in output
    output, is_error = call(mgr, "calc", STDIO, tmp_path, "no_such_tool", {})
    assert is_error and "no_such_tool" in output
    output, is_error = call(mgr, "calc", STDIO, tmp_path, "add", {"a": "x", "b": 1})
    assert is_error and "add" in output


def test_a_killed_stdio_server_is_restarted_on_the_next_call(
    mgr: McpSessions, tmp_path: Path
) -> None:
    first = int(call(mgr, "calc", STDIO, tmp_path, "pid", {})[0])
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not alive(first), 10, what="the stdio server to die")
    output, is_error = call(mgr, "calc", STDIO, tmp_path, "pid", {})
    assert not is_error
    second = int(output)
    assert second != first and alive(second)
    assert call(mgr, "calc", STDIO, tmp_path, "add", {"a": 1, "b": 1}) == ("2", False)


def test_a_restarted_http_server_is_reached_again(
    mgr: McpSessions, http_server: HttpServer, tmp_path: Path
) -> None:
    server = McpServerConfig(url=http_server.url, timeout=20)
    first = call(mgr, "web", server, tmp_path, "pid", {})[0]
    http_server.stop()
    http_server.start()
    second, is_error = call(mgr, "web", server, tmp_path, "pid", {})
    assert not is_error and second != first
    assert http_server.proc is not None and second == str(http_server.proc.pid)


def test_a_server_that_stays_down_fails_the_call_clearly(
    mgr: McpSessions, http_server: HttpServer, tmp_path: Path
) -> None:
    server = McpServerConfig(url=http_server.url, timeout=5)
    assert call(mgr, "web", server, tmp_path, "add", {"a": 1, "b": 2}) == ("3", False)
    http_server.stop()
    with pytest.raises(McpFailed, match="connect"):
        call(mgr, "web", server, tmp_path, "add", {"a": 1, "b": 2})
    # Listing does not retry a server that just failed: the run goes on without its tools.
    started = time.monotonic()
    with pytest.raises(McpFailed, match="unreachable"):
        mgr.tools("web", server, tmp_path)
    assert time.monotonic() - started < 1


def test_a_stdio_command_that_does_not_exist_is_unavailable(
    mgr: McpSessions, tmp_path: Path
) -> None:
    server = McpServerConfig(command=str(tmp_path / "no-such-server"), timeout=5)
    with pytest.raises(McpFailed):
        mgr.tools("ghost", server, tmp_path)


def test_a_slow_call_times_out_and_the_session_survives(
    mgr: McpSessions, http_server: HttpServer, tmp_path: Path
) -> None:
    # Over HTTP the server is up already, so a 1 s timeout leaves time for the handshake.
    server = McpServerConfig(url=http_server.url, timeout=1)
    started = time.monotonic()
    with pytest.raises(McpFailed, match="within 1s"):
        call(mgr, "web", server, tmp_path, "sleep", {"seconds": 30})
    assert time.monotonic() - started < 5
    assert call(mgr, "web", server, tmp_path, "add", {"a": 2, "b": 2}) == ("4", False)


def test_a_kill_cancels_the_call_in_flight(mgr: McpSessions, tmp_path: Path) -> None:
    mgr.tools("calc", STDIO, tmp_path)
    killed = threading.Event()
    threading.Timer(0.3, killed.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        call(mgr, "calc", STDIO, tmp_path, "sleep", {"seconds": 30}, cancelled=killed.is_set)
    assert time.monotonic() - started < 3
    assert call(mgr, "calc", STDIO, tmp_path, "echo", {"text": "still here"}) == (
        "still here",
        False,
    )


def test_closing_stops_the_stdio_server(tmp_path: Path) -> None:
    m = McpSessions()
    pid = int(call(m, "calc", STDIO, tmp_path, "pid", {})[0])
    started = time.monotonic()
    m.close()
    assert time.monotonic() - started < 8
    wait_for(lambda: not alive(pid), 10, what="the stdio server to exit")


# --- the tool source -----------------------------------------------------------------------------


def test_tool_names_are_prefixed_and_made_acceptable_to_llm_apis() -> None:
    assert tool_name("calc", "add") == "calc__add"
    assert tool_name("calc", "dotted.name") == "calc__dotted_name"
    assert tool_name("calc", "files/read me") == "calc__files_read_me"
    assert tool_name("calc", "x" * 60) is None


def test_results_render_text_else_structured_content() -> None:
    text = types.TextContent(type="text", text="a")
    assert render(types.CallToolResult(content=[text, text])) == "a\na"
    structured = types.CallToolResult(content=[], structured_content={"n": 5})
    assert json.loads(render(structured)) == {"n": 5}
    both = types.CallToolResult(content=[text], structured_content={"n": 5})
    assert render(both) == "a"


def ctx_for(r: redis.Redis, config: Config, agent: str, tmp_path: Path) -> ToolContext:
    return tool_context(r, config.agents[agent], tmp_path, config)


@pytest.mark.usefixtures("process_sessions")
def test_agents_get_the_tools_of_the_servers_they_list(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A relative path in args resolves against the config directory (here: tests/).
    config = Config(
        home=SERVER.parent,
        agents={
            "calcy": AgentConfig(name="calcy", mcps=["calc"]),
            "plain": AgentConfig(name="plain", tools=["clock"]),
        },
        mcps={"calc": McpServerConfig(command=sys.executable, args=["mcp_server.py", "stdio"])},
    )
    names = {s.name for s in specs_for(config.agents["calcy"], config)}
    assert {"calc__add", "calc__echo", "calc__pid", "calc__dotted_name"} <= names
    add = mcp_tools(config.agents["calcy"], config)["calc__add"].spec
    assert add.description == "Add two numbers."
    assert add.parameters["required"] == ["a", "b"]
    assert "calc__add" not in {s.name for s in specs_for(config.agents["plain"], config)}

    r = redis.Redis.from_url(redis_db_url(redis_server), decode_responses=True)
    try:
        calcy = ctx_for(r, config, "calcy", tmp_path)
        assert call_tool("calc__add", {"a": 2, "b": 3}, calcy) == ("5", False)
        assert call_tool("calc__dotted_name", {}, calcy) == ("dotted", False)
        output, is_error = call_tool("calc__fail", {"message": "boom"}, calcy)
        assert is_error and "boom" in output
        plain = ctx_for(r, config, "plain", tmp_path)
        assert call_tool("calc__add", {"a": 2, "b": 3}, plain) == (
            "tool not available: calc__add",
            True,
        )
    finally:
        r.close()


@pytest.mark.usefixtures("process_sessions")
def test_an_unreachable_server_offers_no_tools(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(
        home=tmp_path,
        agents={"calcy": AgentConfig(name="calcy", mcps=["down"])},
        mcps={"down": McpServerConfig(url=f"http://127.0.0.1:{free_port()}/mcp", timeout=5)},
    )
    with caplog.at_level(logging.WARNING, logger="walrus.mcp"):
        assert mcp_tools(config.agents["calcy"], config) == {}
    assert "MCP server down unavailable" in caplog.text


# --- through real workers ------------------------------------------------------------------------

MODEL = "m-mcp1"
OUTSIDER_MODEL = "m-mcp2"


@pytest.fixture
def mcp_cluster(redis_server: RedisServer, tmp_path: Path, fake_llm: Any) -> Iterator[Cluster]:
    agents = {
        "calcy": f'model = "fake/{MODEL}"\nmcps = ["calc"]\n',
        "nocalc": f'model = "fake/{OUTSIDER_MODEL}"\n',
    }
    home = agents_home(tmp_path / "home", fake_llm.base_url, agents)
    with (home / "config.toml").open("a") as f:
        f.write(
            textwrap.dedent(f"""
            [mcps.calc]
            command = {json.dumps(sys.executable)}
            args = [{json.dumps(str(SERVER))}, "stdio"]
            timeout = 20
            """)
        )
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    with running(c):
        yield c


def tool_results(c: Cluster, run_id: str) -> list[dict[str, Any]]:
    return [e for _, e in c.events(run_id) if e["type"] == "tool_result"]


def test_an_agent_calls_an_mcp_tool_through_real_workers(
    mcp_cluster: Cluster, fake_llm: Any
) -> None:
    c = mcp_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("calc__add", {"a": 2, "b": 3})]),
        FakeReply(tool_calls=[("calc__pid", {})]),
        FakeReply(text="It is 5."),
        model=MODEL,
    )
    run_id = c.send("calcy", "What is 2 + 3?", "alice")
    assert c.wait_run(run_id)["status"] == "succeeded"
    add, pid = tool_results(c, run_id)
    assert (add["name"], add["output"], add["is_error"]) == ("calc__add", "5", False)
    assert c.history("calcy", "alice")[-1]["content"] == "It is 5."
    offered = [t["function"]["name"] for t in fake_llm.requests_for(MODEL)[0]["tools"]]
    assert "calc__add" in offered and "calc__pid" in offered

    # The worker's stdio server ends with the worker.
    server_pid = int(pid["output"])
    assert alive(server_pid)
    c.stop()
    wait_for(lambda: not alive(server_pid), 15, what="the worker's MCP server to exit")


def test_an_agent_that_does_not_list_the_server_cannot_call_its_tools(
    mcp_cluster: Cluster, fake_llm: Any
) -> None:
    c = mcp_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("calc__add", {"a": 2, "b": 3})]),
        FakeReply(text="No calculator."),
        model=OUTSIDER_MODEL,
    )
    run_id = c.send("nocalc", "What is 2 + 3?", "bob")
    assert c.wait_run(run_id)["status"] == "succeeded"
    [result] = tool_results(c, run_id)
    assert result["output"] == "tool not available: calc__add" and result["is_error"]
    offered = fake_llm.requests_for(OUTSIDER_MODEL)[0].get("tools") or []
    assert all(not t["function"]["name"].startswith("calc__") for t in offered)
