"""A run's timeline in the console (``views/timeline.js``), in a real browser against a real
gateway, worker and fake LLM: where a tool-calling run's time went (queue wait, two LLM calls,
the tool between them, widths in proportion to durations), growing live; an ``ask_user`` wait;
and the pure derivation from crafted events (retries, a lost worker's restart, waits).

The agents ``helper`` and ``asker`` are ``tests.test_console``'s, carried by the session home.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import DESKTOP, PHONE, Page, browser, shots
from tests.cluster import Cluster
from tests.fakellm import FakeLLM, FakeReply
from tests.test_console import QUESTION
from walrus_tasks.event_types import RUN_EVENT

__all__ = ["browser", "shots"]  # fixtures

ROWS = """rs => rs.map(r => ({
    kind: r.dataset.kind, start: +r.dataset.start, end: +r.dataset.end,
    name: r.querySelector('.tl-name').textContent, open: r.classList.contains('open'),
}))"""
BARS = """bs => bs.map(b => ({
    kind: b.closest('.tl-row').dataset.kind, cls: b.className, ms: +b.dataset.ms,
    width: b.getBoundingClientRect().width,
    track: b.parentElement.getBoundingClientRect().width,
}))"""
DRAW = """async ([frames, run]) => {
    const m = await import('/console/ui/views/timeline.js');
    const el = document.createElement('div');
    el.className = 'tl';
    el.id = 'run-timeline';
    document.getElementById('main').replaceChildren(el);
    m.draw(el, m.derive(frames.map(([id, data]) => ({ id, data })), run));
}"""
DERIVE = """async ([frames, run]) => {
    const m = await import('/console/ui/views/timeline.js');
    return m.derive(frames.map(([id, data]) => ({ id, data })), run);
}"""


@pytest.fixture
def page(browser: Any, cluster: Cluster) -> Iterator[Page]:
    p = Page(browser, cluster.gateway_url, DESKTOP)
    yield p
    p.close()
    assert p.errors == [], "JavaScript or console errors"


@pytest.fixture(scope="module")
def warm(cluster: Cluster, fake_llm: FakeLLM) -> None:
    """One LLM call on each worker process first: a cold process's first call (its provider
    set up) takes a second or more, which would blur the fast call the test measures."""
    fake_llm.script(*[FakeReply(text="warm")] * 4, model="m-console")
    runs = [cluster.send("helper", "warm up", f"warm-{i}") for i in range(4)]
    for run_id in runs:
        cluster.wait_run(run_id)


def rows(pg: Any) -> list[dict[str, Any]]:
    return pg.eval_on_selector_all("#run-timeline .tl-row[data-kind]", ROWS)  # type: ignore[no-any-return]


def test_a_tool_calling_runs_timeline_shows_its_queue_wait_llm_calls_and_tool_in_time_order(
    warm: None, page: Page, cluster: Cluster, fake_llm: FakeLLM, sender: str, shots: Path
) -> None:
    words = " ".join(f"w{i}" for i in range(1, 21))
    fake_llm.script(
        FakeReply(tool_calls=[("clock", {})]),  # a fast first call
        FakeReply(text=f"It is late: {words}", chunk_delay=0.25),  # a slow second one (5 s+)
        model="m-console",
    )
    run_id = cluster.send("helper", "What time is it?", sender)
    pg: Any = page.open(f"runs/{run_id}")
    # Live: an LLM call still streaming is an open bar, and it grows as its events arrive.
    pg.locator("#run-timeline .tl-row.llm.open").first.wait_for()
    seen = [r for r in rows(pg) if r["open"]]
    pg.locator("#run-timeline .tl-row.end").wait_for()
    pg.locator("#timeline li.ev.end").wait_for()
    got = rows(pg)
    assert [r["kind"] for r in got] == ["queue", "llm", "tool", "llm", "end"]
    queue, llm1, tool, llm2, end = got
    assert [llm1["name"], tool["name"], llm2["name"]] == ["LLM · step 0", "clock", "LLM · step 1"]
    assert end["name"] == "end · succeeded" and not any(r["open"] for r in got)
    assert queue["start"] == 0 <= queue["end"] <= llm1["start"]
    # The LLM call ends before the tool starts, the tool ends before the next call starts.
    assert llm1["end"] <= tool["start"] < tool["end"] <= llm2["start"] < llm2["end"] <= end["start"]
    assert llm2["end"] - llm2["start"] >= 5000  # 21 chunks 0.25 s apart
    grown = next(r for r in got if r["name"] == seen[0]["name"])
    assert grown["end"] > seen[0]["end"]
    # Widths in proportion to durations (to a pixel or two), so the slow call is the wider.
    bars = pg.eval_on_selector_all("#run-timeline .tl-track .tl-bar", BARS)
    span = max(r["end"] for r in got)
    for b in bars:
        if b["kind"] != "end":
            assert abs(b["width"] - max(2, b["ms"] / span * b["track"])) < 2.5, b
    [fast, slow] = [b for b in bars if b["kind"] == "llm"]
    assert slow["ms"] > fast["ms"] and slow["width"] > fast["width"]
    # The tool bar's solid part is the tool running (its duration_ms), inside the whole call.
    [called, ran] = [b for b in bars if b["kind"] == "tool"]
    assert "ran" in ran["cls"] and ran["ms"] <= called["ms"]
    assert "clock" in pg.locator("#run-timeline .tl-row.tool").get_attribute("title")
    assert pg.locator("#run-trace").count() == 0  # no trace id on this run
    pg.screenshot(path=str(shots / "console-timeline.png"), full_page=True)
    pg.set_viewport_size(PHONE)  # on a phone: narrower labels, and no sideways scrolling
    assert pg.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    pg.screenshot(path=str(shots / "console-timeline-phone.png"), full_page=True)


def test_an_ask_user_runs_timeline_shows_the_wait_until_it_is_answered(
    page: Page, cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]),
        FakeReply(text="blue it is"),
        model="m-console-ask",
    )
    run_id = cluster.send("asker", "pick a colour", sender)
    pg: Any = page.page
    # A run sent under a trace shows its trace id. The record has ``trace_id`` only when the
    # accepting gateway exports traces (docs/tracing.md), which this cluster's does not: it is
    # added here to the gateway's real answer.
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    def with_trace(route: Any) -> None:
        resp = route.fetch()
        route.fulfill(response=resp, json={**resp.json(), "trace_id": trace})

    pg.route(f"**/v1/runs/{run_id}", with_trace)
    page.open(f"runs/{run_id}")
    assert pg.locator("#run-trace").inner_text() == trace
    pg.locator("#run-timeline .tl-row.wait.open").wait_for()
    with cluster.http() as c:  # the one open question of the conversation
        resp = c.post(f"/v1/agents/asker/conversations/{sender}/reply", json={"content": "blue"})
        assert resp.status_code == 200, resp.text
    pg.locator("#run-timeline .tl-row.end").wait_for()
    got = {r["kind"]: r for r in rows(pg)}
    wait, tool = got["wait"], got["tool"]
    assert wait["name"] == "wait · question" and tool["name"] == "ask_user"
    # The wait is inside the call, from the question to the answer's tool_result.
    assert tool["start"] <= wait["start"] < wait["end"] == tool["end"]
    assert not wait["open"]


def test_the_derivation_places_retries_restarts_waits_and_parallel_tools(
    page: Page, shots: Path
) -> None:
    # A crafted run: queued 100 ms; step 0 streams, its worker is lost, the step runs again
    # and calls two tools at once, one waiting on an approval; step 1 fails after streaming
    # (restart, then retry after 200 ms on a fallback model), then succeeds.
    # fmt: off
    frames = [
        ("1000-0", {"type": "start", "run_id": "r", "agent": "a", "sender": "s"}),
        ("1010-0", {"type": "text_start"}),
        ("1050-0", {"type": "chunk", "content": "lost"}),
        ("1500-0", {"type": "restart", "step": 0, "reason": "worker lost"}),
        ("1500-1", {"type": "thinking", "content": "again"}),
        ("1700-0", {"type": "tool_start", "calls": [
            {"id": "c1", "name": "clock", "arguments": {}},
            {"id": "c2", "name": "shell", "arguments": {"cmd": "ls"}},
        ]}),
        ("1720-0", {"type": "tool_result", "call_id": "c1", "name": "clock", "output": "now",
                    "is_error": False, "duration_ms": 5}),
        ("1730-0", {"type": "ask_user", "kind": "approval", "questions": [], "call_id": "c2",
                    "tool": {"name": "shell"}}),
        ("2730-0", {"type": "tool_result", "call_id": "c2", "name": "shell", "output": "",
                    "is_error": True, "duration_ms": 30}),
        ("2731-0", {"type": "tools_complete"}),
        ("2800-0", {"type": "chunk", "content": "half"}),
        ("2900-0", {"type": "restart", "step": 1, "reason": "HTTP 500"}),
        ("2900-1", {"type": "retry", "attempt": 1, "delay_ms": 200, "reason": "HTTP 500",
                    "model": "fb"}),
        ("3300-0", {"type": "chunk", "content": "done"}),
        ("3350-0", {"type": "text_end"}),
        ("3360-0", {"type": "end", "status": "succeeded",
                    "usage": {"input_tokens": 1, "output_tokens": 1}, "model": "fb"}),
    ]
    # fmt: on
    for _, event in frames:
        RUN_EVENT.validate_python(event)  # the grammar's events, as the stream holds them
    pg: Any = page.open("agents")
    pg.locator("#agents").wait_for()
    out = pg.evaluate(DERIVE, [frames, {"created_at": 0.9, "model": "m"}])
    spans = [(r["kind"], r["label"], r["start"], r["end"]) for r in out["rows"]]
    assert spans == [
        ("queue", "queue wait", 900, 1000),
        ("llm", "LLM · step 0", 1000, 1700),
        ("tool", "clock", 1700, 1720),
        ("tool", "shell", 1700, 2730),
        ("wait", "wait · approval · shell", 1730, 2730),
        ("llm", "LLM · step 1", 2731, 3350),
        ("end", "end · succeeded", 3360, 3360),
    ]
    assert (out["start"], out["end"], out["ended"]["status"]) == (900, 3360, "succeeded")
    step0, step1 = (r for r in out["rows"] if r["kind"] == "llm")
    # The lost worker's attempt is void, up to where the step was claimed again.
    assert [(s["start"], s["end"], s["cls"].split()) for s in step0["segments"]] == [
        (1000, 1500, ["void"]),
        (1500, 1700, []),
    ]
    # The failed attempt is void and failed; a back-off; the retry on the fallback model.
    assert [(s["start"], s["end"], s["cls"].split()) for s in step1["segments"]] == [
        (2731, 2900, ["void", "failed"]),
        (2900, 3100, ["backoff"]),
        (3100, 3350, []),
    ]
    assert step1["retries"] == 1 and "model fb" in step1["segments"][2]["title"]
    shell = next(r for r in out["rows"] if r["label"] == "shell")
    assert [(s["start"], s["end"]) for s in shell["segments"]] == [(1700, 2730), (2700, 2730)]
    assert "failed" in shell["segments"][1]["cls"]
    # Drawn: each segment a bar of its kind, a void attempt and a back-off told apart.
    pg.evaluate(DRAW, [frames, {"created_at": 0.9, "model": "m"}])
    assert [r["kind"] for r in rows(pg)] == [r["kind"] for r in out["rows"]]
    classes = pg.eval_on_selector_all(
        "#run-timeline .tl-track .tl-bar", "bs => bs.map(b => b.className)"
    )
    assert classes == [
        "tl-bar queue",
        "tl-bar llm void", "tl-bar llm",
        "tl-bar tool queued", "tl-bar tool ran",
        "tl-bar tool queued", "tl-bar tool ran failed",
        "tl-bar wait approval",
        "tl-bar llm void failed", "tl-bar llm backoff", "tl-bar llm",
        "tl-bar end succeeded",
    ]  # fmt: skip
    pg.locator("#run-timeline").screenshot(path=str(shots / "console-timeline-kinds.png"))
    # A compaction before the call is its own bar, and the call starts after it; a failed run
    # ends its open call at the end, failed.
    failing = [
        ("100-0", {"type": "start", "run_id": "r", "agent": "a", "sender": "s"}),
        ("150-0", {"type": "user_steered", "content": "also this"}),
        ("400-0", {"type": "compacted", "content": "summary", "archived": 8}),
        ("450-0", {"type": "thinking", "content": "hm"}),
        ("900-0", {"type": "end", "status": "failed", "error": "boom",
                   "usage": {"input_tokens": 0, "output_tokens": 0}, "model": None}),
    ]  # fmt: skip
    for _, event in failing:
        RUN_EVENT.validate_python(event)
    out = pg.evaluate(DERIVE, [failing, {}])
    assert [(r["kind"], r["start"], r["end"]) for r in out["rows"]] == [
        ("compaction", 150, 400),
        ("llm", 400, 900),
        ("end", 900, 900),
    ]
    assert out["rows"][1]["segments"][0]["cls"].split() == ["failed"]
    assert out["ended"] == {"at": 900, "status": "failed", "error": "boom", "model": None}
    # Cut short mid-call, the call is open up to the latest event.
    live = pg.evaluate(DERIVE, [frames[:3], {}])
    [llm] = live["rows"]  # no created_at: no queue bar
    assert (llm["start"], llm["end"], llm["open"]) == (1000, 1050, True)
