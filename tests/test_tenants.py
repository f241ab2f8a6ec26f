"""Tenants come from tokens: a tenant token acts in its tenant only, and sees only its tenant.

One cluster (gateway + worker) with an admin token and two tenant tokens, ``acme`` and
``globex``. Each test uses fresh senders, so the tests share the cluster without seeing each
other's conversations.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import connect

from tests.cluster import Cluster, parse_sse, running, wait_for
from tests.conftest import redis_db_url, write_agents, write_home
from tests.fakellm import FakeReply
from walrus_tasks import crons, indexes, keys, memory, subscriptions
from walrus_tasks.errors import Forbidden, InvalidInput
from walrus_tasks.export import export_state, import_state
from walrus_tasks.models import CronSpec
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.tenancy import Caller, bare, scoped, tenant_of

pytestmark = pytest.mark.security

ADMIN = f"admin-{uuid.uuid4().hex}"
ACME = f"acme-{uuid.uuid4().hex}"
GLOBEX = f"globex-{uuid.uuid4().hex}"
TERMINAL = ("succeeded", "failed", "cancelled")
MODEL = "m-tenants"
KEEPER = f"""
    model = "fake/{MODEL}"
    tools = ["remember", "recall", "write", "read"]
"""
SUPPORT = """
    model = "mock"
    description = "The help desk"
    [mock]
    reply = "How can I help?"
"""


@pytest.fixture(scope="module")
def tenants_home(tmp_path_factory: pytest.TempPathFactory, fake_llm: Any) -> Path:
    """The test agents plus ``support``; an admin token and one token for each tenant."""
    home = write_home(tmp_path_factory.mktemp("tenants-home"), fake_llm.base_url)
    write_agents(home, {"support": SUPPORT, "keeper": KEEPER})
    with (home / "config.toml").open("a") as f:
        f.write(
            "\n[gateway]\n"
            f'tokens = ["{ADMIN}", {{ token = "{ACME}", tenant = "acme" }}, '
            f'{{ token = "{GLOBEX}", tenant = "globex" }}]\n'
        )
    return home


@pytest.fixture(scope="module")
def tc(
    redis_server: RedisServer, tenants_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and one worker of the tenants' config."""
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=tenants_home,
        log_dir=tmp_path_factory.mktemp("tenants-logs"),
    )
    with running(c, beat=True):
        yield c


def client(cluster: Cluster, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=cluster.gateway_url, timeout=30, headers=headers)


def send(cluster: Cluster, token: str, sender: str, content: str, **extra: Any) -> str:
    with client(cluster, token) as c:
        resp = c.post(
            "/v1/agents/support/messages", json={"content": content, "sender": sender, **extra}
        )
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


def wait_run(cluster: Cluster, run_id: str) -> dict[str, Any]:
    """The run's record once it has ended (read with the admin token)."""

    def ended() -> dict[str, Any] | None:
        with client(cluster, ADMIN) as c:
            info: dict[str, Any] = c.get(f"/v1/runs/{run_id}").json()
        return info if info["status"] in TERMINAL else None

    return wait_for(ended, 60, 0.05, f"run {run_id} to end")  # type: ignore[no-any-return]


def history(cluster: Cluster, token: str, sender: str, tenant: str | None = None) -> list[str]:
    """The user messages of conversation ``(support, sender)`` as ``token`` sees it."""
    params = {"tenant": tenant} if tenant else {}
    with client(cluster, token) as c:
        resp = c.get(f"/v1/agents/support/conversations/{sender}/history", params=params)
    assert resp.status_code == 200, resp.text
    return [m["content"] for m in resp.json()["messages"] if m["role"] == "user"]


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["message"]


# --- the model, without a cluster --------------------------------------------------------------


