"""Usage and cost by tenant, agent and model: counted with each committed step, read back grouped.

One cluster (a gateway and a worker) with a price table, an admin token and a tenant token
(``acme``). The module's runs use two agents and two models, one of them reached as a
fallback, in two tenants; every test reads what they counted: ``GET /v1/usage`` grouped by each
dimension sums exactly, a tenant token sees its tenant only, bad input is a clear 422, the
hourly buckets expire, ``/metrics`` counts the same, and so do ``walrus usage``, the Python
client and the console's Usage page.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.browser import DESKTOP, PHONE, Page, browser, shots
from tests.cluster import Cluster, running, wait_for
from tests.conftest import redis_db_url, write_agents, write_home
from tests.fakellm import FakeError, FakeLLM, FakeReply
from walrus_tasks import indexes, keys
from walrus_tasks.client import Client
from walrus_tasks.lease import Fence
from walrus_tasks.metrics import DEFAULT_TENANT
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.runs import acquire, commit, record_tool_result
from walrus_tasks.submit import submit
from walrus_tasks.usage import hour_of

__all__ = ["browser", "shots"]  # fixtures

ADMIN = f"admin-{uuid.uuid4().hex}"
ACME = f"acme-{uuid.uuid4().hex}"
MODEL_A, MODEL_B = "fake/m-usage-a", "fakeant/m-usage-b"
PRICES = {MODEL_A: (2.0, 8.0), MODEL_B: (1.0, 4.0)}
"""USD per million input and output tokens; m-usage-b's is given by its bare name."""
RETENTION_DAYS = 2
AGENTS = {
    "ua": f"""
        model = "{MODEL_A}"
        fallback_models = ["{MODEL_B}"]
        retries = 0
    """,
    "ub": f"""
        model = "{MODEL_B}"
        tools = ["clock"]
    """,
}
CELLS = {
    ("", "ua", MODEL_A): (100, 10, 1, 1),
    ("", "ua", MODEL_B): (50, 5, 1, 1),  # the fallback's tokens count under the fallback
    ("acme", "ub", MODEL_B): (20 + 25, 2 + 4, 2, 1),  # a tool call, then the answer
    ("acme", "ua", MODEL_A): (60, 6, 1, 1),
}
"""What the module's runs count: (tenant, agent, model) -> (input, output, calls, runs)."""


@pytest.fixture(scope="module")
def usage_home(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM) -> Path:
    home = write_home(tmp_path_factory.mktemp("usage-home"), fake_llm.base_url)
    write_agents(home, AGENTS)
    with (home / "config.toml").open("a") as f:
        f.write(
            f'\n[gateway]\ntokens = ["{ADMIN}", {{ token = "{ACME}", tenant = "acme" }}]\n'
            f'\n[prices."{MODEL_A}"]\ninput_per_mtok = 2.0\noutput_per_mtok = 8.0\n'
            '\n[prices."m-usage-b"]\ninput_per_mtok = 1.0\noutput_per_mtok = 4.0\n'
        )
    return home


