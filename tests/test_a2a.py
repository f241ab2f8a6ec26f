"""A2A 1.0 at ``/a2a/{agent}``, driven by the official ``a2a-sdk`` client against real processes.

The session cluster (a gateway, two workers) carries ``AGENTS``; the fake LLM answers them over
HTTP. A task is a walrus run (its id is the run id), a context a conversation (its id the
sender). Tenancy runs on a gateway of its own with tokens; a stopping gateway on another.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import (
    A2ACardResolver,
    AgentCardResolutionError,
    Client,
    ClientConfig,
    ClientFactory,
)
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    InternalError,
    InvalidParamsError,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
    UnsupportedOperationError,
)
from google.protobuf.json_format import MessageToDict

from gateway import a2a_operations as a2a_ops
from gateway.a2a.tasks import TaskStream, task_of
from tests.cluster import Cluster, running
from tests.conftest import redis_db_url, write_home
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.tenancy import OPEN

AGENTS = {
    "a2a": 'model = "fake/m-a2a"\ndescription = "Answers A2A tests"\ntools = ["clock"]\n',
    "a2aask": 'model = "fake/m-a2aask"\ntools = ["ask_user"]\n',
}
QUESTION = {"questions": [{"question": "Which colour?", "options": [{"label": "blue"}]}]}
JSONRPC, REST = "JSONRPC", "HTTP+JSON"
BINDINGS = (JSONRPC, REST)
ECHO_REPLY = "Hello from the mock model."
S = TaskState


@pytest.fixture
def fake(fake_llm: FakeLLM) -> FakeLLM:
    """The fake LLM, with no reply a failed test left queued."""
    fake_llm.reset()
    return fake_llm


def message(text: str, **ids: str) -> Message:
    return Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=text)], **ids)


def send_request(text: str, wait: bool = True, **ids: str) -> SendMessageRequest:
    config = SendMessageConfiguration(return_immediately=not wait)
    return SendMessageRequest(message=message(text, **ids), configuration=config)


@asynccontextmanager
async def a2a_client(
    cluster: Cluster, agent: str, binding: str = JSONRPC, streaming: bool = False,
    token: str | None = None,
) -> AsyncIterator[tuple[Client, AgentCard]]:  # fmt: skip
    """An a2a-sdk client of ``agent``, made from its card as a user would (one binding)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=60, headers=headers) as http:
        card = await A2ACardResolver(http, f"{cluster.gateway_url}/a2a/{agent}").get_agent_card()
        config = ClientConfig(
            httpx_client=http, supported_protocol_bindings=[binding], streaming=streaming
        )
        client = ClientFactory(config).create(card)
        try:
            yield client, card
        finally:
            await client.close()


async def send(client: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [event async for event in client.send_message(request)]


async def sent_task(client: Client, request: SendMessageRequest) -> Task:
    [answer] = await send(client, request)
    assert answer.HasField("task"), answer
    return answer.task


def reply_of(task: Task) -> str:
    [artifact] = task.artifacts
    return get_artifact_text(artifact)


# --- cards -------------------------------------------------------------------------------------


def test_the_agent_card_resolves_and_the_gateway_card_lists_every_agent(cluster: Cluster) -> None:
    async def go() -> None:
        url = f"{cluster.gateway_url}/a2a/a2a"
        async with httpx.AsyncClient(timeout=30) as http:
            card = await A2ACardResolver(http, url).get_agent_card()
            catalog = await A2ACardResolver(http, cluster.gateway_url).get_agent_card()
            with pytest.raises(AgentCardResolutionError) as unknown:
                await A2ACardResolver(http, f"{cluster.gateway_url}/a2a/nobody").get_agent_card()
        assert card.name == "a2a" and card.description == "Answers A2A tests"
        interfaces = [
            (i.protocol_binding, i.url, i.protocol_version) for i in card.supported_interfaces
        ]
        assert interfaces == [(JSONRPC, url, "1.0"), (REST, url, "1.0")]
        assert card.capabilities.streaming and not card.capabilities.push_notifications
        assert card.skills[0].id == "a2a" and "clock" in card.skills[0].tags
        assert not card.security_schemes  # an open gateway: no token to send
        assert unknown.value.status_code == 404

        skills = {s.id: s.description for s in catalog.skills}
        assert skills["a2a"] == "Answers A2A tests" and skills["echo"] == "Replies at once"
        [catalog_ext] = catalog.capabilities.extensions
        listed = {a["name"]: a for a in MessageToDict(catalog_ext.params)["agents"]}
        assert listed["a2a"]["url"] == url
        assert listed["a2a"]["card"] == url + "/.well-known/agent-card.json"

    asyncio.run(go())


# --- send, get, list ---------------------------------------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_blocking_send_answers_with_the_completed_task_and_get_task_reads_it(
    cluster: Cluster, binding: str
) -> None:
    async def go() -> None:
        async with a2a_client(cluster, "echo", binding) as (client, _):
            task = await sent_task(client, send_request("hi"))
            got = await client.get_task(GetTaskRequest(id=task.id))
            # The context is the conversation: the next message goes on in it.
            again = await sent_task(client, send_request("again", context_id=task.context_id))
        assert task.status.state == S.TASK_STATE_COMPLETED and reply_of(task) == ECHO_REPLY
        assert task.context_id.startswith("a2a-")
        assert get_message_text(task.history[0]) == "hi"
        assert got.id == task.id and got.status.state == S.TASK_STATE_COMPLETED
        assert reply_of(got) == ECHO_REPLY
        assert again.context_id == task.context_id and again.id != task.id

        info = cluster.run(task.id)  # the task id is the run id
        assert info["face"] == "a2a" and info["sender"] == task.context_id
        assert info["status"] == "succeeded"
        history = cluster.history("echo", task.context_id)
        assert [m["content"] for m in history if m["role"] == "user"] == ["hi", "again"]

    asyncio.run(go())