def test_a_scoped_sender_carries_its_tenant_and_the_default_tenant_keeps_todays_keys() -> None:
    assert scoped(None, "alice") == "alice"
    assert keys.cid("support", scoped(None, "alice")) == "support:alice"  # today's key exactly
    assert scoped("acme", "x:alice") == "acme/x:alice"
    assert tenant_of("acme/x:alice") == "acme" and bare("acme/x:alice") == "x:alice"
    assert tenant_of("x:alice") is None and bare("x:alice") == "x:alice"
    assert Caller("acme").acting(None) == "acme"
    with pytest.raises(Forbidden):
        Caller("acme").acting("globex")
    with pytest.raises(Forbidden):
        Caller("acme").acting("acme")
    assert Caller().acting("globex") == "globex" and Caller().acting(None) is None
    with pytest.raises(InvalidInput):
        Caller().acting("no/slash")


# --- the tenant comes from the token ----------------------------------------------------------


def test_a_tenant_tokens_request_naming_a_tenant_is_refused_and_writes_nothing(
    tc: Cluster,
) -> None:
    r = tc.redis()
    before = indexes.sizes(r, "runs")
    sender = f"alice-{uuid.uuid4().hex[:6]}"
    with client(tc, ACME) as c:
        for tenant in ("globex", "acme"):
            body = {"content": "charge it to them", "sender": sender, "tenant": tenant}
            assert_error(c.post("/v1/agents/support/messages", json=body), 403, "forbidden")
        assert_error(c.get("/v1/runs", params={"tenant": "globex"}), 403, "forbidden")
        assert_error(c.get("/v1/conversations", params={"tenant": "globex"}), 403, "forbidden")
        path = f"/v1/agents/support/conversations/{sender}/history"
        assert_error(c.get(path, params={"tenant": "globex"}), 403, "forbidden")
    assert indexes.sizes(r, "runs") == before


def test_a_tenant_tokens_runs_are_counted_under_its_tenant_whatever_the_sender(
    tc: Cluster,
) -> None:
    # The fair dispatcher and the limits read the record's tenant (walrus_tasks.fair, .limits).
    r = tc.redis()
    run_id = send(tc, ACME, f"globex:alice-{uuid.uuid4().hex[:6]}", "who pays?")
    assert r.hget(keys.run(run_id), "tenant") == "acme"  # not the sender's prefix "globex"
    wait_run(tc, run_id)
    # An admin token still names the tenant a run is counted under, as before.
    admin_run = send(tc, ADMIN, f"bob-{uuid.uuid4().hex[:6]}", "hi", tenant="globex")
    assert r.hget(keys.run(admin_run), "tenant") == "globex"
    wait_run(tc, admin_run)


# --- conversations, runs and events are per tenant --------------------------------------------


def test_two_tenants_talking_to_support_as_alice_have_two_conversations(tc: Cluster) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    a_run = send(tc, ACME, alice, "acme's secret")
    b_run = send(tc, GLOBEX, alice, "globex's secret")
    assert wait_run(tc, a_run)["status"] == "succeeded"
    assert wait_run(tc, b_run)["status"] == "succeeded"
    assert history(tc, ACME, alice) == ["acme's secret"]
    assert history(tc, GLOBEX, alice) == ["globex's secret"]
    with client(tc, ACME) as c:
        a_info = c.get(f"/v1/runs/{a_run}").json()
    assert (a_info["sender"], a_info["tenant"], a_info["seq"]) == (alice, "acme", 1)


def test_another_tenants_run_and_its_events_are_404(tc: Cluster) -> None:
    a_run = send(tc, ACME, f"alice-{uuid.uuid4().hex[:6]}", "mine")
    wait_run(tc, a_run)
    with client(tc, GLOBEX) as c:
        assert_error(c.get(f"/v1/runs/{a_run}"), 404, "not_found")
        assert_error(c.get(f"/v1/runs/{a_run}/events"), 404, "not_found")
        assert_error(c.post(f"/v1/runs/{a_run}/cancel"), 404, "not_found")
        missing = uuid.uuid4().hex  # the same answer as for a run that does not exist
        assert_error(c.get(f"/v1/runs/{missing}"), 404, "not_found")
    with client(tc, ACME) as c:
        assert c.get(f"/v1/runs/{a_run}").status_code == 200
        with c.stream("GET", f"/v1/runs/{a_run}/events") as resp:
            assert resp.status_code == 200
            events = [event["type"] for _, event in parse_sse(resp.iter_lines())]
    assert events[-1] == "end"


