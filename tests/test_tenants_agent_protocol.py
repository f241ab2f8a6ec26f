"""The Agent Protocol per tenant: threads, runs, crons and the store are the token's tenant's.

Driven by the official ``langgraph-sdk`` client against a real gateway and worker, with an admin
token and two tenant tokens (``acme``, ``globex``). Each test uses fresh thread ids, store
namespaces and crons, so the tests share the cluster without seeing each other's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import Cluster, running
from tests.conftest import redis_db_url, write_agents, write_home
from tests.fakellm import FakeReply
from walrus_tasks import keys, memory
from walrus_tasks.errors import Conflict, InvalidInput
from walrus_tasks.export import export_state, import_state
from walrus_tasks.redis_server import RedisServer

pytestmark = pytest.mark.security

ADMIN = f"admin-{uuid.uuid4().hex}"
ACME = f"acme-{uuid.uuid4().hex}"
GLOBEX = f"globex-{uuid.uuid4().hex}"
HI = {"messages": [{"role": "user", "content": "hi"}]}
REPLY = "Hello from the mock model."
MODEL = "m-apt"


@pytest.fixture(scope="module")
def apt(
    redis_server: RedisServer, fake_llm: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and one worker with the test agents, an admin token and two tenant tokens."""
    home = write_home(tmp_path_factory.mktemp("apt-home"), fake_llm.base_url)
    write_agents(home, {"counted": f'model = "fake/{MODEL}"\n'})
    with (home / "config.toml").open("a") as f:
        f.write(
            "\n[gateway]\n"
            f'tokens = ["{ADMIN}", {{ token = "{ACME}", tenant = "acme" }}, '
            f'{{ token = "{GLOBEX}", tenant = "globex" }}]\n'
        )
    c = Cluster(
        redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path_factory.mktemp("apt")
    )
    with running(c):
        yield c


def lg(c: Cluster, token: str) -> Any:
    """A LangGraph client of ``token`` (the SDK sends it as ``x-api-key``)."""
    return get_sync_client(url=c.gateway_url, api_key=token)