def test_list_tasks_pages_the_agents_tasks_of_a_context_newest_first(cluster: Cluster) -> None:
    async def go() -> None:
        async with a2a_client(cluster, "echo", REST) as (client, _):
            first = await sent_task(client, send_request("one"))
            ctx = first.context_id
            second = await sent_task(client, send_request("two", context_id=ctx))
            listed = await client.list_tasks(ListTasksRequest(context_id=ctx))
            page = await client.list_tasks(ListTasksRequest(context_id=ctx, page_size=1))
            rest = await client.list_tasks(
                ListTasksRequest(context_id=ctx, page_size=1, page_token=page.next_page_token)
            )
            failed = await client.list_tasks(
                ListTasksRequest(context_id=ctx, status=S.TASK_STATE_FAILED)
            )
            with_reply = await client.list_tasks(
                ListTasksRequest(context_id=ctx, include_artifacts=True)
            )
        assert [t.id for t in listed.tasks] == [second.id, first.id]
        assert all(t.status.state == S.TASK_STATE_COMPLETED for t in listed.tasks)
        assert not listed.tasks[0].artifacts  # only when asked for
        assert [reply_of(t) for t in with_reply.tasks] == [ECHO_REPLY, ECHO_REPLY]
        assert [t.id for t in page.tasks] == [second.id] and page.next_page_token
        assert [t.id for t in rest.tasks] == [first.id]
        assert list(failed.tasks) == []

    asyncio.run(go())


# --- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_streamed_send_gives_status_updates_then_the_final_artifact(
    cluster: Cluster, binding: str
) -> None:
    async def go() -> list[StreamResponse]:
        async with a2a_client(cluster, "paced", binding, streaming=True) as (client, _):
            return await send(client, send_request("go"))

    events = asyncio.run(go())
    assert events[0].HasField("task")
    task = events[0].task
    assert task.status.state in (S.TASK_STATE_SUBMITTED, S.TASK_STATE_WORKING)  # as it is then
    statuses = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert statuses[0] == S.TASK_STATE_WORKING and statuses[-1] == S.TASK_STATE_COMPLETED
    assert events[-1].HasField("status_update")  # the terminal state ends the stream
    updates = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert all(u.task_id == task.id and u.context_id == task.context_id for u in updates)
    chunks = [u for u in updates if u.append]
    assert len(chunks) >= 2  # the reply streamed as it was written
    assert not updates[0].append  # the first update opens the artifact
    final = updates[-1]
    assert final.last_chunk and not final.append
    assert get_artifact_text(final.artifact) == "a b c d e"
    assert (
        get_artifact_text(updates[0].artifact)
        + "".join(get_artifact_text(u.artifact) for u in chunks)
        == "a b c d e"
    )