def test_lists_show_a_tenant_its_own_and_an_admin_everything(tc: Cluster) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    a_run, b_run = send(tc, ACME, alice, "a"), send(tc, GLOBEX, alice, "b")
    wait_run(tc, a_run), wait_run(tc, b_run)

    def listed(token: str, path: str, key: str, field: str, **params: Any) -> set[Any]:
        with client(tc, token) as c:
            resp = c.get(path, params={"limit": 200, **params} if key == "runs" else params)
        assert resp.status_code == 200, resp.text
        return {item[field] for item in resp.json()[key]}

    assert a_run in listed(ACME, "/v1/runs", "runs", "run_id")
    assert b_run not in listed(ACME, "/v1/runs", "runs", "run_id")
    assert listed(ACME, "/v1/runs", "runs", "tenant") == {"acme"}
    assert listed(GLOBEX, "/v1/runs", "runs", "tenant") == {"globex"}
    assert {a_run, b_run} <= listed(ADMIN, "/v1/runs", "runs", "run_id", sender=alice)
    assert listed(ADMIN, "/v1/runs", "runs", "run_id", sender=alice, tenant="acme") == {a_run}

    def conversations(token: str, **params: Any) -> set[tuple[str, str | None]]:
        with client(tc, token) as c:
            resp = c.get("/v1/conversations", params=params)
        assert resp.status_code == 200, resp.text
        rows = resp.json()["conversations"]
        return {(row["sender"], row["tenant"]) for row in rows if row["sender"] == alice}

    assert conversations(ACME) == {(alice, "acme")}
    assert conversations(GLOBEX) == {(alice, "globex")}
    assert conversations(ADMIN) == {(alice, "acme"), (alice, "globex")}
    assert conversations(ADMIN, tenant="globex") == {(alice, "globex")}
    with client(tc, ACME) as c:
        tenants = {row["tenant"] for row in c.get("/v1/conversations").json()["conversations"]}
    assert tenants == {"acme"}


def test_an_admin_token_acts_in_the_tenant_it_names(tc: Cluster) -> None:
    bob = f"bob-{uuid.uuid4().hex[:6]}"
    admin_run = send(tc, ADMIN, bob, "from the operator", tenant="acme")
    wait_run(tc, admin_run)
    assert history(tc, ACME, bob) == ["from the operator"]  # in acme's conversation
    assert history(tc, ADMIN, bob, tenant="acme") == ["from the operator"]
    assert history(tc, ADMIN, bob) == []  # not in the default tenant's
    assert history(tc, GLOBEX, bob) == []
    with client(tc, GLOBEX) as c:
        assert_error(c.get(f"/v1/runs/{admin_run}"), 404, "not_found")


def test_a_tenant_token_cannot_kill_or_answer_another_tenants_conversation(tc: Cluster) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    with client(tc, ACME) as c:
        resp = c.post(
            "/v1/agents/slow/messages", json={"content": "take your time", "sender": alice}
        )
        slow_run = resp.json()["run_id"]
    wait_for(lambda: tc.redis().hget(keys.run(slow_run), "status") == "running", 30)
    with client(tc, GLOBEX) as c:
        killed = c.post(f"/v1/agents/slow/conversations/{alice}/kill")
        assert killed.status_code == 200 and killed.json()["run_id"] is None  # its own: idle
    assert tc.redis().hget(keys.run(slow_run), "status") == "running"
    with client(tc, ACME) as c:
        killed = c.post(f"/v1/agents/slow/conversations/{alice}/kill")
        assert killed.json()["run_id"] == slow_run
    assert wait_run(tc, slow_run)["status"] == "cancelled"


