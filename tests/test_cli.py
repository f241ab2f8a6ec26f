"""The ``walrus`` CLI and the HTTP client, without a real gateway.

SSE handling runs against a tiny stdlib HTTP server serving canned event streams, including
connections cut mid-frame (end of body, and a broken chunked body).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from walrus_tasks.celery_app import ALL_QUEUES
from walrus_tasks.cli import chat
from walrus_tasks.cli.common import RET_CONFIG, RET_CONNECT, RET_ERROR, RET_OK
from walrus_tasks.cli.processes import QUEUES
from walrus_tasks.cli.supervisor import Supervisor
from walrus_tasks.cli.tables import Col, fit
from walrus_tasks.cli.up import watch
from walrus_tasks.client import Client, Event, GatewayUnreachable
from walrus_tasks.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, WalrusError
from walrus_tasks.redis_server import free_port
from walrus_tasks.sandbox import current as current_sandbox

RUN = "a" * 32
EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("1-0", {"type": "start", "run_id": RUN, "agent": "echo", "sender": "user"}),
    ("2-0", {"type": "text_start"}),
    ("3-0", {"type": "chunk", "content": "Hello"}),
    ("4-0", {"type": "chunk", "content": " from"}),
    ("5-0", {"type": "chunk", "content": " the mock."}),
    ("6-0", {"type": "text_end"}),
    ("7-0", {"type": "end", "status": "succeeded", "usage": {}, "model": "mock"}),
]
COMMANDS = ["up", "gateway", "worker", "beat", "flower", "init", "doctor", "status",
            "chat", "send", "cancel", "kill", "history", "runs", "cron", "reload", "events",
            "export", "import", "reply", "steer", "compact", "agents", "usage"]  # fmt: skip


def frame(entry_id: str, event: dict[str, Any]) -> bytes:
    return f"id: {entry_id}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeGateway

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _route(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, self.headers.get("Last-Event-ID")))
        route = self.server.routes.get((self.command, self.path))
        if route is None:
            self.json(404, {"error": {"code": "not_found", "message": f"no route {self.path}"}})
        else:
            route(self)

    do_GET = do_POST = _route

    def json(self, status: int, body: Any) -> None:
        self.body(status, "application/json", json.dumps(body).encode())

    def body(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def sse(self, cut_after: int | None = None, mode: str = "eof", events: Any = None) -> None:
        """Events after Last-Event-ID; with ``cut_after``, stop mid-frame after that many."""
        events = events or EVENTS
        after = self.headers.get("Last-Event-ID")
        start = next((i + 1 for i, (eid, _) in enumerate(events) if eid == after), 0)
        todo = events[start:] if cut_after is None else events[start : start + cut_after]
        chunks = [b": keep-alive\n\n"] + [frame(eid, ev) for eid, ev in todo]
        partial = b'id: 99-0\nevent: chunk\ndata: {"type": "chu' if cut_after is not None else b""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.close_connection = True
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
            if partial:  # announce more bytes than we send, then hang up
                self.wfile.write(b"%x\r\n%s" % (len(partial) + 50, partial))
            else:
                self.wfile.write(b"0\r\n\r\n")
        else:  # no length, no chunking: the body ends when the connection closes
            self.end_headers()
            self.wfile.write(b"".join(chunks) + partial)


class FakeGateway(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.routes: dict[tuple[str, str], Callable[[Handler], None]] = {}
        self.seen: list[tuple[str, str, str | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def cuts(
        self, path: str, cut_afters: list[int | None], mode: str = "eof", events: Any = None
    ) -> None:
        """Serve ``path`` as SSE; the n-th connection is cut after ``cut_afters[n]`` events."""
        plan = iter(cut_afters)
        self.routes[("GET", path)] = lambda h: h.sse(next(plan, None), mode, events)


def serve(server: FakeGateway) -> FakeGateway:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: FakeGateway) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    server = serve(FakeGateway())
    yield server
    stop(server)


def walrus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "walrus_tasks.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=60,
    )  # fmt: skip


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command(command: str | None) -> None:
    result = walrus(*([command] if command else []), "--help")
    assert result.returncode == RET_OK, result.stderr
    assert "Usage: walrus" in result.stdout


@pytest.mark.parametrize(
    "command", [["send"], ["runs"], ["cron", "add"], ["export"], ["usage"], []]
)
def test_help_shows_no_python_type_labels(command: list[str]) -> None:
    result = walrus(*command, "--help")
    assert result.returncode == RET_OK, result.stderr
    for label in ("<str>", "<bool>", "<int>", "<list[str]>"):
        assert label not in result.stdout, result.stdout
    assert re.search(r"--help\s+Show this message", result.stdout), result.stdout


def test_help_names_what_an_option_takes_and_keeps_choices() -> None:
    send = walrus("send", "--help").stdout
    assert re.search(r"--sender\s+-s\s+SENDER\s", send), send
    assert re.search(r"--token\s+TOKEN\s", send), send
    assert "<enqueue|reject|interrupt>" in send
    assert re.search(r"--wait\s+--no-wait\s+Stream", send), send  # a flag takes no value
    assert "(with --wait)" not in send and "--no-wait: print the run id" in send


def test_kill_is_a_hidden_alias_of_cancel(gateway: FakeGateway) -> None:
    assert " cancel " in walrus("--help").stdout and " kill " not in walrus("--help").stdout
    gateway.routes[("POST", "/v1/agents/echo/conversations/user/cancel")] = lambda h: h.json(
        200, {"run_id": RUN}
    )
    for verb in ("cancel", "kill"):
        done = walrus(verb, "echo", "--url", gateway.url)
        assert done.returncode == RET_OK, done.stderr
        assert f"cancelled run {RUN}" in done.stdout


def test_a_fitted_table_leaves_out_columns_by_rank_then_folds_names_and_never_cuts() -> None:
    cols = (Col("id", "id"), Col("name"), Col("text", "text", drop=1), Col("when", drop=2))
    row = ["x" * 32, "a-rather-long-name-here", "some words to wrap", "2026-12-05 12:00:00"]
    expected = {120: [], 80: ["text", "when"], 50: ["text", "when"]}
    for width, left_out in expected.items():
        table, dropped = fit(cols, [row], width)
        out = Console(width=width, record=True, file=io.StringIO())
        out.print(table)
        text = out.export_text()
        assert dropped == left_out
        assert "…" not in text and "x" * 32 in text, text
        assert max(map(len, text.splitlines())) <= width, text
        assert ("a-rather-long-name-here" in text) == (width >= 80), text  # folded at 50


def test_init_writes_a_starter_config_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = walrus("init", env={"WALRUS_HOME": str(home)})
    assert first.returncode == RET_OK, first.stderr
    assert (home / "config.toml").is_file()
    assert (home / "agents" / "assistant.toml").is_file()
    again = walrus("init", env={"WALRUS_HOME": str(home)})
    assert again.returncode == RET_OK and "already" in again.stdout


@pytest.mark.parametrize("command", ["up", "status", "gateway", "worker", "beat"])
def test_a_setting_that_is_not_valid_is_one_line_naming_it_and_never_its_value(
    command: str,
) -> None:
    secret = "s3cret-pw"
    env = {"WALRUS_GATEWAY_PORT": "", "WALRUS_LEASE_TTL": "-1",
           "WALRUS_REDIS_URL": f"redis://:{secret}@127.0.0.1:{free_port()}/0"}  # fmt: skip
    result = walrus(command, env=env)
    assert result.returncode == RET_CONFIG, result.stderr
    [line] = result.stderr.strip().splitlines()  # the CLI's, or the process's (walrus gateway)
    assert "WALRUS_GATEWAY_PORT: Input should be a valid integer" in line
    assert "WALRUS_LEASE_TTL: Input should be greater than 0" in line
    assert secret not in result.stderr and "Traceback" not in result.stderr


def test_send_to_an_unreachable_gateway_exits_with_ret_connect() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = walrus("send", "echo", "hi", "--url", url)
    assert result.returncode == RET_CONNECT
    assert f"cannot reach the gateway at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_send_waits_prints_the_reply_and_fails_on_a_failed_run(gateway: FakeGateway) -> None:
    gateway.routes[("POST", "/v1/agents/echo/messages")] = lambda h: h.json(
        202, {"run_id": RUN, "events_url": f"/v1/runs/{RUN}/events"}
    )
    gateway.cuts(f"/v1/runs/{RUN}/events", [2, None])
    ok = walrus("send", "echo", "hi", "--url", gateway.url)
    assert ok.returncode == RET_OK, ok.stderr
    assert ok.stdout.strip() == "Hello from the mock."
    assert RUN in ok.stderr

    end = {"type": "end", "status": "failed", "error": "provider exploded", "usage": {}}
    gateway.cuts(f"/v1/runs/{RUN}/events", [None], events=[*EVENTS[:-1], ("7-0", end)])
    failed = walrus("send", "echo", "hi", "--url", gateway.url)
    assert failed.returncode == RET_ERROR
    assert "provider exploded" in failed.stdout


def test_http_errors_print_the_server_message_and_status(gateway: FakeGateway) -> None:
    gateway.routes[("POST", "/v1/agents/echo/conversations/user/cancel")] = lambda h: h.json(
        409, {"error": {"code": "conflict", "message": "conversation is busy"}}
    )
    result = walrus("kill", "echo", env={"WALRUS_URL": gateway.url})
    assert result.returncode == RET_ERROR
    assert "conversation is busy" in result.stderr and "409" in result.stderr


@pytest.mark.parametrize(
    ("status", "why"),
    [(401, "missing or malformed bearer token"), (403, "this token may not use agent 'echo'")],
)
def test_a_401_or_403_says_how_to_pass_a_token(gateway: FakeGateway, status: int, why: str) -> None:
    code = {401: "unauthorized", 403: "forbidden"}[status]
    gateway.routes[("GET", "/v1/agents/echo")] = lambda h: h.json(
        status, {"error": {"code": code, "message": why}}
    )
    result = walrus("agents", "show", "echo", "--url", gateway.url)
    assert result.returncode == RET_ERROR
    [line] = result.stderr.strip().splitlines()
    assert why in line and f"HTTP {status}" in line
    assert "--token" in line and "WALRUS_TOKEN" in line


def test_doctor_fails_its_token_line_when_the_gateway_refuses_the_token(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.routes[("GET", "/healthz")] = lambda h: h.json(200, {"status": "ok"})
    refusal = {"error": {"code": "unauthorized", "message": "invalid bearer token"}}
    gateway.routes[("GET", "/v1/agents")] = lambda h: h.json(401, refusal)
    env = {"WALRUS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "WALRUS_HOME": str(tmp_path)}
    doctor = walrus("doctor", "--url", gateway.url, "--token", "x" * 20, env=env)
    assert doctor.returncode == RET_ERROR
    assert re.search(r"gateway\W+pass", doctor.stdout), doctor.stdout
    assert re.search(r"token\W+fail\W+invalid bearer token", doctor.stdout), doctor.stdout
    assert "WALRUS_TOKEN" in doctor.stdout

    gateway.routes[("GET", "/v1/agents")] = lambda h: h.json(200, {"agents": []})
    doctor = walrus("doctor", "--url", gateway.url, "--token", "x" * 20, env=env)
    assert re.search(r"token\W+pass\W+accepted", doctor.stdout), doctor.stdout


def test_a_non_json_answer_is_one_error_line(gateway: FakeGateway) -> None:
    gateway.routes[("GET", "/v1/agents/echo/conversations/user/history")] = lambda h: h.body(
        200, "text/html", b"<html>a login page</html>"
    )
    result = walrus("history", "echo", "--url", gateway.url)
    assert result.returncode == RET_ERROR
    [line] = result.stderr.strip().splitlines()
    assert "unexpected answer from" in line and "text/html" in line
    assert "(HTTP" not in line  # no response status to report: it was a 200
    assert "Traceback" not in result.stderr


def test_the_gateway_url_brackets_an_ipv6_host() -> None:
    port = free_port()
    env = {"WALRUS_GATEWAY_HOST": "::1", "WALRUS_GATEWAY_PORT": str(port)}
    result = walrus("send", "echo", "hi", env=env)
    assert result.returncode == RET_CONNECT, result.stderr
    assert f"cannot reach the gateway at http://[::1]:{port}" in result.stderr


@pytest.mark.parametrize("active", [RUN, "b" * 32, None])
def test_chat_ctrl_c_cancels_only_its_own_run(
    gateway: FakeGateway, capsys: pytest.CaptureFixture[str], active: str | None
) -> None:
    gateway.routes[("POST", "/v1/agents/echo/messages")] = lambda h: h.json(
        202, {"run_id": RUN, "events_url": f"/v1/runs/{RUN}/events"}
    )
    gateway.routes[("POST", "/v1/agents/echo/conversations/user/cancel")] = lambda h: h.json(
        200, {"run_id": active}
    )
    gateway.cuts(f"/v1/runs/{RUN}/events", [None])

    class CtrlC(Client):  # Ctrl-C before the first event of the first stream
        pressed = False

        def events(
            self, run_id: str, last_event_id: str | None = None
        ) -> Generator[Event, None, None]:
            if not self.pressed:
                self.pressed = True
                raise KeyboardInterrupt
            yield from super().events(run_id, last_event_id)

    with CtrlC(gateway.url) as c:
        chat.reply(c, "echo", None, "hi")
    out = capsys.readouterr()
    requests = [(method, path) for method, path, _ in gateway.seen]
    if active == RUN:  # ours: cancelled, and followed to its end
        assert f"cancelling run {RUN}" in out.err
        assert requests[-1] == ("GET", f"/v1/runs/{RUN}/events")
        assert "Hello from the mock." in out.out
    else:
        assert f"run {RUN} is queued and will still run" in out.err
        assert "cancelling" not in out.err
        assert len(requests) == 2  # the message and the kill


def test_runs_json_and_history_json(gateway: FakeGateway) -> None:
    info = {"run_id": RUN, "agent": "echo", "sender": "user", "status": "succeeded",
            "created_at": 1.5, "seq": 1}  # fmt: skip
    messages = [{"role": "user", "content": "hi", "run_id": RUN}]
    gateway.routes[("GET", f"/v1/runs/{RUN}")] = lambda h: h.json(200, info)
    gateway.routes[("GET", "/v1/agents/echo/conversations/bob/history")] = lambda h: h.json(
        200, {"messages": messages}
    )
    run = walrus("runs", RUN, "--json", "--url", gateway.url)
    assert run.returncode == RET_OK, run.stderr
    assert json.loads(run.stdout)["status"] == "succeeded"
    history = walrus("history", "echo", "-s", "bob", "--json", "--url", gateway.url)
    assert json.loads(history.stdout) == messages
    table = walrus("history", "echo", "-s", "bob", "--url", gateway.url)
    assert "user: hi" in table.stdout


def test_status_reads_redis_directly() -> None:
    result = walrus("status", "--json")
    assert result.returncode == RET_OK, result.stderr
    data = json.loads(result.stdout)
    assert set(data["queues"]) == {"walrus.runs", "walrus.tools", "walrus.control"}
    assert {"workers", "leases", "conversations", "active_runs"} <= set(data)


def test_status_and_doctor_without_redis_fail_clearly(tmp_path: Path) -> None:
    env = {"WALRUS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "WALRUS_HOME": str(tmp_path)}
    status = walrus("status", env=env)
    assert status.returncode == RET_CONNECT and "cannot reach Redis" in status.stderr
    doctor = walrus("doctor", "--url", f"http://127.0.0.1:{free_port()}", env=env)
    assert doctor.returncode == RET_ERROR
    for check in ("config", "redis", "workers", "gateway", "token"):
        assert re.search(rf"{check}\W+fail", doctor.stdout), doctor.stdout


AUTO_SANDBOX_RESULT = "fail" if current_sandbox().refused else "pass"


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        # auto: bubblewrap, or a failing line (bash refuses) where it cannot run
        ("auto", rf"sandbox: {current_sandbox().kind}\W+{AUTO_SANDBOX_RESULT}"),
        ("none", r"sandbox: none\W+pass\W+WALRUS_SANDBOX=none"),
    ],
)
def test_doctor_says_which_sandbox_bash_runs_in(tmp_path: Path, setting: str, line: str) -> None:
    env = {
        "WALRUS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "WALRUS_HOME": str(tmp_path),
        "WALRUS_SANDBOX": setting,
    }
    doctor = walrus("doctor", "--url", f"http://127.0.0.1:{free_port()}", env=env)
    assert re.search(line, doctor.stdout), doctor.stdout


def test_worker_queue_default_is_every_walrus_queue() -> None:
    assert ",".join(ALL_QUEUES) == QUEUES


# --- the client: SSE parsing and resumption -----------------------------------------------------


@pytest.mark.parametrize("mode", ["eof", "chunked"])
def test_events_resume_with_last_event_id_without_gap_or_duplicate(
    gateway: FakeGateway, mode: str
) -> None:
    gateway.cuts(f"/v1/runs/{RUN}/events", [3, 2, None], mode)
    with Client(gateway.url) as c:
        events = list(c.events(RUN))
    assert [e.id for e in events] == [eid for eid, _ in EVENTS]
    assert [e.data for e in events] == [ev for _, ev in EVENTS]
    assert [last for _, _, last in gateway.seen] == [None, "3-0", "5-0"]
    gateway.cuts(f"/v1/runs/{RUN}/events", [None], mode)  # a caller's own Last-Event-ID
    with Client(gateway.url) as c:
        assert [e.id for e in c.events(RUN, last_event_id="5-0")] == ["6-0", "7-0"]


def test_events_give_up_after_reconnecting_for_the_give_up_time(gateway: FakeGateway) -> None:
    gateway.cuts(f"/v1/runs/{RUN}/events", [0] * 100)
    started = time.monotonic()
    with Client(gateway.url, stream_give_up=0.5) as c, pytest.raises(GatewayUnreachable) as info:
        list(c.events(RUN))
    assert "gave up reconnecting" in info.value.message
    assert time.monotonic() - started >= 0.5
    assert 2 <= len(gateway.seen) <= 5  # backed off, not hammering


def test_events_ride_out_a_gateway_that_is_down_for_two_seconds(gateway: FakeGateway) -> None:
    path = f"/v1/runs/{RUN}/events"
    port = gateway.server_address[1]
    restarted: list[FakeGateway] = []

    def come_back() -> None:
        server = FakeGateway(port)
        server.cuts(path, [None])
        restarted.append(serve(server))

    def serve_then_go_down(h: Handler) -> None:
        h.sse(cut_after=3)
        stop(gateway)  # nothing listens on the port from here on
        threading.Timer(2.0, come_back).start()

    gateway.routes[("GET", path)] = serve_then_go_down
    try:
        with Client(gateway.url) as c:
            events = list(c.events(RUN))
    finally:
        for server in restarted:
            stop(server)
    assert [e.id for e in events] == [eid for eid, _ in EVENTS]
    assert [last for _, _, last in restarted[0].seen] == ["3-0"]


def test_events_retry_a_502_503_or_504_answer(gateway: FakeGateway) -> None:
    answers = iter([502, 503, 504])

    def flaky(h: Handler) -> None:
        status = next(answers, None)
        if status is None:
            h.sse()
        else:
            h.body(status, "text/html", b"<html>bad gateway</html>")

    gateway.routes[("GET", f"/v1/runs/{RUN}/events")] = flaky
    with Client(gateway.url) as c:
        assert [e.id for e in c.events(RUN)] == [eid for eid, _ in EVENTS]
    assert len(gateway.seen) == 4


@pytest.mark.parametrize(
    ("route", "body", "call"),
    [
        ("/v1/agents/echo/conversations/user/history", {"msgs": []}, lambda c: c.history("echo")),
        ("/v1/agents", [], lambda c: c.agents()),
        (f"/v1/runs/{RUN}/events", b"data: {not json\n\n", lambda c: list(c.events(RUN))),
        (f"/v1/runs/{RUN}/events", b"data: [1]\n\n", lambda c: list(c.events(RUN))),
    ],
)
def test_an_answer_of_another_shape_is_a_walrus_error(
    gateway: FakeGateway, route: str, body: Any, call: Callable[[Client], object]
) -> None:
    if isinstance(body, bytes):
        gateway.routes[("GET", route)] = lambda h: h.body(200, "text/event-stream", body)
    else:
        gateway.routes[("GET", route)] = lambda h: h.json(200, body)
    with Client(gateway.url) as c, pytest.raises(WalrusError, match="unexpected answer from"):
        call(c)


@pytest.mark.parametrize(
    ("status", "exc"),
    [(404, NotFound), (409, Conflict), (413, PayloadTooLarge), (422, InvalidInput),
     (500, WalrusError)],
)  # fmt: skip
def test_error_bodies_map_to_walrus_errors(
    gateway: FakeGateway, status: int, exc: type[WalrusError]
) -> None:
    gateway.routes[("GET", f"/v1/runs/{RUN}")] = lambda h: h.json(
        status, {"error": {"code": "x", "message": "told so"}}
    )
    with Client(gateway.url) as c, pytest.raises(exc, match="told so") as info:
        c.run(RUN)
    assert info.value.status == status


# --- walrus up's supervisor ---------------------------------------------------------------------


def test_supervisor_restarts_a_crashed_child_gives_up_after_five_and_stops_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = tmp_path / "stubborn-ignores-sigterm"
    sup = Supervisor(env=dict(os.environ), restart_delay=0.05)
    sup.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    sup.spawn("stubborn", [sys.executable, "-c",
              "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)", str(ready)])  # fmt: skip
    # The crashes come once the stubborn child ignores SIGTERM, so the kill path is exercised.
    sup.spawn("crasher", [sys.executable, "-c",
              "import pathlib, sys, time\n"
              "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.01)\n"
              "print('no luck this time')\n"
              f"raise SystemExit({RET_CONFIG})", str(ready)])  # fmt: skip
    sleeper = sup.children["sleeper"].process
    assert watch(sup, f"http://127.0.0.1:{free_port()}", lambda: None) == RET_ERROR
    crasher = sup.children["crasher"]
    assert crasher.restarts == 4  # five exits: the first run and four restarts
    assert sup.children["sleeper"].process is sleeper  # the others kept running
    assert sleeper is not None and sleeper.poll() is None
    out = capsys.readouterr()
    assert out.err.count(f"crasher exited with exit code {RET_CONFIG}; restarting in") == 4
    assert "crasher failed 5 times within 60 s" in out.err
    assert "no luck this time" in out.err.split("failed 5 times")[1]  # its last lines
    sup.stop(timeout=1.0)
    assert sleeper.returncode == -15  # SIGTERM
    stubborn = sup.children["stubborn"].process
    assert stubborn is not None and stubborn.returncode == -9  # killed after the timeout
