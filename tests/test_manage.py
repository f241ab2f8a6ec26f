"""Management over HTTP: deleting conversations; creating, replacing and deleting agents (the
config directory written, validated first, reloaded everywhere); providers, skills, MCP
servers and stats; and who may do it."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.cluster import Cluster, running, wait_for
from tests.conftest import redis_db_url
from walrus_tasks import conversations, keys
from walrus_tasks.client import AsyncClient, Client
from walrus_tasks.errors import Conflict, NotFound
from walrus_tasks.redis_server import RedisServer

SECRET = f"mcp-secret-{uuid.uuid4().hex}"
FULL = f"full-{uuid.uuid4().hex}"
ECHO_ONLY = f"echo-only-{uuid.uuid4().hex}"

CONFIG_EXTRA = """
[mcps.files]
command = "mcp-files"
args = ["--token", "${WALRUS_TEST_MCP_SECRET}"]
env = { FILES_TOKEN = "${WALRUS_TEST_MCP_SECRET}" }

[mcps.remote]
url = "https://bot:hunter2@mcp.example.com/mcp?token=abc"
"""


def private_home(home: Path, root: Path) -> Path:
    """A copy of the shared test agents, plus a skill and two MCP servers, that a test may write."""
    shutil.copytree(home, root)
    with (root / "config.toml").open("a") as f:
        f.write(CONFIG_EXTRA)
    (root / "agents" / "tooler.toml").write_text(
        'model = "mock"\nmcps = ["files", "remote"]\nskills = ["greet"]\n'
    )
    skill = root / "skills" / "greet"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: greet\ndescription: Say hello\nallowed-tools: [clock]\n---\nSay hello.\n"
    )
    return root


def secret_cluster(redis_server: RedisServer, root: Path) -> Cluster:
    """A cluster on a fresh database over the config dir ``root`` (logs beside it), given the
    secret its MCP servers' config refers to."""
    return Cluster(
        redis_url=redis_db_url(redis_server),
        home=root,
        log_dir=root.parent,
        env_extra={"WALRUS_TEST_MCP_SECRET": SECRET},
    )


