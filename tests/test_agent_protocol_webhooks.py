"""The ``webhook`` parameter of the Agent Protocol: POSTed by a worker as the run ends.

Real processes (gateway, workers, beat), the official ``langgraph-sdk``, and a receiver on a
free port of this test process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import UnprocessableEntityError

from tests.cluster import Cluster, running, wait_for
from tests.conftest import redis_db_url, write_home
from tests.fakellm import FakeLLM
from tests.test_recovery import kill_worker_mid_stream
from tests.webhook_receiver import Receiver
from walrus_tasks import indexes, keys
from walrus_tasks.celery_app import CONTROL_QUEUE, WEBHOOK
from walrus_tasks.redis_server import RedisServer

SAY = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver().start()
    yield rec
    rec.stop()


def hooks_cluster(
    redis_server: RedisServer, fake_llm: FakeLLM, root: Any, receiver: Receiver, **env: str
) -> Cluster:
    home = write_home(root / "home", fake_llm.base_url)
    with (home / "config.toml").open("a") as f:
        f.write(f'\n[webhooks]\nallowed_hosts = ["{receiver.host}", "hooks.example.com"]\n')
    return Cluster(
        redis_url=redis_db_url(redis_server), home=home, log_dir=root,
        env_extra={"WALRUS_REAPER_INTERVAL": "1", **env},
    )  # fmt: skip


@pytest.fixture(scope="module")
def hooks(
    redis_server: RedisServer,
    fake_llm: FakeLLM,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Gateway, a worker and beat; the receiver's host allowed in ``[webhooks]``."""
    c = hooks_cluster(redis_server, fake_llm, tmp_path_factory.mktemp("hooks"), receiver)
    with running(c, workers=("w1",), beat=True):
        yield c


def client(c: Cluster) -> Any:
    return get_sync_client(url=c.gateway_url, api_key=None)


def path() -> str:
    return f"/hook/{uuid.uuid4().hex}"


def test_a_run_with_a_webhook_posts_the_run_and_its_values_once(
    hooks: Cluster, receiver: Receiver
) -> None:
    lg = client(hooks)
    tid = lg.threads.create()["thread_id"]
    where = path()
    out = lg.runs.wait(tid, "echo", input=SAY, metadata={"who": "test"},
                       webhook=receiver.url(where))  # fmt: skip
    [run] = lg.runs.list(tid)
    [post] = receiver.wait(where)
    body = post.body
    assert (body["run_id"], body["thread_id"], body["assistant_id"]) == (run["run_id"], tid, "echo")
    assert body["status"] == "success" and "error" not in body
    assert body["metadata"] == {"who": "test"} and body["multitask_strategy"] == "reject"
    assert body["kwargs"]["webhook"] == receiver.url(where)
    for field in ("created_at", "updated_at", "run_started_at", "run_ended_at", "webhook_sent_at"):
        assert datetime.fromisoformat(body[field]), field
    assert body["run_ended_at"] >= body["run_started_at"] >= body["created_at"]
    assert body["values"]["messages"] == out["messages"]
    assert [m["type"] for m in body["values"]["messages"]] == ["human", "ai"]
    assert not hooks.redis().zscore(
        keys.run_index("webhooks", run["run_id"]), run["run_id"]
    )  # out of the outbox


def test_every_run_creating_route_and_every_end_sends_it(
    hooks: Cluster, receiver: Receiver
) -> None:
    lg = client(hooks)
    streamed, background, cancelled = path(), path(), path()
    parts = list(lg.runs.stream(None, "echo", input=SAY, webhook=receiver.url(streamed)))
    run_id = parts[0].data["run_id"]
    [post] = receiver.wait(streamed)
    assert post.body["run_id"] == run_id and post.body["thread_id"]  # a thread of its own
    tid = lg.threads.create()["thread_id"]
    run = lg.runs.create(tid, "echo", input=SAY, webhook=receiver.url(background))
    assert receiver.wait(background)[0].body["run_id"] == run["run_id"]
    tid = lg.threads.create()["thread_id"]
    run = lg.runs.create(tid, "slow", input=SAY, webhook=receiver.url(cancelled))
    wait_for(lambda: lg.threads.get(tid)["status"] == "busy", 20, what="busy")
    lg.runs.cancel(tid, run["run_id"], wait=True)
    [post] = receiver.wait(cancelled)
    assert post.body["status"] == "interrupted"
    assert post.body["error"] == "User interrupted the run"


