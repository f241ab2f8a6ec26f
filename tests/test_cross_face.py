"""One run, any face: a run started on one face is followed and cancelled from another.

Every face's id names the walrus run it belongs to (``docs/faces.md``): a Responses id
``resp_<run_id>[_<n>]``, an Anthropic message id ``msg_<run_id>``, an OpenAI chat completion id
``chatcmpl-<run_id>``, an A2A task id (the run id itself). Each test starts a run on one face
with that face's official client, and follows or cancels it on another.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.cluster import Cluster, parse_sse, wait_for


@pytest.fixture
def oai(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=cluster.gateway_url + "/v1", api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


@pytest.fixture
def ant(cluster: Cluster) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=cluster.gateway_url, api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


def native_text(cluster: Cluster, run_id: str) -> str:
    """The run's reply as the native SSE route relays it."""
    return "".join(str(e["content"]) for _, e in cluster.events(run_id) if e["type"] == "chunk")


def test_a_background_response_is_followed_natively_and_cancelled_by_its_run_id(
    cluster: Cluster, oai: openai.OpenAI
) -> None:
    response = oai.responses.create(model="slow", input="count", background=True)
    run_id = response.id.removeprefix("resp_")
    wait_for(lambda: cluster.run(run_id)["status"] == "running", 20, what="the run started")
    assert cluster.run(run_id)["face"] == "openai-responses"
    with cluster.http() as c:
        assert c.post(f"/v1/runs/{run_id}/cancel").json() == {"run_id": run_id}
    events = [e for _, e in cluster.events(run_id)]
    assert events[0]["type"] == "start" and events[-1] == {**events[-1], "status": "cancelled"}
    wait_for(lambda: oai.responses.retrieve(response.id).status == "cancelled", 20)


def test_an_anthropic_stream_is_followed_natively_and_ends_when_cancelled_there(
    cluster: Cluster, ant: anthropic.Anthropic
) -> None:
    got: list[str] = []
    raised: list[BaseException] = []
    started = threading.Event()
    message_id: list[str] = []

    def stream() -> None:
        try:
            with ant.messages.stream(
                model="slow", max_tokens=100, messages=[{"role": "user", "content": "count"}]
            ) as s:
                for event in s:
                    if event.type == "message_start":
                        message_id.append(event.message.id)
                    if event.type == "text":
                        got.append(event.text)
                        started.set()
        except anthropic.APIError as e:
            raised.append(e)
        finally:
            started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(30) and message_id, "the stream started"
    run_id = message_id[0].removeprefix("msg_")
    assert cluster.run(run_id)["face"] == "anthropic-messages"
    cancelled = False
    with cluster.http() as c, c.stream("GET", f"/v1/runs/{run_id}/events") as follow:
        for _, event in parse_sse(follow.iter_lines()):
            # The native route follows the same run. Cancel once: a follower replaying the
            # chunks already written can read one after the run has ended (a full run under
            # load cancelled again there, and was answered that nothing was running).
            if event["type"] == "chunk" and not cancelled:
                assert c.post(f"/v1/runs/{run_id}/cancel").json() == {"run_id": run_id}
                cancelled = True
            if event["type"] == "end":
                assert event["status"] == "cancelled"
                break
    reader.join(30)
    assert not reader.is_alive()
    assert raised and "cancelled" in str(raised[0]), raised  # the face's own error shape
    assert len(got) < 20


def test_a_chat_completion_is_read_back_natively_and_as_a_run(
    cluster: Cluster, oai: openai.OpenAI
) -> None:
    done = oai.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    run_id = done.id.removeprefix("chatcmpl-")
    info = cluster.run(run_id)
    assert info["face"] == "openai-chat" and info["status"] == "succeeded"
    assert native_text(cluster, run_id) == done.choices[0].message.content


def test_a_native_run_is_read_and_cancelled_as_an_a2a_task(cluster: Cluster) -> None:
    from a2a.types import CancelTaskRequest, GetTaskRequest, TaskState

    from tests.test_a2a import REST, a2a_client

    run_id = cluster.send("slow", "count", f"x-{uuid.uuid4().hex[:8]}")
    wait_for(lambda: cluster.run(run_id)["status"] == "running", 20, what="the run started")

    async def go() -> tuple[int, int]:
        async with a2a_client(cluster, "slow", REST) as (client, _):
            seen = await client.get_task(GetTaskRequest(id=run_id))
            cancelled = await client.cancel_task(CancelTaskRequest(id=run_id))
            return seen.status.state, cancelled.status.state

    seen, cancelled = asyncio.run(go())
    assert seen == TaskState.TASK_STATE_WORKING and cancelled == TaskState.TASK_STATE_CANCELED
    info = cluster.run(run_id)
    assert info["status"] == "cancelled" and info["face"] == "http"  # still the face it came by


def test_an_mcp_call_is_the_run_the_native_route_relays(cluster: Cluster) -> None:
    from tests.test_mcp_face import mcp, text_of

    async def go() -> Any:
        async with mcp(cluster.gateway_url) as client:
            return await client.call_tool("echo", {"message": "hi"})

    result = asyncio.run(go())
    run_id = result.structured_content["run_id"]
    assert cluster.run(run_id)["face"] == "mcp"
    assert native_text(cluster, run_id) == text_of(result)
