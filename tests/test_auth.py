"""Auth: bearer tokens on every ``/v1`` route, tokens limited to agents, no open gateway off
loopback, and a password-protected Redis end to end."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.cluster import Cluster, parse_sse, running, wait_for
from tests.conftest import redis_db_url, write_home
from walrus_tasks import indexes
from walrus_tasks.config import GatewayConfig, load_config
from walrus_tasks.errors import ConfigError
from walrus_tasks.redis_server import RedisServer, free_port, reachable, start_redis

FULL = f"full-{uuid.uuid4().hex}"
ECHO_ONLY = f"echo-only-{uuid.uuid4().hex}"
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def auth_home(tmp_path_factory: pytest.TempPathFactory, fake_llm: Any) -> Path:
    """The test agents, with one full-access token (from the environment) and one for echo."""
    home = write_home(tmp_path_factory.mktemp("auth-home"), fake_llm.base_url)
    with (home / "config.toml").open("a") as f:
        f.write(
            "\n[gateway]\n"
            'tokens = ["${WALRUS_TEST_FULL_TOKEN}", '
            f'{{ token = "{ECHO_ONLY}", agents = ["echo"] }}]\n'
        )
    return home


@pytest.fixture(scope="module")
def auth_cluster(
    redis_server: RedisServer, auth_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway bound to every interface (allowed: it has tokens) and one worker."""
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=auth_home,
        log_dir=tmp_path_factory.mktemp("l"),
        env_extra={"WALRUS_TEST_FULL_TOKEN": FULL, "WALRUS_GATEWAY_HOST": "0.0.0.0"},
    )
    with running(c):
        yield c


def client(cluster: Cluster, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=cluster.gateway_url, timeout=30, headers=headers)


def send(cluster: Cluster, token: str, agent: str, sender: str) -> str:
    with client(cluster, token) as c:
        resp = c.post(f"/v1/agents/{agent}/messages", json={"content": "hi", "sender": sender})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def run_status(cluster: Cluster, token: str, run_id: str) -> str:
    with client(cluster, token) as c:
        resp = c.get(f"/v1/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


def wait_run(cluster: Cluster, token: str, run_id: str) -> str:
    status = wait_for(lambda: (s := run_status(cluster, token, run_id)) in TERMINAL and s, 60)
    return str(status)


def snapshot(cluster: Cluster) -> dict[str, Any]:
    """Every walrus key, once the cluster is idle."""
    r = cluster.redis()
    wait_for(lambda: indexes.sizes(r, "runs:active", "leases") == [0, 0], 30)
    return {k: r.dump(k) for k in r.scan_iter("walrus:*")}


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["message"]


# --- every /v1 route needs a known token ---------------------------------------------------


def test_every_v1_route_refuses_a_request_without_a_token(auth_cluster: Cluster) -> None:
    run_id = send(auth_cluster, FULL, "echo", "t-open")
    assert wait_run(auth_cluster, FULL, run_id) == "succeeded"
    values = {"agent": "echo", "sender": "t-open", "run_id": run_id, "model": "echo"}
    with client(auth_cluster) as c:
        paths = c.get("/openapi.json").json()["paths"]
    operations = [
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], "x"), path))
        for path, ops in paths.items()
        if path.startswith("/v1/")
        for method in ops
    ]
    assert ("POST", "/v1/agents/echo/messages") in operations
    assert ("GET", f"/v1/runs/{run_id}/events") in operations
    before = snapshot(auth_cluster)
    with client(auth_cluster) as c:
        for method, path in [*operations, ("GET", "/v1/nowhere"), ("POST", "/v1")]:
            body = {"content": "hi", "model": "echo", "messages": []} if method == "POST" else None
            resp = c.request(method, path, json=body)
            assert_error(resp, 401, "unauthorized")
            assert resp.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(auth_cluster) == before


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {uuid.uuid4().hex}",  # unknown
        f"Bearer {FULL}x",  # a known token's prefix must not pass
        f"Bearer {FULL[:-1]}",
        f"Basic {FULL}",  # another scheme
        "Bearer",  # no token
        f"Bearer {FULL} {FULL}",  # two tokens
        FULL,  # no scheme
    ],
    # ids that do not hold the random tokens: every pytest-xdist worker collects the same tests
    ids=["unknown", "prefix", "truncated", "basic", "empty", "two", "no-scheme"],
)
def test_a_wrong_or_malformed_token_is_refused(auth_cluster: Cluster, authorization: str) -> None:
    with client(auth_cluster) as c:
        resp = c.get("/v1/agents", headers={"Authorization": authorization})
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert FULL not in resp.text