def test_subscribing_to_a_running_task_streams_the_rest_of_it(
    cluster: Cluster, fake: FakeLLM
) -> None:
    words = " ".join(f"s{i}" for i in range(10))
    fake.script(FakeReply(text=words, chunk_delay=0.1), model="m-a2a")  # a second or so

    async def go() -> tuple[Task, list[StreamResponse]]:
        async with a2a_client(cluster, "a2a", JSONRPC) as (client, _):
            task = await sent_task(client, send_request("go", wait=False))
        async with a2a_client(cluster, "a2a", JSONRPC, streaming=True) as (client, _):
            events = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task.id))]
            with pytest.raises(UnsupportedOperationError, match="completed"):
                async for _ in client.subscribe(SubscribeToTaskRequest(id=task.id)):
                    pass
            return task, events

    task, events = asyncio.run(go())
    assert task.status.state in (S.TASK_STATE_SUBMITTED, S.TASK_STATE_WORKING)
    assert events[0].HasField("task") and events[0].task.id == task.id
    assert events[0].task.status.state in (S.TASK_STATE_SUBMITTED, S.TASK_STATE_WORKING)
    assert events[-1].status_update.status.state == S.TASK_STATE_COMPLETED
    finals = [e.artifact_update for e in events if e.artifact_update.last_chunk]
    assert [get_artifact_text(f.artifact) for f in finals] == [words]


async def raw_subscription(cluster: Cluster, task_id: str, request_id: object) -> list[dict]:
    """A ``SubscribeToTask`` over JSON-RPC as bytes on the wire: each event's JSON-RPC data."""
    call = {"jsonrpc": "2.0", "id": request_id, "method": "SubscribeToTask",
            "params": {"id": task_id}}  # fmt: skip
    headers = {"A2A-Version": "1.0"}
    out = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", f"{cluster.gateway_url}/a2a/a2a", json=call, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line.removeprefix("data: ")))
    return out


def test_subscribers_of_one_task_each_get_every_update_under_their_own_request_id(
    cluster: Cluster, fake: FakeLLM
) -> None:
    # Three subscribers join while the task waits behind another of its context, so they
    # share one translation of the run (docs/design.md, invariant 26); what they get is the
    # SDK's JSON-RPC, each with its own request id.
    words = " ".join(f"r{i}" for i in range(10))
    gate = FakeReply(text="gate", delay=2.0)
    fake.script(gate, FakeReply(text=words, chunk_delay=0.05), model="m-a2a")
    context = f"ctx-{uuid.uuid4().hex[:8]}"

    async def go() -> tuple[Task, list[list[dict]]]:
        async with a2a_client(cluster, "a2a", JSONRPC) as (client, _):
            await sent_task(client, send_request("first", wait=False, context_id=context))
            task = await sent_task(client, send_request("go", wait=False, context_id=context))
        ids: list[object] = ["sub-1", 7, None]
        streams = await asyncio.gather(*(raw_subscription(cluster, task.id, i) for i in ids))
        return task, list(streams)

    task, streams = asyncio.run(go())
    assert task.status.state == S.TASK_STATE_SUBMITTED  # queued behind the first
    for request_id, events in zip(["sub-1", 7, None], streams, strict=True):
        assert all(e["jsonrpc"] == "2.0" and e["id"] == request_id for e in events), events
        assert events[0]["result"]["task"]["id"] == task.id
        last = events[-1]["result"]["statusUpdate"]["status"]["state"]
        assert last == "TASK_STATE_COMPLETED"
        updates = [e["result"]["artifactUpdate"] for e in events if "artifactUpdate" in e["result"]]
        assert updates[-1]["lastChunk"] and get_text(updates[-1]) == words
    # One translation: the same updates, to their status timestamps.
    assert [e["result"] for e in streams[0]] == [e["result"] for e in streams[1]]
    assert [e["result"] for e in streams[0]] == [e["result"] for e in streams[2]]


def get_text(update: dict) -> str:
    return "".join(p.get("text", "") for p in update["artifact"]["parts"])


# --- cancel, questions -------------------------------------------------------------------------


