"""A worker killed mid-stream: every client and face shows the reply once, never a wrong word.

``kill -9`` of the worker's process group while its step streams (as ``test_recovery.py``);
the step runs again on the other worker, after a ``restart {reason: "worker lost"}``. The fake
LLM (``tests/fakellm.py``) answers the retried call from its queue: the same text again, or
another one.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langgraph_sdk import get_sync_client

from tests.browser import DESKTOP, Page, browser
from tests.cluster import Cluster, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM, FakeReply
from tests.test_recovery import worker_running
from walrus_tasks import keys
from walrus_tasks.client import Client
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.reply_text import ReplyText

SLOW = " ".join(f"w{i}" for i in range(1, 21))
"""The reply of the mock agent ``slow`` (tests/conftest.py), a word every 250 ms."""

FIRST = " ".join(f"first{i}" for i in range(1, 31))
SECOND = "an entirely different answer"

AGENTS = {"restarty": 'model = "fake/m-restart"\n'}

__all__ = ["browser"]  # a fixture

_replacements = itertools.count(1)


@pytest.fixture(scope="module")
def lossy(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Gateway, two workers and beat; a short lease, so a killed worker's run resumes soon."""
    root = tmp_path_factory.mktemp("lossy")
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=agents_home(root / "home", fake_llm.base_url, AGENTS),
        log_dir=root,
        env_extra={"WALRUS_LEASE_TTL": "4", "WALRUS_REAPER_INTERVAL": "0.5"},
    )
    try:
        c.start_gateway()
        c.start_worker("worker-a")
        c.start_worker("worker-b")
        c.start_beat()
        c.wait_ready()
        yield c
    finally:
        c.stop()


@pytest.fixture
def c(lossy: Cluster, fake_llm: FakeLLM) -> Cluster:
    lossy.wait_ready()  # the replacement of the last test's killed worker too
    fake_llm.reset()
    return lossy


def kill_the_worker_of(c: Cluster, sender: str) -> None:
    """``kill -9`` the worker running ``sender``'s step, and start a replacement."""
    host = wait_for(lambda: worker_running(c, sender), 10, 0.1, "the worker running the run")
    c.kill9(host.split("@")[0])
    c.start_worker(f"worker-r{next(_replacements)}")


def stream_types(c: Cluster, run_id: str) -> list[str]:
    entries = c.redis().xrange(keys.run_part(run_id, "events"))
    return [json.loads(fields["data"])["type"] for _, fields in entries]


def chunks(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "chunk")


def check_native_stream(c: Cluster, run_id: str, reply: str) -> None:
    """The run's SSE stream: the lost attempt's start, one restart, then ``reply`` whole."""
    events = [e for _, e in c.events(run_id)]
    restarts = [i for i, e in enumerate(events) if e["type"] == "restart"]
    assert len(restarts) == 1, [e["type"] for e in events]
    restart = events[restarts[0]]
    assert restart == {"type": "restart", "step": 0, "reason": "worker lost"}
    assert chunks(events[: restarts[0]]), "the lost attempt had streamed"
    assert chunks(events[restarts[0] :]) == reply
    rebuilt = ReplyText()
    for event in events:
        rebuilt.feed(event)
    assert rebuilt.text == reply
    with Client(c.gateway_url) as client:
        assert client.reply_text(run_id) == reply


def test_the_reply_of_a_killed_worker_streams_once_over_sse_and_in_the_cli(
    c: Cluster, sender: str
) -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "walrus_tasks.cli", "send", "slow", "count", "--sender", sender,
         "--url", c.gateway_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**c.env(), "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert cli.stderr is not None
        run_id = cli.stderr.readline().split()[-1]  # "run <id>"
        wait_for(lambda: stream_types(c, run_id).count("chunk") >= 3, 20, 0.05, "3 chunks")
        kill_the_worker_of(c, sender)
        out, err = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err
    check_native_stream(c, run_id, SLOW)
    # The CLI cannot take text back: a marker line parts the lost attempt from the reply.
    before, marker, after = out.partition("[restarted: worker lost]\n")
    assert marker, out
    assert SLOW.startswith(before.rstrip("\n")) and before.strip(), out
    assert after == SLOW + "\n", out
    assert [m["content"] for m in c.history("slow", sender)] == ["count", SLOW]


def openai_stream(
    c: Cluster, fake_llm: FakeLLM, sender: str | None, replies: tuple[str, str]
) -> tuple[str, str, Exception | None]:
    """Stream an answer with the official client; kill the worker after its third word.

    ``replies``: what the fake LLM answers, first slowly, then on the retried call. ``sender``
    None: a stateless request (a one-shot conversation). Returns the run id, the text
    received, and the error the stream ended with.
    """
    fake_llm.script(
        FakeReply(text=replies[0], chunk_delay=0.3), FakeReply(text=replies[1]), model="m-restart"
    )
    received: list[str] = []
    run_id = ""
    with openai.OpenAI(
        base_url=c.gateway_url + "/v1", api_key="unused", max_retries=0, timeout=90
    ) as client:
        stream = client.chat.completions.create(
            model="restarty", messages=[{"role": "user", "content": "hi"}],
            user=sender or openai.omit, stream=True,
        )  # fmt: skip
        try:
            for part in stream:
                run_id = part.id.removeprefix("chatcmpl-")
                if part.choices and part.choices[0].delta.content:
                    received.append(part.choices[0].delta.content)
                    if len(received) == 3:  # step 0 runs in a drain task: named by sender
                        with c.http() as h:
                            kill_the_worker_of(c, h.get(f"/v1/runs/{run_id}").json()["sender"])
        except openai.APIError as e:
            return run_id, "".join(received), e
    return run_id, "".join(received), None