def test_healthz_and_the_api_docs_stay_open(auth_cluster: Cluster) -> None:
    with client(auth_cluster) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        schema = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/agents"]["get"]["security"] == [{"bearer": []}]


def test_a_full_access_token_uses_every_agent(auth_cluster: Cluster) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    run_id = send(auth_cluster, FULL, "echo", sender)
    with (
        client(auth_cluster) as c,
        c.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={"Authorization": f"bearer {FULL}"}
        ) as resp,  # any case
    ):
        assert resp.status_code == 200
        events = [e for _, e in parse_sse(resp.iter_lines())]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    with client(auth_cluster, FULL) as c:
        history = c.get(f"/v1/agents/echo/conversations/{sender}/history").json()["messages"]
        agents = {a["name"] for a in c.get("/v1/agents").json()["agents"]}
        assert c.get("/v1/agents/slow").status_code == 200
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert {"echo", "slow", "paced"} <= agents


def test_the_cli_says_how_to_pass_a_token_and_doctor_checks_it(auth_cluster: Cluster) -> None:
    env = {k: v for k, v in auth_cluster.env().items() if k != "WALRUS_TOKEN"}
    env |= {"WALRUS_URL": auth_cluster.gateway_url, "COLUMNS": "200"}

    def walrus(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", *args],
            env=env | ({"WALRUS_TOKEN": token} if token else {}),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    refused = walrus("agents", "ls")
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    assert "--token" in refused.stderr and "WALRUS_TOKEN" in refused.stderr
    assert "echo" in walrus("agents", "ls", token=FULL).stdout
    assert re.search(r"token\W+fail\W+missing", walrus("doctor").stdout)
    for token in (FULL, ECHO_ONLY):  # a limited token is a token the gateway knows
        assert re.search(r"token\W+pass\W+accepted", walrus("doctor", token=token).stdout)


def test_with_tokens_any_host_is_served_but_a_cross_origin_websocket_is_not(
    auth_cluster: Cluster,
) -> None:
    # Bearer tokens are not cookies: a page cannot make a browser send one by itself, so a
    # gateway with tokens serves any Host (it sits behind proxies) and leaves HTTP to the token.
    with client(auth_cluster, FULL) as c:
        assert c.get("/v1/agents", headers={"Host": "gateway.example"}).status_code == 200
    url = auth_cluster.gateway_url.replace("http://", "ws://") + "/v1/ws"
    bearer = {"Authorization": f"Bearer {FULL}"}
    # A proxy that injects the token would otherwise hand it to every page that opens a socket.
    with pytest.raises(InvalidStatus) as refused:
        connect(
            url, open_timeout=10, additional_headers={**bearer, "Origin": "http://evil.example"}
        )
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["code"] == "forbidden"
    for origin in ({}, {"Origin": "http://localhost:3000"}):
        with connect(url, open_timeout=10, additional_headers={**bearer, **origin}) as conn:
            conn.send(json.dumps({"id": 1, "op": "ping"}))
            assert json.loads(conn.recv(timeout=10))["type"] == "pong"


# --- a token limited to agents ---------------------------------------------------------------


def test_a_token_limited_to_echo_is_refused_every_other_agent(auth_cluster: Cluster) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    slow_run = send(auth_cluster, FULL, "slow", sender)  # a slow run and conversation to hide
    wait_for(lambda: run_status(auth_cluster, FULL, slow_run) == "running", 30)
    with client(auth_cluster, FULL) as c:
        assert c.post(f"/v1/agents/slow/conversations/{sender}/kill").status_code == 200
    assert wait_run(auth_cluster, FULL, slow_run) == "cancelled"

    before = snapshot(auth_cluster)
    with client(auth_cluster, ECHO_ONLY) as c:
        for method, path, body in [
            ("POST", "/v1/agents/slow/messages", {"content": "hi", "sender": sender}),
            ("GET", f"/v1/agents/slow/conversations/{sender}/history", None),
            ("POST", f"/v1/agents/slow/conversations/{sender}/kill", None),
            ("GET", "/v1/agents/slow", None),
            ("GET", "/v1/agents/nobody", None),
            ("GET", f"/v1/runs/{slow_run}", None),
            ("GET", f"/v1/runs/{slow_run}/events", None),
        ]:
            assert_error(c.request(method, path, json=body), 403, "forbidden")
    assert snapshot(auth_cluster) == before

    echo_run = send(auth_cluster, ECHO_ONLY, "echo", sender)
    assert wait_run(auth_cluster, ECHO_ONLY, echo_run) == "succeeded"
    with client(auth_cluster, ECHO_ONLY) as c:
        history = c.get(f"/v1/agents/echo/conversations/{sender}/history")
        assert history.status_code == 200 and len(history.json()["messages"]) == 2
        assert c.post(f"/v1/agents/echo/conversations/{sender}/kill").json() == {"run_id": None}
        assert c.get("/v1/agents/echo").json()["name"] == "echo"
        agents = c.get("/v1/agents").json()["agents"]
        conversations = c.get("/v1/conversations").json()["conversations"]
        assert c.get("/v1/conversations", params={"agent": "slow"}).json() == {"conversations": []}
    assert [a["name"] for a in agents] == ["echo"]
    assert {cv["agent"] for cv in conversations} == {"echo"}
    with client(auth_cluster, FULL) as c:  # the full token still sees both
        mine = c.get("/v1/conversations").json()["conversations"]
    assert {cv["agent"] for cv in mine if cv["sender"] == sender} == {"echo", "slow"}


def test_a_token_limited_to_echo_cannot_send_a_cwd_outside_echo_s_directory(
    auth_cluster: Cluster,
) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    (auth_cluster.home / "workspaces" / "echo" / "sub").mkdir(parents=True, exist_ok=True)
    before = snapshot(auth_cluster)
    with client(auth_cluster, ECHO_ONLY) as c:
        for cwd in ("/", "../slow", str(auth_cluster.home)):
            body = {"content": "hi", "sender": sender, "cwd": cwd}
            assert_error(c.post("/v1/agents/echo/messages", json=body), 422, "invalid")
        assert snapshot(auth_cluster) == before
        body = {"content": "hi", "sender": sender, "cwd": "sub"}
        accepted = c.post("/v1/agents/echo/messages", json=body)
    assert accepted.status_code == 202, accepted.text
    assert wait_run(auth_cluster, ECHO_ONLY, accepted.json()["run_id"]) == "succeeded"


def test_a_token_limited_to_echo_gets_only_echo_through_the_openai_face(
    auth_cluster: Cluster,
) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "user": "t-openai"}
    with client(auth_cluster, ECHO_ONLY) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["echo"]
        assert_error(c.get("/v1/models/slow"), 403, "forbidden")
        assert_error(
            c.post("/v1/chat/completions", json={**chat, "model": "slow"}), 403, "forbidden"
        )
        assert_error(c.post("/v1/chat/completions", json=chat), 403, "forbidden")  # no model
        resp = c.post("/v1/chat/completions", json={**chat, "model": "echo"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from the mock model."


def test_a_token_limited_to_echo_gets_only_echo_through_the_responses_face(
    auth_cluster: Cluster,
) -> None:
    with client(auth_cluster, FULL) as c:
        slow = c.post("/v1/responses", json={"model": "slow", "input": "hi", "background": True})
    assert slow.status_code == 200, slow.text
    with client(auth_cluster, ECHO_ONLY) as c:
        assert_error(
            c.post("/v1/responses", json={"model": "slow", "input": "hi"}), 403, "forbidden"
        )
        assert_error(c.post("/v1/responses", json={"input": "hi"}), 403, "forbidden")  # no model
        for path in ("", "/input_items"):
            assert_error(c.get(f"/v1/responses/{slow.json()['id']}{path}"), 403, "forbidden")
        assert_error(c.post(f"/v1/responses/{slow.json()['id']}/cancel"), 403, "forbidden")
        mine = c.post("/v1/responses", json={"model": "echo", "input": "hi"})
        assert mine.status_code == 200, mine.text
        assert mine.json()["output"][0]["content"][0]["text"] == "Hello from the mock model."
        assert c.get(f"/v1/responses/{mine.json()['id']}").status_code == 200
        assert c.get("/v1/responses/resp_nope").status_code == 404
    with client(auth_cluster, FULL) as c:
        assert c.post(f"/v1/responses/{slow.json()['id']}/cancel").status_code == 200


# --- no open gateway off loopback ----------------------------------------------------------


def test_the_gateway_refuses_to_listen_off_loopback_without_tokens(
    redis_server: RedisServer, home: Path, tmp_path: Path
) -> None:
    port = free_port()
    cluster = Cluster(redis_url=redis_server.url, home=home, log_dir=tmp_path)
    env = cluster.env() | {"WALRUS_GATEWAY_HOST": "0.0.0.0", "WALRUS_GATEWAY_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    bound = False
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            bound = bound or s.connect_ex(("127.0.0.1", port)) == 0
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 4, stderr
    assert not bound
    last = stderr.decode().strip().splitlines()[-1]
    assert "refusing to listen on 0.0.0.0 without tokens" in last
    assert "[gateway] tokens" in last


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False),
     ("10.1.2.3", False), ("192.168.0.1", False), ("example.com", False), ("", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    from gateway.auth import is_loopback

    assert is_loopback(host) is loopback


# --- token configuration -----------------------------------------------------------------------


def test_tokens_are_strings_or_tables_limited_to_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALRUS_TEST_TOKEN", "s" * 16)
    (tmp_path / "config.toml").write_text(
        '[gateway]\ntokens = ["${WALRUS_TEST_TOKEN}", '
        '{ token = "limited-token-0123", agents = ["a", "b"] }]\n'
    )
    full, limited = load_config(tmp_path).gateway.tokens
    assert full.token.get_secret_value() == "s" * 16 and full.permits("anything")
    assert limited.permits("a") and limited.permits("b") and not limited.permits("c")
    assert "limited-token-0123" not in repr(limited)  # never in logs
    assert GatewayConfig().tokens == []


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ('["${WALRUS_TEST_EMPTY}"]', "token is empty"),
        ('[""]', "token is empty"),
        ('["short-secret"]', "token is 12 characters; at least 16 are required"),
        ('["has spaces in the token"]', "printable ASCII without spaces"),
        ('[{ token = "limited-token-0123", agents = [] }]', "list at least one agent"),
        ('[{ token = "limited-token-0123", agents = ["Bad Name"] }]', "not a valid agent name"),
        ('[{ token = "limited-token-0123", agent = ["a"] }]', "agent"),
        ('[{ agents = ["a"] }]', "token"),
        ("[42]", "must be a string or a table"),
        ('["limited-token-0123", "limited-token-0123"]', "listed twice"),
    ],
)
def test_bad_tokens_are_a_clear_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokens: str, message: str
) -> None:
    monkeypatch.setenv("WALRUS_TEST_EMPTY", "")
    (tmp_path / "config.toml").write_text(f"[gateway]\ntokens = {tokens}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert message in err.value.message and "gateway.tokens" in err.value.message
    assert "short-secret" not in err.value.message and "limited-token" not in err.value.message


# --- Redis with a password -------------------------------------------------------------------


def test_a_cluster_runs_against_a_redis_with_a_password(home: Path, tmp_path: Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    server = start_redis(tmp_path / "redis", password=password)
    try:
        assert server.url == f"redis://:{password}@127.0.0.1:{server.port}/0"
        assert not reachable(f"redis://127.0.0.1:{server.port}/0")  # NOAUTH without it
        with running(Cluster(redis_url=server.url, home=home, log_dir=tmp_path)) as cluster:
            sender = f"t-{uuid.uuid4().hex[:8]}"
            run_id = cluster.send("echo", "hi", sender)
            assert cluster.wait_run(run_id)["status"] == "succeeded"
            assert [m["role"] for m in cluster.history("echo", sender)] == ["user", "assistant"]
    finally:
        server.stop()