def test_canceling_a_slow_task_ends_it_canceled(cluster: Cluster, fake: FakeLLM) -> None:
    words = " ".join(f"w{i}" for i in range(80))
    fake.script(FakeReply(text=words, chunk_delay=0.2), model="m-a2a")

    async def go() -> tuple[Task, float]:
        async with a2a_client(cluster, "a2a", REST) as (client, _):
            task = await sent_task(client, send_request("talk", wait=False))
            assert task.status.state in (S.TASK_STATE_SUBMITTED, S.TASK_STATE_WORKING)
            for _ in range(400):
                got = await client.get_task(GetTaskRequest(id=task.id))
                if got.artifacts:  # it is writing its reply
                    break
                await asyncio.sleep(0.05)
            assert got.status.state == S.TASK_STATE_WORKING
            started = time.monotonic()
            cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
            took = time.monotonic() - started
            with pytest.raises(TaskNotCancelableError, match="canceled already"):
                await client.cancel_task(CancelTaskRequest(id=task.id))
            return cancelled, took

    cancelled, took = asyncio.run(go())
    assert cancelled.status.state == S.TASK_STATE_CANCELED
    assert took < 5
    assert len(reply_of(cancelled)) < len(words)  # what it said stays, the rest was never said
    assert cluster.run(cancelled.id)["status"] == "cancelled"


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_question_makes_the_task_input_required_and_the_answer_continues_the_run(
    cluster: Cluster, fake: FakeLLM, binding: str
) -> None:
    fake.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text="blue it is"),
        model="m-a2aask",
    )  # fmt: skip

    async def go() -> tuple[Task, Task]:
        async with a2a_client(cluster, "a2aask", binding) as (client, _):
            asked = await sent_task(client, send_request("pick a colour"))
            with pytest.raises(InvalidParamsError, match="is not the context"):
                await send(client, send_request("blue", task_id=asked.id, context_id="other"))
            ids = {"task_id": asked.id, "context_id": asked.context_id}
            answered = await sent_task(client, send_request("blue", **ids))
            with pytest.raises(UnsupportedOperationError, match="takes no more messages"):
                await send(client, send_request("and red?", **ids))
            return asked, answered

    asked, answered = asyncio.run(go())
    assert asked.status.state == S.TASK_STATE_INPUT_REQUIRED
    question = asked.status.message
    assert question.role == Role.ROLE_AGENT
    assert question.parts[0].text == "Which colour? (blue)"
    assert MessageToDict(question.parts[1].data)["questions"] == QUESTION["questions"]
    assert answered.id == asked.id  # the same run went on
    assert answered.status.state == S.TASK_STATE_COMPLETED and reply_of(answered) == "blue it is"
    said = [(m.role, get_message_text(m)) for m in answered.history]
    assert said == [
        (Role.ROLE_USER, "pick a colour"), (Role.ROLE_AGENT, "Which colour? (blue)"),
        (Role.ROLE_USER, "blue"),
    ]  # fmt: skip


def test_a_streamed_question_ends_the_stream_and_a_streamed_answer_streams_the_rest(
    cluster: Cluster, fake: FakeLLM
) -> None:
    fake.script(
        FakeReply(text="Let me ask. ", tool_calls=[("ask_user", QUESTION)]),
        FakeReply(text="blue it is"), model="m-a2aask",
    )  # fmt: skip

    async def go() -> tuple[list[StreamResponse], list[StreamResponse]]:
        async with a2a_client(cluster, "a2aask", REST, streaming=True) as (client, _):
            asked = await send(client, send_request("pick a colour"))
            task = asked[0].task
            ids = {"task_id": task.id, "context_id": task.context_id}
            return asked, await send(client, send_request("blue", **ids))

    asked, answered = asyncio.run(go())
    last = asked[-1].status_update
    assert last.status.state == S.TASK_STATE_INPUT_REQUIRED
    assert get_message_text(last.status.message).startswith("Which colour?")
    # The task as it is once answered: going on (or, on a fast worker, done already).
    assert answered[0].task.status.state in (S.TASK_STATE_WORKING, S.TASK_STATE_COMPLETED)
    assert answered[-1].status_update.status.state == S.TASK_STATE_COMPLETED
    final = [e.artifact_update for e in answered if e.artifact_update.last_chunk]
    assert [get_artifact_text(f.artifact) for f in final] == ["Let me ask. blue it is"]


