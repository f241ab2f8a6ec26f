"""Retries, restarts and fallbacks of LLM calls through real workers and the fake LLM over HTTP."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeError, FakeLLM, FakeReply
from walrus_tasks import keys
from walrus_tasks.redis_server import RedisServer

AGENTS = {
    "limited": """
        model = "fake/m-429"
        retries = 3
    """,
    "quick": """
        model = "mock"
        [mock]
        reply = "quick answer"
    """,
    "flaky": """
        model = "fake/m-flaky"
    """,
    "primary": """
        model = "fake/m-down"
        retries = 1
        max_retry_wait = 0.5
        fallback_models = ["fakeant/m-backup"]
    """,
    "longctx": """
        model = "fake/m-short"
        fallback_models = ["fake/m-long"]
    """,
}


@pytest.fixture(scope="module")
def one_slot(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and one worker with one pool slot (``--concurrency 1``), one per module:
    each test has its own sender and models, and waits for its runs to end."""
    tmp_path = tmp_path_factory.mktemp("retries")
    home = agents_home(tmp_path / "home", fake_llm.base_url, {
        n: textwrap.dedent(b) for n, b in AGENTS.items()
    })  # fmt: skip
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    with running(c, concurrency=1):
        yield c


def events_of(cluster: Cluster, run_id: str) -> list[dict[str, Any]]:
    return [e for _, e in cluster.events(run_id)]


def test_a_429_with_retry_after_is_retried_without_holding_the_pool_slot(
    one_slot: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    limited = FakeError(status=429, message="slow down", headers={"Retry-After": "1"})
    fake_llm.script(limited, limited, FakeReply(text="at last"), model="m-429")
    run_id = one_slot.send("limited", "hi", sender)
    stream = keys.run_part(run_id, "events")

    def retried() -> bool:
        entries = one_slot.redis().xrange(stream)
        return any(json.loads(f["data"])["type"] == "retry" for _, f in entries)

    wait_for(retried, 10, what="the first retry event")
    other = one_slot.send("quick", "meanwhile", sender + "-b")
    assert one_slot.wait_run(other, timeout=10)["status"] == "succeeded"
    assert len(fake_llm.requests_for("m-429")) < 3, "the other run finished during the waits"
    events = events_of(one_slot, run_id)
    assert events[-1]["status"] == "succeeded", events[-1]
    retries = [e for e in events if e["type"] == "retry"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(e["delay_ms"] >= 1000 and "HTTP 429" in e["reason"] for e in retries)
    assert len(fake_llm.requests_for("m-429")) == 3
    history = one_slot.history("limited", sender)
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "hi"),
        ("assistant", "at last"),
    ]


def test_a_call_cut_after_some_tokens_restarts_the_step_cleanly(
    one_slot: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    cut = FakeError(message="overloaded", type="overloaded_error", mid_stream=True, after_words=3)
    fake_llm.script(cut, FakeReply(text="the whole answer"), model="m-flaky")
    run_id = one_slot.send("flaky", "hi", sender)
    events = events_of(one_slot, run_id)
    kinds = [e["type"] for e in events]
    assert events[-1]["status"] == "succeeded", events[-1]
    restart = kinds.index("restart")
    assert kinds[restart - 1] == "text_end" and kinds[restart + 1] == "retry"
    before = "".join(e["content"] for e in events[:restart] if e["type"] == "chunk")
    after = "".join(e["content"] for e in events[restart:] if e["type"] == "chunk")
    assert before == "partial partial partial" and after == "the whole answer"
    assert events[restart]["step"] == 0
    history = one_slot.history("flaky", sender)
    assert [m["content"] for m in history if m["role"] == "assistant"] == ["the whole answer"]


def test_a_failing_model_falls_back_and_end_model_says_which(
    one_slot: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    down = FakeError(status=503, message="down for maintenance")
    fake_llm.script(down, down, model="m-down")
    fake_llm.script(FakeReply(text="backup speaking"), model="m-backup")
    run_id = one_slot.send("primary", "hi", sender)
    events = events_of(one_slot, run_id)
    end = events[-1]
    assert end["status"] == "succeeded" and end["model"] == "fakeant/m-backup", end
    retries = [e for e in events if e["type"] == "retry"]
    assert [e["model"] for e in retries] == ["fake/m-down", "fakeant/m-backup"]
    assert len(fake_llm.requests_for("m-down")) == 2  # the first call and its one retry
    assert one_slot.history("primary", sender)[-1]["content"] == "backup speaking"
    assert one_slot.wait_run(run_id)["status"] == "succeeded"


def test_a_context_length_error_goes_to_the_fallback_at_once(
    one_slot: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    too_long = FakeError(status=400, message="maximum context length is 10 tokens")
    fake_llm.script(too_long, model="m-short")
    fake_llm.script(FakeReply(text="I have room"), model="m-long")
    end = events_of(one_slot, one_slot.send("longctx", "hi", sender))[-1]
    assert end["status"] == "succeeded" and end["model"] == "fake/m-long", end
    assert len(fake_llm.requests_for("m-short")) == 1, "no retry of a request too long"