def http(c: Cluster, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=c.gateway_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def run_info(c: Cluster, run_id: str) -> dict[str, Any]:
    """The walrus run as the admin token sees it (``sender`` bare, ``tenant`` apart)."""
    with http(c, ADMIN) as h:
        resp = h.get(f"/v1/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def refused(status: int, call: Any) -> None:
    """``call()`` fails with ``status`` (the SDK raises HTTPStatusError or a subclass of it)."""
    with pytest.raises(httpx.HTTPStatusError) as e:
        call()
    assert e.value.response.status_code == status, e.value.response.text


def history_len(c: Cluster, agent: str, sender: str) -> int:
    return int(c.redis().llen(keys.conv(keys.cid(agent, sender), "history")))


def test_another_tenants_thread_is_a_404_everywhere_and_never_in_a_search(apt: Cluster) -> None:
    acme, globex = lg(apt, ACME), lg(apt, GLOBEX)
    team = uuid.uuid4().hex
    thread = acme.threads.create(metadata={"team": team})
    tid = thread["thread_id"]
    out = acme.runs.wait(tid, "echo", input=HI)
    assert out["messages"][-1]["content"] == REPLY
    [run] = acme.runs.list(tid)

    for call in (
        lambda: globex.threads.get(tid),
        lambda: globex.threads.get_state(tid),
        lambda: globex.threads.get_history(tid),
        lambda: globex.threads.update(tid, metadata={"stolen": True}),
        lambda: globex.threads.delete(tid),
        lambda: globex.runs.list(tid),
        lambda: globex.runs.get(tid, run["run_id"]),
        lambda: globex.runs.join(tid, run["run_id"]),
        lambda: list(globex.runs.join_stream(tid, run["run_id"], last_event_id="-1")),
        lambda: globex.runs.cancel(tid, run["run_id"]),
        lambda: globex.runs.delete(tid, run["run_id"]),
        lambda: globex.runs.create(tid, "echo", input=HI),
        lambda: globex.runs.wait(tid, "echo", input=HI),
        lambda: list(globex.runs.stream(tid, "echo", input=HI)),
        lambda: globex.crons.create_for_thread(tid, "echo", schedule="@every 1h", input=HI),
    ):
        refused(404, call)
    assert globex.threads.search(metadata={"team": team}) == []
    assert globex.threads.search(ids=[tid]) == []
    assert tid not in {t["thread_id"] for t in globex.threads.search(limit=1000)}
    assert globex.threads.count(metadata={"team": team}) == 0
    # The admin token acts in the default tenant: acme's thread is not there either ...
    with pytest.raises(NotFoundError):
        lg(apt, ADMIN).threads.get(tid)
    # ... unless it names the tenant, as on the native routes.
    seen = lg(apt, ADMIN).threads.get(tid, params={"tenant": "acme"})
    assert seen["metadata"]["team"] == team

    # Nothing globex tried changed acme's thread: one run, its messages, its metadata.
    mine = acme.threads.get(tid)
    assert "stolen" not in mine["metadata"] and mine["metadata"]["team"] == team
    assert [r["run_id"] for r in acme.runs.list(tid)] == [run["run_id"]]
    assert [m["content"] for m in mine["values"]["messages"]] == ["hi", REPLY]
    assert [t["thread_id"] for t in acme.threads.search(metadata={"team": team})] == [tid]


def test_a_tenants_runs_land_in_its_own_conversation(apt: Cluster) -> None:
    acme, globex = lg(apt, ACME), lg(apt, GLOBEX)
    tid = f"t-{uuid.uuid4().hex[:8]}"
    # Both tenants use the same thread id: two threads, two conversations.
    acme.threads.create(thread_id=tid)
    globex.threads.create(thread_id=tid)
    acme.runs.wait(tid, "echo", input=HI)
    parts = list(globex.runs.stream(tid, "echo", input=HI, stream_mode="values"))
    assert parts[-1].data["messages"][-1]["content"] == REPLY
    [a_run], [g_run] = acme.runs.list(tid), globex.runs.list(tid)
    for run, tenant in ((a_run, "acme"), (g_run, "globex")):
        info = run_info(apt, run["run_id"])
        assert (info["agent"], info["sender"], info["tenant"]) == ("echo", f"thread:{tid}", tenant)
        assert history_len(apt, "echo", f"{tenant}/thread:{tid}") == 2
    assert history_len(apt, "echo", f"thread:{tid}") == 0  # not the default tenant's
    # Same thread id, another tenant's run: a 404, not a leak through the shared run index.
    refused(404, lambda: globex.runs.get(tid, a_run["run_id"]))
    refused(404, lambda: globex.runs.join(tid, a_run["run_id"]))
    refused(404, lambda: list(globex.runs.join_stream(tid, a_run["run_id"])))
    # A stateless run makes a thread in the caller's tenant.
    run = acme.runs.create(None, "echo", input=HI)
    own = run["thread_id"]
    assert acme.runs.join(own, run["run_id"])["messages"][-1]["content"] == REPLY
    assert run_info(apt, run["run_id"])["tenant"] == "acme"
    assert own in {t["thread_id"] for t in acme.threads.search(limit=1000)}
    assert own not in {t["thread_id"] for t in globex.threads.search(limit=1000)}
    refused(404, lambda: globex.threads.get(own))


def test_the_store_is_each_tenants_own(apt: Cluster) -> None:
    acme, globex, admin = lg(apt, ACME), lg(apt, GLOBEX), lg(apt, ADMIN)
    ns = ["notes", uuid.uuid4().hex[:8]]
    acme.store.put_item(ns, key="plan", value={"text": "acme buys globex"})
    with pytest.raises(NotFoundError):
        globex.store.get_item(ns, key="plan")
    assert globex.store.search_items(ns)["items"] == []
    assert globex.store.search_items(["notes"], query="globex")["items"] == []
    assert ns not in globex.store.list_namespaces(prefix=["notes"])["namespaces"]
    globex.store.delete_item(ns, key="plan")  # a no-op in globex's store
    globex.store.put_item(ns, key="plan", value={"text": "globex's own"})
    assert acme.store.get_item(ns, key="plan")["value"] == {"text": "acme buys globex"}
    assert globex.store.get_item(ns, key="plan")["value"] == {"text": "globex's own"}
    assert [i["value"] for i in acme.store.search_items(ns)["items"]] == [
        {"text": "acme buys globex"}
    ]
    with pytest.raises(NotFoundError):  # the admin token: the default tenant's store
        admin.store.get_item(ns, key="plan")
    named = admin.store.get_item(ns, key="plan", params={"tenant": "acme"})
    assert named["value"] == {"text": "acme buys globex"}
    acme.store.delete_item(ns, key="plan")
    assert globex.store.get_item(ns, key="plan")["value"] == {"text": "globex's own"}


def test_crons_are_each_tenants_own(apt: Cluster) -> None:
    acme, globex, admin = lg(apt, ACME), lg(apt, GLOBEX), lg(apt, ADMIN)
    tid = acme.threads.create()["thread_id"]
    on_thread = acme.crons.create_for_thread(tid, "echo", schedule="@every 1h", input=HI)
    stateless = acme.crons.create("echo", schedule="@every 1h", input=HI)
    ids = {on_thread["cron_id"], stateless["cron_id"]}
    assert on_thread["thread_id"] == tid
    assert ids <= {c["cron_id"] for c in acme.crons.search(limit=1000)}
    assert not ids & {c["cron_id"] for c in globex.crons.search(limit=1000)}
    assert globex.crons.search(thread_id=tid) == []
    assert not ids & {c["cron_id"] for c in admin.crons.search(limit=1000)}
    named = admin.crons.search(limit=1000, params={"tenant": "acme"})
    assert ids <= {c["cron_id"] for c in named}
    for cron_id in ids:
        with pytest.raises(NotFoundError):
            globex.crons.delete(cron_id)
    with http(apt, ADMIN) as h:  # the walrus crons: of acme, into acme's conversations
        entries = {e["id"]: e for e in h.get("/v1/crons").json()["crons"]}
    assert {entries[i]["tenant"] for i in ids} == {"acme"}
    assert entries[on_thread["cron_id"]]["sender"] == f"thread:{tid}"
    for cron_id in ids:
        acme.crons.delete(cron_id)
    assert not ids & {c["cron_id"] for c in acme.crons.search(limit=1000)}


def test_a_tenant_token_reads_the_shared_assistants_and_changes_none(apt: Cluster) -> None:
    acme = lg(apt, ACME)
    assert [a["assistant_id"] for a in acme.assistants.search(graph_id="echo")] == ["echo"]
    assert acme.assistants.get("echo")["graph_id"] == "echo"
    assert "messages" in acme.assistants.get_schemas("echo")["input_schema"]["properties"]
    refused(403, lambda: acme.assistants.create("echo", assistant_id="mine"))
    refused(403, lambda: acme.assistants.update("echo", metadata={"owner": "acme"}))
    refused(403, lambda: acme.assistants.delete("echo"))
    with http(apt, ACME) as h:
        for method, path in (("POST", "/assistants"), ("PATCH", "/assistants/echo"),
                             ("DELETE", "/assistants/echo"), ("GET", "/v1/stats")):  # fmt: skip
            resp = h.request(method, path, json={})
            assert resp.status_code == 403, (method, path, resp.text)
            assert resp.json()["error"]["code"] == "forbidden"


def test_a_tenant_token_naming_a_tenant_is_refused_and_writes_nothing(apt: Cluster) -> None:
    acme = lg(apt, ACME)
    before = apt.redis().zcard(keys.ap_threads("globex"))
    refused(403, lambda: acme.threads.create(params={"tenant": "globex"}))
    refused(403, lambda: acme.runs.wait(None, "echo", input=HI, params={"tenant": "globex"}))
    put = {"key": "k", "value": {"a": 1}, "params": {"tenant": "globex"}}
    refused(403, lambda: acme.store.put_item(["x"], **put))
    tid = acme.threads.create()["thread_id"]  # a rejoined stream (the plain ASGI route) too
    run = acme.runs.create(tid, "echo", input=HI)
    refused(
        403, lambda: list(acme.runs.join_stream(tid, run["run_id"], params={"tenant": "globex"}))
    )
    assert apt.redis().zcard(keys.ap_threads("globex")) == before
    assert not apt.redis().exists(keys.ap_store("x", "globex"))


def test_the_default_tenant_keeps_todays_keys(apt: Cluster) -> None:
    admin = lg(apt, ADMIN)
    tid = admin.threads.create()["thread_id"]
    admin.runs.wait(tid, "echo", input=HI)
    ns = uuid.uuid4().hex[:8]
    admin.store.put_item([ns], key="k", value={"a": 1})
    r = apt.redis()
    assert r.hget(f"walrus:ap:thread:{tid}", "thread_id") == tid
    assert r.zscore("walrus:ap:threads", tid) is not None
    assert r.llen(f"walrus:ap:thread:{tid}:runs") == 1
    assert r.hexists(f"walrus:ap:store:ns:{ns}", "k")
    assert r.sismember("walrus:ap:store:namespaces", ns)
    assert history_len(apt, "echo", f"thread:{tid}") == 2
    [run] = admin.runs.list(tid)
    assert run_info(apt, run["run_id"])["tenant"] is None


# --- metrics and usage by tenant -------------------------------------------------------------


def tenant_figures(c: Cluster) -> dict[tuple[str, str, str], float]:
    """``(family, tenant, status or kind) -> value`` of the tenant families of ``/metrics``."""
    with httpx.Client(base_url=c.gateway_url, timeout=30) as h:
        text = h.get("/metrics").text
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("walrus_tenant_runs_total", "walrus_tenant_tokens_total"):
                label = sample.labels.get("status") or sample.labels["kind"]
                out[(sample.name, sample.labels["tenant"], label)] = sample.value
    return out


def test_runs_and_tokens_are_counted_by_tenant(apt: Cluster, fake_llm: Any) -> None:
    runs, tokens = "walrus_tenant_runs_total", "walrus_tenant_tokens_total"
    before = tenant_figures(apt)
    for token, tenant in ((ACME, None), (ACME, None), (ADMIN, "zeta")):
        fake_llm.script(FakeReply(text="counted", usage=(11, 7)), model=MODEL)
        params = {"tenant": tenant} if tenant else None
        out = lg(apt, token).runs.wait(None, "counted", input=HI, params=params)
        assert out["messages"][-1]["content"] == "counted"
    after = tenant_figures(apt)

    def grew(key: tuple[str, str, str]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew((runs, "acme", "succeeded")) == 2
    assert (grew((tokens, "acme", "input")), grew((tokens, "acme", "output"))) == (22, 14)
    assert grew((runs, "globex", "succeeded")) == 0
    assert grew((tokens, "globex", "input")) == 0
    # A tenant no token names (an admin's choice) is one folded series, not one per name.
    assert grew((runs, "(other)", "succeeded")) == 1
    assert not any(tenant == "zeta" for _, tenant, _ in after)
    assert {tenant for _, tenant, _ in after} <= {"acme", "globex", "(default)", "(other)"}
    with http(apt, ADMIN) as h:
        stats = h.get("/v1/stats").json()["tenants"]
    assert stats["acme"]["succeeded"] >= 2 and stats["acme"]["input_tokens"] >= 22
    assert stats["zeta"]["succeeded"] >= 1


# --- export / import of a tenant's memory ------------------------------------------------------


def test_an_export_round_trips_each_tenants_agent_memory(r: redis.Redis, tmp_path: Path) -> None:
    memory.remember(r, "keeper", "plan", "acme buys globex", tenant="acme")
    memory.remember(r, "keeper", "plan", "globex buys acme", ["scheme"], tenant="globex")
    memory.remember(r, "keeper", "plan", "the default tenant's plan")
    # A store namespace of a tenant whose name looks like memory is not memory.
    r.hset(keys.ap_store("x:memory:keeper", "acme"), "k", "{}")

    def owned() -> dict[str, Any]:
        return {t: [e.model_dump() for e in memory.entries(r, "keeper", t)]
                for t in ("acme", "globex", None)}  # fmt: skip

    before = owned()
    summary = export_state(r, tmp_path / "out")
    assert summary.memories == 3
    assert (tmp_path / "out" / "memory" / "acme" / "keeper.jsonl").exists()
    assert "globex buys acme" in (tmp_path / "out/memory/globex/keeper.jsonl").read_text()
    assert (tmp_path / "out" / "memory" / "keeper.jsonl").exists()

    r.flushdb()
    memory.remember(r, "keeper", "stale", "must go", tenant="zeta")  # replaced, not merged
    with pytest.raises(Conflict):  # zeta's memory is state: no silent overwrite
        import_state(r, tmp_path / "out", replace=False)
    assert import_state(r, tmp_path / "out", replace=True) == summary
    assert owned() == before
    assert memory.entries(r, "keeper", "zeta") == []
    assert memory.dump_tenants(r).keys() == {"acme", "globex"}


def test_an_import_refuses_a_bad_tenant_directory_and_writes_nothing(
    r: redis.Redis, tmp_path: Path
) -> None:
    memory.remember(r, "keeper", "plan", "acme's", tenant="acme")
    export_state(r, tmp_path / "out")
    (tmp_path / "out/memory/acme").rename(tmp_path / "out/memory/no good")
    r.flushdb()
    with pytest.raises(InvalidInput, match="not the memory of a tenant"):
        import_state(r, tmp_path / "out", replace=True)
    assert r.dbsize() == 0