def test_a_restarted_step_replaces_the_reply_artifact_instead_of_repeating_it() -> None:
    # A step whose worker was lost streamed "Hel", then runs again from its beginning.
    stream = TaskStream("t", "c")
    events = [
        {"type": "start"}, {"type": "text_start"}, {"type": "chunk", "content": "Hel"},
        {"type": "restart", "step": 0, "reason": "worker lost"},
        {"type": "text_start"}, {"type": "chunk", "content": "Hello"},
        {"type": "chunk", "content": " you"}, {"type": "end", "status": "succeeded"},
    ]  # fmt: skip
    out = [e for i, event in enumerate(events) for e in stream.feed(f"1-{i}", event)]
    updates = [e for e in out if isinstance(e, TaskArtifactUpdateEvent)]
    shown = ""
    for u in updates:  # what a client shows, applying each update as A2A says
        text = get_artifact_text(u.artifact)
        shown = shown + text if u.append else text
        assert "HelHel" not in shown
    assert [(get_artifact_text(u.artifact), u.append) for u in updates] == [
        ("Hel", False), ("Hello", False), (" you", True), ("Hello you", False),
    ]  # fmt: skip
    assert shown == "Hello you" and updates[-1].last_chunk and stream.done
    assert out[-1].status.state == S.TASK_STATE_COMPLETED


def test_a_client_tool_call_is_input_required_and_a_message_answers_it_with_the_output(
    cluster: Cluster, fake: FakeLLM
) -> None:
    fake.script(
        FakeReply(tool_calls=[("get_weather", {"city": "Oslo"})]), FakeReply(text="Sunny."),
        model="m-a2a",
    )  # fmt: skip
    sender = f"ct-{uuid.uuid4().hex[:8]}"
    tool = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    body = {"content": "weather?", "sender": sender, "client_tools": [tool]}
    with cluster.http() as h:  # a native send with a client tool; A2A answers it
        sent = h.post("/v1/agents/a2a/messages", json=body)
    assert sent.status_code == 202, sent.text
    run_id = sent.json()["run_id"]

    async def go() -> tuple[Task, Task]:
        async with a2a_client(cluster, "a2a", JSONRPC) as (client, _):
            for _ in range(400):
                asked = await client.get_task(GetTaskRequest(id=run_id))
                if asked.status.state == S.TASK_STATE_INPUT_REQUIRED:
                    break
                await asyncio.sleep(0.05)
            ids = {"task_id": run_id, "context_id": sender}
            return asked, await sent_task(client, send_request("12 C, sunny", **ids))

    asked, answered = asyncio.run(go())
    assert asked.status.state == S.TASK_STATE_INPUT_REQUIRED
    question = asked.status.message
    assert question.parts[0].text == (
        'run the client tool get_weather({"city": "Oslo"}) and answer with its output'
    )
    assert MessageToDict(question.parts[1].data)["kind"] == "client_tool"
    assert answered.status.state == S.TASK_STATE_COMPLETED and reply_of(answered) == "Sunny."
    assert "12 C, sunny" in str(fake.requests_for("m-a2a")[-1])  # the output went to the model


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("binding", BINDINGS)
def test_an_unknown_task_is_not_found_in_the_bindings_error_shape(
    cluster: Cluster, binding: str
) -> None:
    async def go() -> None:
        async with a2a_client(cluster, "echo", binding) as (client, _):
            with pytest.raises(TaskNotFoundError, match="not found"):
                await client.get_task(GetTaskRequest(id=uuid.uuid4().hex))
            with pytest.raises(TaskNotFoundError):
                await client.cancel_task(CancelTaskRequest(id="not-a-run-id"))
            with pytest.raises(TaskNotFoundError):
                await send(client, send_request("answer", task_id=uuid.uuid4().hex))
        async with a2a_client(cluster, "paced", binding) as (client, _):
            task = await sent_task(client, send_request("go"))
        async with a2a_client(cluster, "echo", binding) as (client, _):
            with pytest.raises(TaskNotFoundError):  # a task of another agent
                await client.get_task(GetTaskRequest(id=task.id))

    asyncio.run(go())