@pytest.fixture(scope="module")
def uc(
    redis_server: RedisServer, usage_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and a worker whose usage buckets live ``RETENTION_DAYS``."""
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=usage_home,
        log_dir=tmp_path_factory.mktemp("usage-logs"),
        env_extra={"WALRUS_USAGE_RETENTION_DAYS": str(RETENTION_DAYS)},
    )
    with running(c):
        yield c


def client(cluster: Cluster, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=cluster.gateway_url, timeout=30, headers=headers)


def run(cluster: Cluster, token: str, agent: str, content: str) -> dict[str, Any]:
    """Send one message and wait for its run to end; the run's record."""
    with client(cluster, token) as c:
        resp = c.post(f"/v1/agents/{agent}/messages", json={"content": content})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info: dict[str, Any] = c.get(f"/v1/runs/{run_id}").json()
            if info["status"] in ("succeeded", "failed", "cancelled"):
                return info
            time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end")


@pytest.fixture(scope="module")
def used(uc: Cluster, fake_llm: FakeLLM) -> Cluster:
    """The module's runs (``CELLS``), each ended."""
    fake_llm.script(FakeReply(text="a", usage=(100, 10)), model="m-usage-a")
    assert run(uc, ADMIN, "ua", "one")["status"] == "succeeded"
    fake_llm.script(FakeError(status=500, message="down"), model="m-usage-a")
    fake_llm.script(FakeReply(text="b", usage=(50, 5)), model="m-usage-b")
    fell_back = run(uc, ADMIN, "ua", "two")
    assert fell_back["status"] == "succeeded" and fell_back["model"] == MODEL_B, fell_back
    fake_llm.script(
        FakeReply(tool_calls=[("clock", {})], usage=(20, 2)),
        FakeReply(text="c", usage=(25, 4)),
        model="m-usage-b",
    )
    assert run(uc, ACME, "ub", "three")["status"] == "succeeded"
    fake_llm.script(FakeReply(text="d", usage=(60, 6)), model="m-usage-a")
    assert run(uc, ACME, "ua", "four")["status"] == "succeeded"
    return uc


def cost(model: str, tokens_in: int, tokens_out: int) -> float:
    price_in, price_out = PRICES[model]
    return (tokens_in * price_in + tokens_out * price_out) / 1_000_000


def expected(dims: list[str], tenant: str | None = None) -> dict[tuple[str, ...], dict[str, Any]]:
    """``CELLS`` summed by ``dims`` (of ``tenant`` only, if named), as the rows say them."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for (t, agent, model), (i, o, calls, runs) in CELLS.items():
        if tenant is not None and t != tenant:
            continue
        names = {"tenant": t or DEFAULT_TENANT, "agent": agent, "model": model}
        row = out.setdefault(
            tuple(names[d] for d in dims),
            {"input_tokens": 0, "output_tokens": 0, "calls": 0, "runs": 0, "cost_usd": 0.0},
        )
        row["input_tokens"] += i
        row["output_tokens"] += o
        row["calls"] += calls
        row["runs"] += runs
        row["cost_usd"] += cost(model, i, o)
    return out


def figures(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("input_tokens", "output_tokens", "calls", "runs", "cost_usd")}


def usage(cluster: Cluster, token: str, **params: Any) -> httpx.Response:
    with client(cluster, token) as c:
        return c.get("/v1/usage", params=params)


def assert_rows(rows: list[dict[str, Any]], dims: list[str], tenant: str | None = None) -> None:
    """``rows`` grouped by ``dims`` are ``expected``'s exactly (cost to a millionth of a cent)."""
    got = {tuple(row[d] for d in dims): figures(row) for row in rows}
    want = expected(dims, tenant)
    assert got.keys() == want.keys()
    for key, row in want.items():
        counts = ("input_tokens", "output_tokens", "calls", "runs")
        assert [got[key][k] for k in counts] == [row[k] for k in counts], key
        assert got[key]["cost_usd"] == pytest.approx(row["cost_usd"], abs=1e-8), key


@pytest.mark.parametrize("dims", [["tenant"], ["agent"], ["model"], ["tenant", "agent", "model"]])
def test_usage_grouped_by_each_dimension_sums_exactly(used: Cluster, dims: list[str]) -> None:
    resp = usage(used, ADMIN, group_by=",".join(dims))
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["group_by"] == dims
    assert_rows(report["rows"], dims)
    assert_rows([report["totals"]], [])
    assert report["unpriced_models"] == []
    assert report["to"] - report["from"] >= 7 * 24 * 3600  # the default range: 7 days


def test_usage_by_day_and_by_hour_adds_up_to_the_totals(used: Cluster) -> None:
    total = figures(expected([])[()])
    for period in ("day", "hour"):
        report = usage(used, ADMIN, group_by=f"{period},agent").json()
        assert report["group_by"] == [period, "agent"]
        assert all(row["period"] and row["model"] is None for row in report["rows"])
        summed = {k: sum(row[k] for row in report["rows"]) for k in total}
        assert summed == pytest.approx(total, abs=1e-6), period
    today = time.strftime("%Y-%m-%d", time.gmtime())
    by_day = usage(used, ADMIN, group_by="day").json()["rows"]
    assert today in {row["period"] for row in by_day}


def test_a_tenant_token_sees_only_its_tenants_usage(used: Cluster) -> None:
    mine = usage(used, ACME, group_by="tenant,agent,model").json()
    assert {row["tenant"] for row in mine["rows"]} == {"acme"}
    assert_rows(mine["rows"], ["tenant", "agent", "model"], tenant="acme")
    assert_rows([mine["totals"]], [], tenant="acme")
    named = usage(used, ACME, tenant="acme")
    assert named.status_code == 403 and "acme" in named.json()["error"]["message"]
    admin_view = usage(used, ADMIN, tenant="acme", group_by="agent").json()
    assert admin_view["totals"] == mine["totals"]
    only = usage(used, ADMIN, agent="ua", model=MODEL_B).json()["totals"]
    assert (only["input_tokens"], only["output_tokens"], only["calls"]) == (50, 5, 1)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"group_by": "colour"}, ["colour", "tenant, agent, model, hour, day"]),
        ({"group_by": "hour,day"}, ["hour or day"]),
        ({"from": "2025-06-02", "to": "2025-06-01"}, ["must be before"]),
        ({"from": "2025-01-01", "to": "2025-06-01"}, ["151.0 days", "at most 93 days"]),
        ({"from": "last tuesday"}, ["from", "not a time"]),
        ({"to": "nan"}, ["to", "not a time"]),
        ({"agent": "Not An Agent"}, ["agent"]),
    ],
)
def test_bad_usage_requests_are_a_clear_422(
    used: Cluster, params: dict[str, str], words: list[str]
) -> None:
    resp = usage(used, ADMIN, **params)
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert all(w in message for w in words), message