def test_a_tenant_token_is_refused_what_acts_across_tenants(tc: Cluster) -> None:
    with client(tc, ACME) as c:
        assert_error(c.get("/v1/stats"), 403, "forbidden")
        assert_error(c.post("/v1/admin/reload"), 403, "forbidden")
        assert_error(c.get("/v1/events"), 403, "forbidden")
        assert_error(c.put("/v1/agents/support", json={"model": "mock"}), 403, "forbidden")
        # The Agent Protocol keeps to the tenant (tests/test_tenants_agent_protocol.py), but
        # assistants are the shared agents: a tenant token may not change them.
        assert_error(c.post("/assistants", json={"graph_id": "support"}), 403, "forbidden")
        assert_error(c.delete("/assistants/support"), 403, "forbidden")
    with client(tc, ADMIN) as c:
        assert c.get("/v1/stats").status_code == 200


# --- the WebSocket and the OpenAI face follow the token ---------------------------------------


def ws_call(tc: Cluster, token: str, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each frame's final answer (``result``, ``error`` or ``done``), in order."""
    url = tc.gateway_url.replace("http://", "ws://") + "/v1/ws"
    out = []
    bearer = {"Authorization": f"Bearer {token}"}
    with connect(url, open_timeout=10, additional_headers=bearer) as conn:
        for i, frame in enumerate(frames):
            conn.send(json.dumps({"id": i, **frame}))
            while (answer := json.loads(conn.recv(timeout=60)))["type"] == "event":
                pass
            out.append(answer)
    return out


def test_the_websocket_acts_in_the_tokens_tenant(tc: Cluster) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    send_b = {"op": "stream", "agent": "support", "sender": alice, "content": "globex on ws"}
    streamed, refused, stats = ws_call(
        tc,
        GLOBEX,
        [send_b, {**send_b, "op": "send", "tenant": "acme"}, {"op": "stats"}],
    )
    assert streamed["type"] == "done"
    assert refused["type"] == "error" and refused["error"]["code"] == "forbidden"
    assert stats["type"] == "error" and stats["error"]["code"] == "forbidden"
    ask = {"op": "get_history", "agent": "support", "sender": alice}
    (b_history,) = ws_call(tc, GLOBEX, [ask])
    assert [m["content"] for m in b_history["result"]["messages"] if m["role"] == "user"] == [
        "globex on ws"
    ]
    (a_history,) = ws_call(tc, ACME, [ask])
    assert a_history["result"]["messages"] == []
    # acme's list is acme's own (one conversation at least, of this test, when run alone)
    acme_send = {**send_b, "sender": f"bob-{uuid.uuid4().hex[:6]}", "content": "acme on ws"}
    (acme_streamed, listed) = ws_call(
        tc, ACME, [acme_send, {"op": "list_conversations", "agent": "support"}]
    )
    assert acme_streamed["type"] == "done"
    assert {row["tenant"] for row in listed["result"]["conversations"]} == {"acme"}
    (admin_view,) = ws_call(tc, ADMIN, [{**ask, "tenant": "globex"}])
    assert len(admin_view["result"]["messages"]) == 2


def test_the_openai_face_keeps_a_tenants_conversation_in_its_tenant(tc: Cluster) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    body = {"model": "support", "user": alice, "messages": [{"role": "user", "content": "oai"}]}
    with client(tc, ACME) as c:
        resp = c.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert history(tc, ACME, alice) == ["oai"]
    assert history(tc, GLOBEX, alice) == []
    assert history(tc, ADMIN, alice) == []


def test_a_response_is_its_tenants_and_another_tenants_id_is_not_found(tc: Cluster) -> None:
    with client(tc, ACME) as c:
        resp = c.post("/v1/responses", json={"model": "support", "input": "mine"})
    assert resp.status_code == 200, resp.text
    rid, run_id = resp.json()["id"], resp.json()["id"].removeprefix("resp_")
    with client(tc, ACME) as c:
        assert c.get(f"/v1/runs/{run_id}").json()["tenant"] == "acme"
        assert c.get(f"/v1/responses/{rid}").json()["output"][0]["content"][0]["text"]
    next_turn = {"model": "support", "input": "again", "previous_response_id": rid}
    with client(tc, GLOBEX) as c:
        for answer in (
            c.get(f"/v1/responses/{rid}"),
            c.get(f"/v1/responses/{rid}/input_items"),
            c.post(f"/v1/responses/{rid}/cancel"),
            c.delete(f"/v1/responses/{rid}"),
            c.post("/v1/responses", json=next_turn),
        ):
            assert_error(answer, 404, "not_found")
    with client(tc, ADMIN) as c:  # an admin sees every tenant's
        assert c.get(f"/v1/responses/{rid}").status_code == 200
    with client(tc, ACME) as c:
        assert c.delete(f"/v1/responses/{rid}").status_code == 200


# --- memory and the workspace are per tenant ---------------------------------------------------


def tool_outputs(tc: Cluster, token: str, agent: str, sender: str) -> list[str]:
    with client(tc, token) as c:
        resp = c.get(f"/v1/agents/{agent}/conversations/{sender}/history")
    assert resp.status_code == 200, resp.text
    return [m["content"] for m in resp.json()["messages"] if m["role"] == "tool"]


def test_an_agents_memory_and_workspace_are_the_tenants_own(
    tc: Cluster, tenants_home: Path, fake_llm: Any
) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    note = {"name": "plan", "content": "acme buys globex on Monday"}
    fake_llm.script(
        FakeReply(
            tool_calls=[("remember", note), ("write", {"path": "plan.txt", "content": "acme"})]
        ),
        FakeReply(text="Noted."),
        model=MODEL,
    )
    with client(tc, ACME) as c:
        resp = c.post("/v1/agents/keeper/messages", json={"content": "note it", "sender": alice})
    assert wait_run(tc, resp.json()["run_id"])["status"] == "succeeded"
    assert tool_outputs(tc, ACME, "keeper", alice)[0] == "remembered plan"
    r = tc.redis()
    assert [e.name for e in memory.entries(r, "keeper", "acme")] == ["plan"]
    assert memory.entries(r, "keeper") == []  # not the default tenant's memory
    workspace = tenants_home / "workspaces" / "keeper"
    assert (workspace / "tenants" / "acme" / "plan.txt").read_text() == "acme"
    assert not (workspace / "plan.txt").exists()

    fake_llm.script(
        FakeReply(tool_calls=[("recall", {"query": "what is the plan?"})]),
        FakeReply(tool_calls=[("read", {"path": "plan.txt"})]),
        FakeReply(text="Nothing."),
        model=MODEL,
    )
    with client(tc, GLOBEX) as c:
        resp = c.post("/v1/agents/keeper/messages", json={"content": "spy", "sender": alice})
    assert wait_run(tc, resp.json()["run_id"])["status"] == "succeeded"
    recalled, read = tool_outputs(tc, GLOBEX, "keeper", alice)
    assert json.loads(recalled) == []  # acme's note is not in globex's memory
    assert "acme" not in read and "plan.txt" in read  # no such file in globex's directory
    with client(tc, GLOBEX) as c:
        cwd = {"content": "x", "sender": alice, "cwd": "../acme"}
        assert_error(c.post("/v1/agents/keeper/messages", json=cwd), 422, "invalid")


# --- crons and subscriptions are per tenant ----------------------------------------------------


def test_crons_are_the_tenants_own_and_fire_into_its_conversation(tc: Cluster) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    spec = {"schedule": "@every 1s", "agent": "support", "sender": alice, "message": "tick"}
    with client(tc, ACME) as c:
        assert_error(c.post("/v1/crons", json={**spec, "tenant": "globex"}), 403, "forbidden")
        resp = c.post("/v1/crons", json=spec)
        assert resp.status_code == 201, resp.text
        cron = resp.json()
        assert cron["tenant"] == "acme" and cron["sender"] == alice
    with client(tc, GLOBEX) as c:
        assert_error(c.get(f"/v1/crons/{cron['id']}"), 404, "not_found")
        assert_error(c.delete(f"/v1/crons/{cron['id']}"), 404, "not_found")
        assert cron["id"] not in {e["id"] for e in c.get("/v1/crons").json()["crons"]}
    with client(tc, ADMIN) as c:
        assert {e["id"]: e["tenant"] for e in c.get("/v1/crons").json()["crons"]}[cron["id"]] == (
            "acme"
        )

    def fired() -> str | None:
        with client(tc, ACME) as c:
            return c.get(f"/v1/crons/{cron['id']}").json().get("last_run_id")  # type: ignore[no-any-return]

    run_id = wait_for(fired, 30, 0.1, "the cron to fire")
    with client(tc, ACME) as c:
        info = c.get(f"/v1/runs/{run_id}").json()
        assert (info["sender"], info["tenant"]) == (alice, "acme")  # beat kept it in acme
        assert c.delete(f"/v1/crons/{cron['id']}").status_code == 200
    wait_run(tc, run_id)
    assert "tick" in history(tc, ACME, alice)
    assert history(tc, GLOBEX, alice) == [] and history(tc, ADMIN, alice) == []


def test_a_publish_fires_only_the_publishing_tenants_subscriptions(tc: Cluster) -> None:
    source = f"deploy-{uuid.uuid4().hex[:6]}"
    with client(tc, ACME) as c:
        resp = c.post("/v1/subscriptions", json={"source": source, "target_agent": "support"})
        assert resp.status_code == 201, resp.text
        sub = resp.json()
        assert (sub["source"], sub["tenant"]) == (source, "acme")
    with client(tc, GLOBEX) as c:
        published = c.post("/v1/events", json={"source": source, "payload": "globex shipped"})
        assert published.status_code == 202 and published.json()["fired"] == []
        assert sub["id"] not in {
            s["id"] for s in c.get("/v1/subscriptions").json()["subscriptions"]
        }
        assert_error(c.delete(f"/v1/subscriptions/{sub['id']}"), 404, "not_found")
        body = {"source": source, "payload": "x", "tenant": "acme"}
        assert_error(c.post("/v1/events", json=body), 403, "forbidden")
    with client(tc, ADMIN) as c:
        assert c.post("/v1/events", json={"source": source, "payload": "default"}).json() == {
            "fired": []
        }
    with client(tc, ACME) as c:
        published = c.post("/v1/events", json={"source": source, "payload": "acme shipped"})
        [run_id] = published.json()["fired"]
        info = c.get(f"/v1/runs/{run_id}").json()
        assert (info["sender"], info["tenant"]) == (f"event:{source}", "acme")
        assert c.delete(f"/v1/subscriptions/{sub['id']}").status_code == 200
    wait_run(tc, run_id)


# --- export / import --------------------------------------------------------------------------


def test_an_export_round_trips_a_tenants_conversation_cron_and_subscription(
    r: redis.Redis, tmp_path: Path
) -> None:
    for sender in (scoped("acme", "alice"), "alice"):
        message = json.dumps({"role": "user", "content": sender})
        r.rpush(keys.conv(keys.cid("support", sender), "history"), message)
        r.zadd(
            keys.conv_index("conversations", keys.cid("support", sender)),
            {keys.cid("support", sender): 1000},
        )
    spec = CronSpec(schedule="@every 1h", agent="support", message="tick", tenant="acme")
    crons.create(r, spec, ["support"])
    subscriptions.create(r, scoped("acme", "deploy"), "support")
    durable = ("walrus:{*}:conversations", keys.conv_pattern("*"), "walrus:crons", "walrus:subs*")

    def state() -> dict[str, Any]:
        found = sorted({k for p in durable for k in r.scan_iter(match=p)})
        return {k: r.dump(k) for k in found if r.type(k) != "zset" or k.endswith("conversations")}

    before = state()
    summary = export_state(r, tmp_path / "out")
    assert summary.as_dict()["conversations"] == 2
    assert (tmp_path / "out" / "sessions" / "support" / "acme" / "alice.jsonl").exists()
    r.flushdb()
    assert import_state(r, tmp_path / "out", replace=False) == summary
    [restored] = r.lrange(keys.conv(keys.cid("support", "acme/alice"), "history"), 0, -1)
    assert json.loads(restored)["content"] == "acme/alice"
    assert [e.tenant for e in crons.list_all(r)] == ["acme"]
    assert [s["source"] for s in subscriptions.list_all(r)] == ["acme/deploy"]
    after = {k: v for k, v in state().items() if not k.endswith(":epoch")}  # bumped by import
    assert after == before