def test_the_version_header_and_the_agent_are_checked_before_anything_runs(
    cluster: Cluster,
) -> None:
    call = {"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "x"}}
    with cluster.http() as h:
        old = h.post("/a2a/echo", json=call)  # no A2A-Version: 0.3, which is not served
        unknown = h.post("/a2a/nobody", json=call, headers={"A2A-Version": "1.0"})
        rest = h.get("/a2a/nobody/tasks", headers={"A2A-Version": "1.0"})
        card = h.get("/a2a/nobody/.well-known/agent-card.json")
    assert old.status_code == 200 and old.json()["error"]["code"] == -32009
    assert "'0.3' is not supported" in old.json()["error"]["message"]
    assert (
        unknown.status_code == 404
        and "unknown agent 'nobody'" in unknown.json()["error"]["message"]
    )
    assert unknown.json()["jsonrpc"] == "2.0"
    for resp in (rest, card):
        assert resp.status_code == 404
        assert resp.json()["error"]["status"] == "NOT_FOUND"
        assert "unknown agent 'nobody'" in resp.json()["error"]["message"]


def test_a_subscription_the_gateway_does_not_take_itself_is_answered_by_the_sdk(
    cluster: Cluster,
) -> None:
    # gateway.a2a.subscribe takes a 1.0 SubscribeToTask with a declared length and a task that
    # goes on; every other one goes on to the SDK's route, its body given again, as before.
    with cluster.http() as h:
        ended = h.post("/a2a/echo", json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                       "params": {"message": {"messageId": "m1", "role": "ROLE_USER",
                                              "parts": [{"text": "hi"}]}}},
                       headers={"A2A-Version": "1.0"})  # fmt: skip
        task_id = ended.json()["result"]["task"]["id"]

        def subscribe(task: str, version: str | None = "1.0", chunked: bool = False) -> Any:
            body = json.dumps({"jsonrpc": "2.0", "id": "s", "method": "SubscribeToTask",
                               "params": {"id": task}}).encode()  # fmt: skip
            headers = {"Content-Type": "application/json"}
            if version:
                headers["A2A-Version"] = version
            content: Any = iter([body]) if chunked else body  # an iterator goes chunked
            return h.post("/a2a/echo", content=content, headers=headers)

        over = subscribe(task_id)  # the task has ended: nothing more to stream
        over_chunked = subscribe(task_id, chunked=True)
        unknown = subscribe("f" * 32)
        old = subscribe(task_id, version=None)
    for resp in (over, over_chunked):  # UnsupportedOperationError, in the SDK's JSON-RPC
        assert resp.status_code == 200 and resp.json()["id"] == "s"
        assert resp.json()["error"]["code"] == -32004, resp.text
        assert "is completed" in resp.json()["error"]["message"]
    assert unknown.json()["error"]["code"] == -32001, unknown.text  # TaskNotFoundError
    assert old.json()["error"]["code"] == -32009, old.text  # the version 0.3 is not served


# --- tenants, and a stopping gateway -----------------------------------------------------------

ADMIN = f"admin-{uuid.uuid4().hex}"
ACME = f"acme-{uuid.uuid4().hex}"
GLOBEX = f"globex-{uuid.uuid4().hex}"
ECHO_ONLY = f"echo-only-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def tenants(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM
) -> Iterator[Cluster]:
    """A gateway alone (its runs stay queued, their streams open): an admin token, two
    tenants' tokens and one limited to ``echo``; one open stream per token."""
    home = write_home(tmp_path_factory.mktemp("a2a-tenants"), fake_llm.base_url)
    with (home / "config.toml").open("a") as f:
        f.write(
            "\n[gateway]\n"
            f'tokens = ["{ADMIN}", {{ token = "{ACME}", tenant = "acme" }}, '
            f'{{ token = "{GLOBEX}", tenant = "globex" }}, '
            f'{{ token = "{ECHO_ONLY}", agents = ["echo"] }}]\n'
        )
    c = Cluster(
        redis_url=redis_db_url(redis_server), home=home,
        log_dir=tmp_path_factory.mktemp("a2a-tenants-logs"),
        env_extra={"WALRUS_GATEWAY_MAX_STREAMS_PER_CLIENT": "1"},
    )  # fmt: skip
    with running(c, workers=()):
        yield c


def test_another_tenants_task_is_not_found(tenants: Cluster) -> None:
    async def go() -> None:
        async with a2a_client(tenants, "echo", JSONRPC, token=ACME) as (acme, card):
            task = await sent_task(acme, send_request("ours", wait=False))
            assert (await acme.get_task(GetTaskRequest(id=task.id))).id == task.id
            mine = await acme.list_tasks(ListTasksRequest())
        assert list(card.security_schemes) == ["bearer"]
        assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "bearer"
        assert task.id in [t.id for t in mine.tasks]
        for binding in BINDINGS:
            async with a2a_client(tenants, "echo", binding, token=GLOBEX) as (globex, _):
                with pytest.raises(TaskNotFoundError):
                    await globex.get_task(GetTaskRequest(id=task.id))
                with pytest.raises(TaskNotFoundError):
                    await globex.cancel_task(CancelTaskRequest(id=task.id))
                with pytest.raises(TaskNotFoundError):
                    await send(globex, send_request("theirs", task_id=task.id))
                assert list((await globex.list_tasks(ListTasksRequest())).tasks) == []
        async with a2a_client(tenants, "echo", REST, token=ADMIN) as (admin, _):
            assert (await admin.get_task(GetTaskRequest(id=task.id))).id == task.id
        async with httpx.AsyncClient(timeout=30) as http:
            with pytest.raises(AgentCardResolutionError) as anonymous:
                await A2ACardResolver(http, f"{tenants.gateway_url}/a2a/echo").get_agent_card()
            refused = await http.post(f"{tenants.gateway_url}/a2a/echo", json={})
        assert anonymous.value.status_code == 401 and refused.status_code == 401

    asyncio.run(go())
    info = httpx.get(
        f"{tenants.gateway_url}/v1/runs/{uuid.uuid4().hex}",
        headers={"Authorization": f"Bearer {ACME}"},
    )
    assert info.status_code == 404


