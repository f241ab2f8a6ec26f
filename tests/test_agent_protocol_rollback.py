"""Rollback is atomic with the rolled back run's end: the next run never reads its messages.

The race it closes: a rollback used to cancel the run, wait for its end, then remove its
messages in a step of its own; a run queued behind it starts as the cancelled one ends and
could read history in between. Here the gateway is frozen (SIGSTOP) right after it accepted
the rollback and before the run can end (the workers are frozen too), so "in between" lasts as
long as the test likes: the next run's LLM request must still not carry the rolled back run's
messages.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph_sdk import get_sync_client

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks import keys
from walrus_tasks.redis_server import RedisServer

AGENTS = {"aprb": 'model = "fake/m-aprb"\ntools = ["ask_user"]\n'}
QUESTION = {"questions": [{"question": "Which colour?", "options": [{"label": "blue"}]}]}


@pytest.fixture(scope="module")
def rb(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("rb")
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=agents_home(root / "home", fake_llm.base_url, AGENTS),
        log_dir=root,
    )
    with running(c, workers=("w1",)):
        yield c


def signal_group(c: Cluster, name: str, sig: signal.Signals) -> None:
    os.killpg(c.procs[name].pid, sig)


def human(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("how", ["cancel", "strategy"])
def test_a_rolled_back_runs_messages_are_gone_before_the_next_run_reads_history(
    rb: Cluster, fake_llm: FakeLLM, how: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text="fresh start"),
        model="m-aprb",
    )  # fmt: skip
    lg = get_sync_client(url=rb.gateway_url, api_key=None)
    r = rb.redis()
    tid = lg.threads.create()["thread_id"]
    old = lg.runs.create(tid, "aprb", input=human(f"old question {how}"))["run_id"]
    wait_for(lambda: lg.threads.get(tid)["status"] == "interrupted", 20, what="the question")
    asked = len(fake_llm.requests_for("m-aprb"))
    new = human(f"new question {how}")
    signal_group(rb, "w1", signal.SIGSTOP)  # nothing ends the old run until SIGCONT
    done: list[Any] = []
    try:
        if how == "cancel":
            lg.runs.create(tid, "aprb", input=new, multitask_strategy="enqueue")  # queued
            call: Any = lambda: done.append(lg.runs.cancel(tid, old, action="rollback"))  # noqa: E731
        else:
            call = lambda: done.append(  # noqa: E731
                lg.runs.create(tid, "aprb", input=new, multitask_strategy="rollback")
            )
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        wait_for(lambda: r.exists(keys.run_part(old, "cancel")), 10, what="the cancel flag")
        caller.join(timeout=5)  # it answers at once (a gateway that waits for the end hangs here)
        signal_group(rb, "gateway", signal.SIGSTOP)  # no step of the gateway from here on
        signal_group(rb, "w1", signal.SIGCONT)
        # The old run ends, the new one starts and calls the model with its history.
        wait_for(lambda: len(fake_llm.requests_for("m-aprb")) > asked, 30, what="the next run")
        request = fake_llm.requests_for("m-aprb")[-1]
    finally:
        signal_group(rb, "w1", signal.SIGCONT)
        signal_group(rb, "gateway", signal.SIGCONT)
    sent = json.dumps(request["messages"])
    assert f"new question {how}" in sent
    assert "old question" not in sent and "ask_user" not in sent
    caller.join(timeout=30)
    assert done, "the rollback call did not answer"
    wait_for(lambda: lg.threads.get(tid)["status"] == "idle", 30, what="the next run to end")
    contents = [m["content"] for m in lg.threads.get_state(tid)["values"]["messages"]]
    assert contents == [f"new question {how}", "fresh start"]
    assert lg.runs.get(tid, old)["status"] == "interrupted"