def test_a_range_is_read_in_whole_hours_and_an_empty_one_answers_zero(used: Cluster) -> None:
    now = time.time()
    report = usage(used, ADMIN, **{"from": str(now - 60), "to": str(now)}).json()
    assert report["from"] % 3600 == 0 and report["to"] % 3600 == 0
    assert report["from"] <= now - 60 and report["to"] >= now
    long_ago = usage(used, ADMIN, **{"from": "2020-01-01T00:00:00Z", "to": "2020-01-08"}).json()
    assert long_ago["rows"] == [] and long_ago["totals"]["input_tokens"] == 0
    assert long_ago["from"] == 1577836800  # ISO 8601 in UTC


def test_hourly_buckets_expire_after_the_retention_and_totals_do_not(used: Cluster) -> None:
    r = used.redis()
    every = range(keys.BUCKETS)
    buckets = sorted(k for b in every for k in r.scan_iter(keys.usage_hour("*", b)))
    now = time.time()
    hours = {key.rsplit(":", 1)[1] for key in buckets}
    assert 1 <= len(hours) <= 2  # the module's runs took seconds: an hour, or two at most
    assert hours <= {hour_of(t) for t in (now, now - 3600)}
    for key in buckets:
        ttl = r.ttl(key)
        assert RETENTION_DAYS * 86400 - 3600 < ttl <= RETENTION_DAYS * 86400 + 3600, (key, ttl)
    totals = [keys.usage_totals(b) for b in every if r.exists(keys.usage_totals(b))]
    assert totals and all(r.ttl(key) == -1 for key in totals)
    fields = indexes.read_summed(r, totals)
    assert fields[f"acme|ub|{MODEL_B}|calls"] == "2"
    assert fields[f"|ua|{MODEL_A}|in"] == "100"


def test_a_step_committed_twice_counts_once_and_a_cancel_before_any_output_not_at_all(
    r: redis.Redis, sender: str
) -> None:
    scoped = f"acme/{sender}"
    submit(r, "echo", scoped, "hello")
    acquired = acquire(r, "echo", scoped)
    assert acquired is not None and acquired.run_id is not None
    fence = Fence("echo", scoped, acquired.run_id, acquired.token)
    calls = [{"id": "c1", "name": "clock", "arguments": {}}]
    message = {"role": "assistant", "content": "", "tool_calls": calls}
    for state in ("ok", "stale"):  # a duplicated delivery's commit is refused: counted once
        assert commit(r, fence, 0, message, "tools", calls, (7, 3), "fake/x") == state
    tool = {"role": "tool", "tool_call_id": "c1", "content": "now"}
    assert record_tool_result(r, fence, 0, "c1", tool) == "complete"
    assert commit(r, fence, 1, None, "cancelled", [], (0, 0), "fake/x") == "ok"
    b = keys.run_bucket(fence.run_id)  # the run's hash-tag bucket
    bucket = r.hgetall(keys.usage_hour(hour_of(time.time()), b))
    assert r.hgetall(keys.usage_totals(b)) == bucket
    assert bucket == {f"acme|echo|fake/x|{k}": v for k, v in
                      {"in": "7", "out": "3", "calls": "1", "runs": "1"}.items()}  # fmt: skip