def test_a_restarted_reply_that_differs_ends_the_openai_stream_with_an_error(
    c: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    run_id, received, error = openai_stream(c, fake_llm, sender, (FIRST, SECOND))
    assert isinstance(error, openai.APIError), received
    assert "restarted (worker lost)" in error.message
    assert error.body["code"] == "reply_restarted"  # type: ignore[index]
    assert FIRST.startswith(received) and len(received.split()) >= 3, "no wrong word"
    assert c.wait_run(run_id, timeout=60)["status"] == "succeeded"
    check_native_stream(c, run_id, SECOND)
    assert [m["content"] for m in c.history("restarty", sender)] == ["hi", SECOND]


def test_a_restarted_reply_that_repeats_shows_once_in_the_openai_stream(
    c: Cluster, fake_llm: FakeLLM
) -> None:
    run_id, received, error = openai_stream(c, fake_llm, None, (FIRST, FIRST))
    assert error is None
    assert received == FIRST
    check_native_stream(c, run_id, FIRST)
    with c.http() as h:
        oneshot = h.get(f"/v1/runs/{run_id}").json()["sender"]
    assert oneshot.startswith("oneshot-")
    wait_for(lambda: not c.history("restarty", oneshot), 10, what="the one-shot to go")


def test_a_restarted_reply_that_differs_ends_the_agent_protocol_stream_with_an_error(
    c: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(
        FakeReply(text=FIRST, chunk_delay=0.3), FakeReply(text=SECOND), model="m-restart"
    )
    lg = get_sync_client(url=c.gateway_url, api_key=None)
    tid = lg.threads.create()["thread_id"]
    say = {"messages": [{"role": "user", "content": "hi"}]}
    parts, words = [], 0
    for part in lg.runs.stream(tid, "restarty", input=say, stream_mode="messages-tuple"):
        parts.append(part)
        if part.event == "messages":
            words += 1
            if words == 3:
                kill_the_worker_of(c, tid)
    assert parts[-1].event == "error", parts[-1]
    assert parts[-1].data["error"] == "reply_restarted"
    assert "restarted (worker lost)" in parts[-1].data["message"]
    received = "".join(p.data[0]["content"] for p in parts if p.event == "messages")
    assert FIRST.startswith(received) and len(received.split()) >= 3, "no wrong word"
    run_id = parts[0].data["run_id"]
    assert c.wait_run(run_id, timeout=60)["status"] == "succeeded"
    check_native_stream(c, run_id, SECOND)


def test_the_websocket_forwards_the_restart(c: Cluster, sender: str) -> None:
    """WS is our own protocol: the events go out as they are, ``restart`` included."""
    from websockets.sync.client import connect

    events: list[dict[str, Any]] = []
    ws_url = c.gateway_url.replace("http://", "ws://") + "/v1/ws"
    with connect(ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"id": 1, "op": "stream", "agent": "slow", "content": "count",
                            "sender": sender}))  # fmt: skip
        killed = False
        for _ in range(1000):  # bounded: the reply is 20 words
            frame = json.loads(ws.recv(timeout=90))
            if frame["type"] == "done":
                break
            assert frame["type"] == "event", frame
            events.append(frame["event"])
            if not killed and [e["type"] for e in events].count("chunk") == 3:
                kill_the_worker_of(c, sender)
                killed = True
    assert [e["type"] for e in events].count("restart") == 1
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    rebuilt = ReplyText()
    for event in events:
        rebuilt.feed(event)
    assert rebuilt.text == SLOW


def test_the_console_replaces_the_restarted_steps_text(
    c: Cluster, browser: Any, sender: str
) -> None:
    chat = Page(browser, c.gateway_url, DESKTOP)
    timeline = Page(browser, c.gateway_url, DESKTOP)
    try:
        pg: Any = chat.open(f"chat/slow/{sender}")
        pg.fill("#chat-input", "count to twenty")
        pg.click("#send")
        with c.http() as h:

            def runs() -> list[str]:
                page = h.get("/v1/runs", params={"sender": sender}).json()
                return [r["run_id"] for r in page["runs"]]

            run_id = wait_for(runs, 10, 0.05, "the run")[0]
        tl: Any = timeline.open(f"runs/{run_id}")
        pg.wait_for_function(
            "() => (document.querySelector('.msg.assistant .text')?.textContent || '')"
            ".includes('w3')"
        )
        kill_the_worker_of(c, sender)
        bubble = pg.locator(".msg.assistant").last
        bubble.locator(".badge.succeeded").wait_for(timeout=60_000)
        assert "".join(bubble.locator(".text").all_inner_texts()).strip() == SLOW
        tl.locator("li.ev.end").wait_for(timeout=60_000)
        assert tl.locator("li.ev.restart .ev-body").inner_text() == "step 0: worker lost"
        assert tl.locator("li.ev.chunk.dropped").count() >= 1
        kept = tl.locator("li.ev.chunk:not(.dropped) .ev-body").all_inner_texts()
        assert "".join(kept) == SLOW
    finally:
        chat.close()
        timeline.close()
    assert chat.errors == [] and timeline.errors == [], "JavaScript or console errors"