def test_a_token_limited_to_some_agents_sees_only_their_cards(tenants: Cluster) -> None:
    async def go() -> None:
        headers = {"Authorization": f"Bearer {ECHO_ONLY}"}
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            catalog = await A2ACardResolver(http, tenants.gateway_url).get_agent_card()
            echo = await A2ACardResolver(http, f"{tenants.gateway_url}/a2a/echo").get_agent_card()
            with pytest.raises(AgentCardResolutionError) as other:
                await A2ACardResolver(http, f"{tenants.gateway_url}/a2a/paced").get_agent_card()
            refused = await http.post(f"{tenants.gateway_url}/a2a/paced", json={})
        assert [s.id for s in catalog.skills] == ["echo"] and echo.name == "echo"
        assert other.value.status_code == 403 and refused.status_code == 403

    asyncio.run(go())


def test_a_stream_over_the_tokens_cap_is_refused_and_starts_nothing(tenants: Cluster) -> None:
    async def go() -> None:
        async with a2a_client(tenants, "echo", REST, streaming=True, token=ACME) as (acme, _):
            held = acme.send_message(send_request("hold the one stream"))
            first = await anext(held)  # the task, submitted; no worker takes it
            with pytest.raises(InternalError, match="event streams open") as refused:
                await send(acme, send_request("one too many"))
            assert refused.value.data == {"code": "too_many_streams"}
            async with a2a_client(tenants, "echo", REST, token=ACME) as (polling, _):
                listed = await polling.list_tasks(ListTasksRequest())
            assert first.task.id in [t.id for t in listed.tasks]
            assert "one too many" not in [get_message_text(t.history[0]) for t in listed.tasks]
            await held.aclose()

    asyncio.run(go())


def test_a_stopping_gateway_ends_an_a2a_stream_with_an_error_event(
    redis_server: RedisServer, home: Path, tmp_path: Path
) -> None:
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    with running(c, workers=()):  # no worker: the task stays submitted, its stream open
        opened = threading.Event()
        ended: list[BaseException | None] = []

        async def stream() -> None:
            async with a2a_client(c, "echo", JSONRPC, streaming=True) as (client, _):
                try:
                    async for _ in client.send_message(send_request("wait")):
                        opened.set()
                    ended.append(None)
                except Exception as e:
                    ended.append(e)

        reader = threading.Thread(target=asyncio.run, args=(stream(),))
        reader.start()
        assert opened.wait(20)
        started = time.monotonic()
        c.stop(["gateway"])
        reader.join(10)
        assert not reader.is_alive(), "the A2A stream was not ended"
    [error] = ended
    assert isinstance(error, InternalError), error
    assert error.data == {"code": "unavailable"} and "shutting down" in error.message
    assert time.monotonic() - started < 3  # ended by the hub, not uvicorn's graceful timeout
    log = (tmp_path / "gateway.log").read_text()
    assert "CancelledError" not in log and "Traceback" not in log, log[-3000:]


def test_an_ended_task_read_without_events_still_carries_its_reply(cluster: Cluster) -> None:
    # Found in a full run under load: a blocking send whose run had already ended by the time
    # its first read (without events, for speed) came answered COMPLETED with no artifact.
    run_id = cluster.send("echo", "hi", f"a2a-{uuid.uuid4().hex}")
    cluster.wait_run(run_id)
    record = a2a_ops.task_record(cluster.redis(), run_id, "echo", OPEN, events=False)
    assert reply_of(task_of(record)) == ECHO_REPLY