def test_metrics_count_tokens_calls_and_cost_by_tenant_agent_and_model(used: Cluster) -> None:
    with used.http() as c:
        text = c.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def sample(name: str, tenant: str, agent: str, model: str, **extra: str) -> float:
        labels = {"tenant": tenant or DEFAULT_TENANT, "agent": agent, "model": model, **extra}
        return samples[(name, tuple(sorted(labels.items())))]

    for (tenant, agent, model), (i, o, calls, _) in CELLS.items():
        assert sample("walrus_llm_tokens_total", tenant, agent, model, direction="input") == i
        assert sample("walrus_llm_tokens_total", tenant, agent, model, direction="output") == o
        assert sample("walrus_llm_calls_total", tenant, agent, model) == calls
        assert sample("walrus_llm_cost_usd_total", tenant, agent, model) == pytest.approx(
            cost(model, i, o)
        )


def walrus(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100", "WALRUS_URL": cluster.gateway_url, "WALRUS_TOKEN": ADMIN}
    return subprocess.run(
        [sys.executable, "-m", "walrus_tasks.cli", "usage", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_walrus_usage_prints_the_table_and_the_json(used: Cluster) -> None:
    shown = walrus(used, "--by", "agent,model", "--since", "7d")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    row = next(line for line in lines if "ua" in line and MODEL_A in line)
    assert "160" in row and "16" in row  # 100 + 60 in, 10 + 6 out
    assert f"{cost(MODEL_A, 160, 16):.4f}" in row
    total = next(line for line in lines if "total" in line)
    assert f"{sum(c[0] for c in CELLS.values())}" in total
    as_json = walrus(used, "--by", "tenant", "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert {row["tenant"] for row in report["rows"]} == {DEFAULT_TENANT, "acme"}
    bad = walrus(used, "--by", "colour")
    assert bad.returncode != 0 and "colour" in bad.stderr


def test_the_python_client_reads_the_same_usage(used: Cluster) -> None:
    with Client(used.gateway_url, token=ACME) as c:
        report = c.usage(["agent", "model"], since="1d", agent="ub")
    assert [(r.agent, r.model) for r in report.rows] == [("ub", MODEL_B)]
    assert report.totals.calls == 2 and report.totals.input_tokens == 45
    assert report.totals.cost_usd == pytest.approx(cost(MODEL_B, 45, 6))


def test_the_console_usage_page_draws_the_chart_and_the_rows(
    browser: Any, used: Cluster, shots: Path
) -> None:
    page = Page(browser, used.gateway_url, DESKTOP)
    try:
        # The token the console would ask for once, already kept for the tab.
        page.context.add_init_script(f"sessionStorage.setItem('walrus.token', '{ADMIN}')")
        pg: Any = page.open("usage")
        row = pg.locator(f'#usage-rows tr[data-agent="ua"][data-model="{MODEL_A}"]')
        row.wait_for()
        assert "160" in row.inner_text()
        assert f"${cost(MODEL_A, 160, 16):.4f}" in row.inner_text()
        assert pg.locator("#usage-rows tr").count() == 3
        today = time.strftime("%Y-%m-%d", time.gmtime())
        bars = pg.locator(f'#usage-chart g.slot[data-period="{today}"] rect.bar')
        assert bars.count() == 2  # input and output, stacked
        assert pg.locator("#usage-chart g.slot").count() >= 7
        title = pg.locator(f'#usage-chart g.slot[data-period="{today}"] title').text_content()
        tokens_in = sum(c[0] for c in CELLS.values())
        assert f"{today}: {tokens_in:,} in" in title
        totals = pg.locator("#usage-totals").text_content()
        assert totals.startswith("total") and f"{tokens_in:,}" in totals
        pg.screenshot(path=str(shots / "console-usage.png"))
        pg.select_option("#usage-metric", "cost")
        pg.locator(f'#usage-chart g.slot[data-period="{today}"] rect.bar.cost').wait_for()
        pg.select_option("#usage-range", "1d")
        # By hour now: a slot for each of the last 24 hours (25 when the range starts mid-hour).
        # Polled from here: the page's CSP forbids the string eval of wait_for_function's polls.
        wait_for(lambda: pg.locator("#usage-chart g.slot").count() >= 24, 10, 0.1, "24 slots")
        assert pg.locator("#usage-chart g.slot rect.bar.cost").count() >= 1
        pg.set_viewport_size(PHONE)
        pg.screenshot(path=str(shots / "console-usage-phone.png"))
    finally:
        page.close()
    assert page.errors == [], "JavaScript or console errors"