@pytest.fixture(scope="module")
def mhome(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return private_home(home, tmp_path_factory.mktemp("manage") / "home")


@pytest.fixture(scope="module")
def mc(
    redis_server: RedisServer, mhome: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and a worker on their own database and config directory."""
    with running(secret_cluster(redis_server, mhome)) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    assert resp.json()["error"]["message"]
    if code:
        assert resp.json()["error"]["code"] == code


def agent_files(home: Path) -> dict[str, str]:
    """Every file of ``agents/`` (the lock file aside) with its text: to prove nothing moved."""
    return {p.name: p.read_text() for p in (home / "agents").iterdir() if p.name != ".lock"}


# --- delete a conversation -----------------------------------------------------------------------


def test_delete_conversation_forgets_its_history_and_state(mc: Cluster) -> None:
    sender = unique("t")
    assert mc.wait_run(mc.send("echo", "hello", sender))["status"] == "succeeded"
    cid = keys.cid("echo", sender)
    r = mc.redis()
    r.rpush(keys.conv(cid, "archive"), '{"summary": "old"}')  # what compaction and tools leave
    r.sadd(keys.conv(cid, "read"), "/tmp/a.txt")
    r.set(keys.conv(cid, "cwd"), "/tmp")
    fence = r.get(keys.conv(cid, "fence"))
    with mc.http() as c:
        resp = c.delete(f"/v1/agents/echo/conversations/{sender}")
        assert resp.status_code == 200 and resp.json() == {"deleted": True}
        listed = c.get("/v1/conversations", params={"agent": "echo"}).json()["conversations"]
        assert_error(c.delete(f"/v1/agents/echo/conversations/{sender}"), 404, "not_found")
    assert sender not in {cv["sender"] for cv in listed}
    assert mc.history("echo", sender) == []
    for part in ("history", "archive", "read", "seq", "cwd"):
        assert not r.exists(keys.conv(cid, part)), part
    assert r.zscore(keys.conv_index("conversations", cid), cid) is None
    assert r.get(keys.conv(cid, "fence")) == fence  # fencing tokens only ever grow

    run_id = mc.send("echo", "again", sender)  # the conversation starts afresh
    assert mc.wait_run(run_id)["status"] == "succeeded"
    with mc.http() as c:
        assert c.get(f"/v1/runs/{run_id}").json()["seq"] == 1
    history = [m["content"] for m in mc.history("echo", sender)]
    assert history == ["again", "Hello from the mock model."]


def test_delete_conversation_refuses_while_a_run_is_active(mc: Cluster) -> None:
    sender = unique("t")
    run_id = mc.send("slow", "go", sender)
    with mc.http() as c:
        wait_for(lambda: c.get(f"/v1/runs/{run_id}").json()["status"] == "running", 30)
        assert_error(c.delete(f"/v1/agents/slow/conversations/{sender}"), 409, "conflict")
        assert c.post(f"/v1/agents/slow/conversations/{sender}/kill").json() == {"run_id": run_id}
    assert mc.wait_run(run_id)["status"] == "cancelled"
    assert mc.history("slow", sender)[0]["content"] == "go"  # the refused delete changed nothing

    def deleted() -> bool:  # the worker lets the lease go a moment after the run ends
        with mc.http() as c:
            return c.delete(f"/v1/agents/slow/conversations/{sender}").status_code == 200

    wait_for(deleted, 10)
    assert mc.history("slow", sender) == []


def test_delete_conversation_refuses_while_a_run_is_queued(redis_server: RedisServer) -> None:
    r = redis.Redis.from_url(redis_db_url(redis_server), decode_responses=True)
    cid = keys.cid("echo", "queued")
    r.rpush(keys.conv(cid, "history"), '{"role": "user", "content": "hi"}')
    r.zadd(keys.conv_index("conversations", cid), {cid: 1})
    r.rpush(keys.conv(cid, "inbox"), "f" * 32)
    with pytest.raises(Conflict):
        conversations.delete(r, "echo", "queued")
    assert (
        r.llen(keys.conv(cid, "history")) == 1
        and r.zscore(keys.conv_index("conversations", cid), cid) == 1
    )
    r.delete(keys.conv(cid, "inbox"))
    r.set(keys.conv(cid, "lease"), "7")  # a worker still holds it: busy too
    with pytest.raises(Conflict):
        conversations.delete(r, "echo", "queued")
    r.delete(keys.conv(cid, "lease"))
    conversations.delete(r, "echo", "queued")
    with pytest.raises(NotFound):
        conversations.delete(r, "echo", "queued")
    assert not r.exists(keys.conv(cid, "history"))


def test_delete_conversation_refuses_bad_names(mc: Cluster) -> None:
    with mc.http() as c:
        assert_error(c.delete("/v1/agents/echo/conversations/bad%20sender"), 422, "invalid")
        assert_error(c.delete("/v1/agents/Bad%20Agent/conversations/user"), 422, "invalid")
        assert_error(c.delete(f"/v1/agents/nobody/conversations/{unique('t')}"), 404)


# --- create, replace, delete agents --------------------------------------------------------------


def test_create_agent_writes_its_file_and_a_message_to_it_runs(mc: Cluster, mhome: Path) -> None:
    name = unique("fresh")
    body = {
        "name": name,
        "model": "mock",
        "description": "Made over HTTP",
        "system_prompt": "You are brand new.\nTwo lines.",
        "tools": ["clock"],
        "mock": {"reply": "I am new here."},
    }
    with mc.http() as c:
        resp = c.post("/v1/agents", json=body)
        assert resp.status_code == 201, resp.text
        assert resp.json() == {
            "name": name, "model": "mock", "description": "Made over HTTP", "tools": ["clock"],
            "members": [],
        }  # fmt: skip
        assert c.get(f"/v1/agents/{name}").json()["description"] == "Made over HTTP"
        assert_error(c.post("/v1/agents", json=body), 409, "conflict")
    written = tomllib.loads((mhome / "agents" / f"{name}.toml").read_text())
    assert written == {k: v for k, v in body.items() if k != "name"}
    sender = unique("t")
    run_id = mc.send(name, "hello", sender)
    assert mc.wait_run(run_id)["status"] == "succeeded"  # the worker has the new agent too
    assert mc.history(name, sender)[-1]["content"] == "I am new here."


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"name": "Bad Name"}, "agent name"),
        ({"model": "mock"}, "name"),
        ({"name": "{n}", "model": "nowhere/m-x"}, "provider"),
        ({"name": "{n}", "members": ["ghost"]}, "member"),
        ({"name": "{n}", "skills": ["ghost"]}, "skill"),
        ({"name": "{n}", "mcps": ["ghost"]}, "mcp"),
        ({"name": "{n}", "tools": ["clock", "nosuchtool"]}, "unknown tool 'nosuchtool'"),
        ({"name": "{n}", "max_iterations": 0}, "max_iterations"),
        ({"name": "{n}", "tools": "clock"}, "tools"),
        ({"name": "{n}", "colour": "blue"}, "colour"),
        ({"name": "{n}", "description": "home is ${HOME}"}, "environment"),
        ({"name": "{n}", "heartbeat": {"interval": "soon"}}, "interval"),
    ],
)
def test_create_agent_refuses_a_bad_body_and_changes_nothing(
    mc: Cluster, mhome: Path, body: dict[str, Any], why: str
) -> None:
    name = unique("bad")
    body = {k: v.replace("{n}", name) if isinstance(v, str) else v for k, v in body.items()}
    before, generation = agent_files(mhome), mc.redis().get(keys.CONFIG_GENERATION)
    with mc.http() as c:
        resp = c.post("/v1/agents", json=body)
        assert_error(resp, 422)
        assert why in resp.json()["error"]["message"].lower()
        assert "walrus-config-" not in resp.json()["error"]["message"]  # no temporary path
        assert_error(c.get(f"/v1/agents/{name}"), 404)
    assert agent_files(mhome) == before
    assert mc.redis().get(keys.CONFIG_GENERATION) == generation


def test_update_agent_replaces_its_config(mc: Cluster, mhome: Path) -> None:
    name = unique("upd")
    with mc.http() as c:
        first = {"name": name, "description": "one", "mock": {"reply": "First."}}
        assert c.post("/v1/agents", json=first).status_code == 201
        second = {"description": "two", "mock": {"reply": "Second."}}
        resp = c.put(f"/v1/agents/{name}", json=second)
        assert resp.status_code == 200, resp.text
        assert resp.json()["description"] == "two"
        assert c.get(f"/v1/agents/{name}").json()["description"] == "two"
    assert "Second." in (mhome / "agents" / f"{name}.toml").read_text()

    def replies_second() -> bool:  # workers follow the reload within config_poll
        run_id = mc.send(name, "who?", "t-upd")
        assert mc.wait_run(run_id)["status"] == "succeeded"
        return bool(mc.history(name, "t-upd")[-1]["content"] == "Second.")

    wait_for(replies_second, 20, 0.2)


def test_update_agent_removes_the_prompt_file_it_replaces(mc: Cluster, mhome: Path) -> None:
    (mhome / "agents" / "mdprompt.toml").write_text('model = "mock"\n')
    (mhome / "agents" / "mdprompt.md").write_text("Prompt from the md file.\n")
    with mc.http() as c:
        assert c.post("/v1/admin/reload").status_code == 200
        resp = c.put("/v1/agents/mdprompt", json={"system_prompt": "Prompt from the API."})
    assert resp.status_code == 200, resp.text
    assert not (mhome / "agents" / "mdprompt.md").exists()
    assert "Prompt from the API." in (mhome / "agents" / "mdprompt.toml").read_text()


def test_update_agent_refuses_bad_input(mc: Cluster, mhome: Path) -> None:
    name = unique("upd")
    with mc.http() as c:
        assert c.post("/v1/agents", json={"name": name, "description": "kept"}).status_code == 201
        before = agent_files(mhome)
        assert_error(c.put("/v1/agents/nobody", json={"description": "x"}), 404, "not_found")
        assert_error(c.put(f"/v1/agents/{name}", json={"model": "nowhere/m"}), 422, "config")
        unknown_tool = c.put(f"/v1/agents/{name}", json={"tools": ["nosuchtool"]})
        assert_error(unknown_tool, 422, "config")
        assert "known tools: ask_user, bash, clock" in unknown_tool.json()["error"]["message"]
        assert_error(c.put(f"/v1/agents/{name}", json={"name": "other"}), 422, "invalid")
        assert_error(c.put(f"/v1/agents/{name}", json={"max_iterations": -1}), 422, "invalid")
        bad_json = {"content-type": "application/json"}
        assert_error(c.put(f"/v1/agents/{name}", content=b"{no", headers=bad_json), 422, "invalid")
        assert_error(c.put("/v1/agents/Bad%20Name", json={}), 422, "invalid")
        assert c.get(f"/v1/agents/{name}").json()["description"] == "kept"
    assert agent_files(mhome) == before


def test_delete_agent(mc: Cluster, mhome: Path) -> None:
    member, lead = unique("member"), unique("lead")
    with mc.http() as c:
        assert c.post("/v1/agents", json={"name": member}).status_code == 201
        assert c.post("/v1/agents", json={"name": lead, "members": [member]}).status_code == 201
        before = agent_files(mhome)
        resp = c.delete(f"/v1/agents/{member}")
        assert_error(resp, 409, "conflict")
        assert lead in resp.json()["error"]["message"]
        assert agent_files(mhome) == before

        assert c.delete(f"/v1/agents/{lead}").json() == {"deleted": lead}
        assert c.delete(f"/v1/agents/{member}").json() == {"deleted": member}
        assert_error(c.get(f"/v1/agents/{member}"), 404)
        assert_error(c.delete(f"/v1/agents/{member}"), 404, "not_found")
        assert_error(c.delete("/v1/agents/Bad%20Name"), 422, "invalid")
        sent = c.post(f"/v1/agents/{member}/messages", json={"content": "hi"})
        assert_error(sent, 404, "not_found")
        assert member not in {a["name"] for a in c.get("/v1/agents").json()["agents"]}
    assert not (mhome / "agents" / f"{member}.toml").exists()
    assert not (mhome / "agents" / f"{lead}.toml").exists()


# --- listings and stats --------------------------------------------------------------------------


def test_providers_list_the_endpoints_and_the_models_agents_use(mc: Cluster) -> None:
    with mc.http() as c:
        body = c.get("/v1/providers").json()
        models = c.get("/v1/models").json()  # the OpenAI-compatible list is still the agents
    providers = {p["name"]: p for p in body["providers"]}
    assert providers["fake"]["kind"] == "openai" and providers["fakeant"]["kind"] == "anthropic"
    assert providers["fake"]["base_url"].endswith("/v1")
    assert all(set(p) == {"name", "kind", "base_url"} for p in body["providers"])
    assert body["models"] == sorted(set(body["models"]))
    assert {"mock", "fake/m-oai", "fakeant/m-anth"} <= set(body["models"])
    assert "echo" in {m["id"] for m in models["data"]}


def test_skills_and_mcps_are_listed_without_secrets(mc: Cluster) -> None:
    with mc.http() as c:
        skills = c.get("/v1/skills")
        mcps = c.get("/v1/mcps")
    assert skills.json() == {
        "skills": [{"name": "greet", "description": "Say hello", "allowed_tools": ["clock"]}]
    }
    assert mcps.json() == {
        "mcps": [
            {"name": "files", "transport": "stdio", "command": "mcp-files", "url": None,
             "agents": ["tooler"]},
            {"name": "remote", "transport": "http", "command": None,
             "url": "https://mcp.example.com/mcp", "agents": ["tooler"]},
        ]
    }  # fmt: skip
    assert SECRET not in mcps.text and "hunter2" not in mcps.text


def test_stats_count_agents_conversations_active_and_queued_runs(mc: Cluster) -> None:
    sender = unique("t")
    first = mc.send("slow", "one", sender)
    second = mc.send("slow", "two", sender)
    with mc.http() as c:
        wait_for(lambda: c.get(f"/v1/runs/{first}").json()["status"] == "running", 30)
        stats = c.get("/v1/stats").json()
        agents = len(c.get("/v1/agents").json()["agents"])
        assert c.post(f"/v1/agents/slow/conversations/{sender}/kill").json()["run_id"] == first
        wait_for(lambda: c.get(f"/v1/runs/{second}").json()["status"] == "running", 30)
        assert c.post(f"/v1/agents/slow/conversations/{sender}/kill").json()["run_id"] == second
    assert stats["agents"] == agents
    assert stats["active_runs"] >= 1 and stats["queued"] >= 1
    assert stats["conversations"] >= 1 and stats["leases"] >= 1
    assert set(stats["queues"]) >= {"walrus.runs", "walrus.tools"}
    assert set(stats) == {
        "agents", "conversations", "active_runs", "queued", "leases", "queues", "broker_up",
        "unacked", "runs", "limits", "tenants",
    }  # fmt: skip
    assert stats["broker_up"] is True
    assert isinstance(stats["tenants"], dict)
    assert mc.wait_run(second)["status"] == "cancelled"


def test_the_management_routes_are_in_the_openapi_document(mc: Cluster) -> None:
    with mc.http() as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/agents"]) == {"get", "post"}
    assert set(paths["/v1/agents/{agent}"]) == {"get", "put", "delete"}
    assert "delete" in paths["/v1/agents/{agent}/conversations/{sender}"]
    for path in ("/v1/providers", "/v1/skills", "/v1/mcps", "/v1/stats"):
        assert "get" in paths[path], path


# --- auth ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_gateway(
    redis_server: RedisServer, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway alone, with a full-access token and one limited to echo."""
    root = private_home(home, tmp_path_factory.mktemp("manage-auth") / "home")
    with (root / "config.toml").open("a") as f:
        f.write(
            textwrap.dedent(f"""
            [gateway]
            tokens = ["{FULL}", {{ token = "{ECHO_ONLY}", agents = ["echo"] }}]
            """)
        )
    with running(secret_cluster(redis_server, root), workers=()) as c:
        yield c


def test_a_token_limited_to_an_agent_cannot_manage(auth_gateway: Cluster) -> None:
    home = auth_gateway.home
    before = agent_files(home)
    limited = {"Authorization": f"Bearer {ECHO_ONLY}"}
    with httpx.Client(base_url=auth_gateway.gateway_url, headers=limited, timeout=30) as c:
        for method, path, body in [
            ("POST", "/v1/agents", {"name": "mine"}),
            ("POST", "/v1/agents", {"name": "echo"}),
            ("PUT", "/v1/agents/echo", {"description": "hijacked"}),
            ("DELETE", "/v1/agents/echo", None),
            ("PUT", "/v1/agents/slow", {}),
            ("DELETE", "/v1/agents/slow/conversations/user", None),
            ("GET", "/v1/providers", None),
            ("GET", "/v1/skills", None),
            ("GET", "/v1/mcps", None),
            ("GET", "/v1/stats", None),
        ]:
            assert_error(c.request(method, path, json=body), 403, "forbidden")
        # its own agent's conversations are its own to delete
        assert_error(c.delete("/v1/agents/echo/conversations/nobody-here"), 404, "not_found")
        assert [a["name"] for a in c.get("/v1/agents").json()["agents"]] == ["echo"]
    assert agent_files(home) == before
    full = {"Authorization": f"Bearer {FULL}"}
    with httpx.Client(base_url=auth_gateway.gateway_url, headers=full, timeout=30) as c:
        assert c.get("/v1/stats").status_code == 200
        assert c.post("/v1/agents", json={"name": "byfull"}).status_code == 201
        assert c.delete("/v1/agents/byfull").status_code == 200
    assert agent_files(home) == before


# --- the Python clients ------------------------------------------------------------------------


def test_the_python_clients_manage_agents_and_conversations(mc: Cluster) -> None:
    name, sender = unique("cli"), unique("t")
    with Client(mc.gateway_url) as client:
        assert client.create_agent(name, description="from the client").name == name
        with pytest.raises(Conflict):
            client.create_agent(name)
        assert client.update_agent(name, description="changed").description == "changed"
        assert mc.wait_run(client.send(name, "hi", sender).run_id)["status"] == "succeeded"
        client.delete_conversation(name, sender)
        assert client.history(name, sender) == []
        with pytest.raises(NotFound):
            client.delete_conversation(name, sender)
        assert {"fake", "fakeant"} <= {p["name"] for p in client.providers()["providers"]}
        assert [s["name"] for s in client.skills()] == ["greet"]
        assert {m["name"] for m in client.mcps()} == {"files", "remote"}
        assert client.stats()["agents"] >= 1
        client.delete_agent(name)
        with pytest.raises(NotFound):
            client.delete_agent(name)

    async def main() -> None:
        async with AsyncClient(mc.gateway_url) as client:
            assert (await client.create_agent(name, tools=["clock"])).tools == ["clock"]
            assert (await client.update_agent(name, description="async")).description == "async"
            run_id = (await client.send(name, "hi", sender)).run_id
            await asyncio.to_thread(mc.wait_run, run_id)
            await client.delete_conversation(name, sender)
            assert (await client.providers())["models"] == client_models
            assert [s["name"] for s in await client.skills()] == ["greet"]
            assert len(await client.mcps()) == 2
            assert "queued" in await client.stats()
            await client.delete_agent(name)
            with pytest.raises(NotFound):
                await client.delete_agent(name)

    with Client(mc.gateway_url) as client:
        client_models = client.providers()["models"]
    asyncio.run(main())