def test_a_webhook_answered_500_is_sent_again_after_a_backoff(
    hooks: Cluster, receiver: Receiver
) -> None:
    lg = client(hooks)
    where = path()
    receiver.script[where] = [500]
    tid = lg.threads.create()["thread_id"]
    run = lg.runs.create(tid, "echo", input=SAY, webhook=receiver.url(where))
    posts = receiver.wait(where, count=2)
    assert [p.answered for p in posts] == [500, 200]
    assert {p.body["run_id"] for p in posts} == {run["run_id"]}


def test_a_webhook_to_a_host_not_allowed_is_422_and_stores_nothing(hooks: Cluster) -> None:
    lg = client(hooks)
    tid = lg.threads.create()["thread_id"]
    r = hooks.redis()
    before = (indexes.sizes(r, "runs"), r.zcard(keys.AP_THREADS), r.hlen(keys.CRONS))
    for url in ("http://evil.example/hook", "http://127.0.0.1:1/hook", "ftp://hooks.example.com/",
                "https://hooks.example.com:8443/x"):  # fmt: skip
        with pytest.raises(UnprocessableEntityError) as refused:
            lg.runs.create(tid, "echo", input=SAY, webhook=url)
        assert "webhook" in refused.value.response.json()["detail"]
        with pytest.raises(httpx.HTTPStatusError) as waited:  # this SDK call raises it plain
            lg.runs.wait(None, "echo", input=SAY, webhook=url)  # no thread of its own either
        assert waited.value.response.status_code == 422
        with pytest.raises(UnprocessableEntityError):
            lg.crons.create("echo", schedule="@every 1h", input=SAY, webhook=url)
    assert (indexes.sizes(r, "runs"), r.zcard(keys.AP_THREADS), r.hlen(keys.CRONS)) == before
    assert lg.runs.list(tid) == []


def test_a_cron_with_a_webhook_posts_each_fired_run(hooks: Cluster, receiver: Receiver) -> None:
    lg = client(hooks)
    tid = lg.threads.create()["thread_id"]
    where = path()
    cron = lg.crons.create_for_thread(
        tid, "echo", schedule="@every 1s", input=SAY, webhook=receiver.url(where)
    )
    try:
        post = receiver.wait(where)[0]
    finally:
        lg.crons.delete(cron["cron_id"])
    assert post.body["thread_id"] == tid and post.body["status"] == "success"


def test_a_webhook_whose_task_was_lost_is_sent_by_the_reaper_once(
    redis_server: RedisServer,
    fake_llm: FakeLLM,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The worker that ended the run sent the task, and the task was lost (as if the worker
    had died before sending it): the outbox still holds it, and the reaper sends it."""
    root = tmp_path_factory.mktemp("lost")
    c = hooks_cluster(redis_server, fake_llm, root, receiver, WALRUS_DISPATCH_GRACE="2")
    with running(c, workers=(), beat=True):
        # This worker runs the runs but takes no walrus.control task: the webhook task stays
        # in that queue, and the test drops it there.
        c.start_worker("wr", queues="walrus.runs,walrus.tools")
        c.wait_ready()
        lg = client(c)
        where = path()
        lg.runs.wait(None, "echo", input=SAY, webhook=receiver.url(where))
        r = c.redis()
        [run_id] = indexes.members(r, "webhooks")
        wait_for(lambda: any(WEBHOOK in m for m in r.lrange(CONTROL_QUEUE, 0, -1)), 10,
                 what="the webhook task in its queue")  # fmt: skip
        for key in r.scan_iter(CONTROL_QUEUE + "*"):
            r.delete(key)
        assert receiver.posts(where) == []
        c.start_worker("wc", queues="walrus.control")
        [post] = receiver.wait(where)
        assert post.body["run_id"] == run_id and post.body["status"] == "success"
        assert indexes.sizes(r, "webhooks") == [0]


def test_a_run_recovered_from_a_killed_worker_sends_its_webhook_once(
    redis_server: RedisServer,
    fake_llm: FakeLLM,
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``kill -9`` of the worker mid-run: the run ends on another worker, after a takeover."""
    root = tmp_path_factory.mktemp("killed")
    c = hooks_cluster(redis_server, fake_llm, root, receiver, WALRUS_LEASE_TTL="4")
    with running(c, workers=("worker-a", "worker-b"), concurrency=1, beat=True):
        lg = client(c)
        tid = lg.threads.create()["thread_id"]
        where = path()
        run = lg.runs.create(tid, "slow", input=SAY, webhook=receiver.url(where))
        kill_worker_mid_stream(c, run["run_id"], f"thread:{tid}")
        [post] = receiver.wait(where, timeout=60)
        assert post.body["run_id"] == run["run_id"] and post.body["status"] == "success"
        assert c.redis().hget(keys.run(run["run_id"]), "recoveries") == "1"
