"""The MCP face at /mcp, driven by the official ``mcp`` client over streamable HTTP.

The session cluster (a gateway, two workers, the fake LLM) serves it. ``Client(url)`` speaks
the 2026-07-28 protocol (every request on its own, no session); ``mode="legacy"`` the
handshake era (a session, ``elicitation/create``, ``notifications/cancelled``): where the two
differ, a test runs in both. A gateway of its own, with tokens, shows the 401 and what a
token lists. (tests/test_mcp.py is the other direction: agents using MCP servers as tools.)
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from gateway.mcp_face import failure
from gateway.mcp_questions import DECLINED, answer_of, declined, form_of
from tests.cluster import Cluster, running, wait_for
from tests.fakellm import FakeLLM, FakeReply
from tests.test_error_mapping import CASES

MODEL = "m-mcpface"
AGENTS = {
    "mcpchat": f"""
        model = "fake/{MODEL}"
        description = "Chats over MCP"
        tools = ["ask_user"]
    """,
}
QUESTION = {"questions": [{"question": "Which colour?", "options": [{"label": "blue"}]}]}
MODES = ["auto", "legacy"]
"""The 2026-07-28 protocol (the client's default) and the handshake era."""


@pytest.fixture(autouse=True)
def fresh_fake_llm(fake_llm: FakeLLM) -> None:
    """No scripted reply left over by another test (a cancelled run leaves its rest)."""
    fake_llm.reset()


@asynccontextmanager
async def mcp(url: str, token: str | None = None, **options: Any) -> AsyncIterator[Client]:
    """The ``mcp`` package's client of the gateway at ``url``, with a bearer ``token``."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(f"{url}/mcp", http_client=http)
        async with Client(transport, **options) as client:
            yield client


def text_of(result: types.CallToolResult) -> str:
    return "".join(b.text for b in result.content if isinstance(b, types.TextContent))


def fake_messages(fake_llm: FakeLLM) -> list[dict[str, Any]]:
    """The messages of the latest request the agent's model got."""
    return list(fake_llm.requests_for(MODEL)[-1]["messages"])


def test_list_tools_shows_each_agent_with_its_description_and_schema(cluster: Cluster) -> None:
    async def go() -> types.ListToolsResult:
        async with mcp(cluster.gateway_url) as client:
            return await client.list_tools()

    tools = {t.name: t for t in asyncio.run(go()).tools}
    with cluster.http() as h:
        agents = {a["name"]: a for a in h.get("/v1/agents").json()["agents"]}
    assert set(tools) == set(agents)
    assert tools["mcpchat"].description == "Chats over MCP"
    assert tools["echo"].description == "Replies at once"
    schema = tools["echo"].input_schema
    assert schema["required"] == ["message"]
    assert set(schema["properties"]) == {"message", "conversation"}
    assert tools["echo"].output_schema is not None


@pytest.mark.parametrize("mode", MODES)
def test_a_call_returns_the_reply_and_its_run_is_of_the_mcp_face(
    cluster: Cluster, mode: str
) -> None:
    async def go() -> types.CallToolResult:
        async with mcp(cluster.gateway_url, mode=mode) as client:
            return await client.call_tool("echo", {"message": "hi"})

    result = asyncio.run(go())
    assert not result.is_error
    assert text_of(result) == "Hello from the mock model."
    out = result.structured_content
    assert out is not None and out["status"] == "succeeded"
    assert re.fullmatch(r"mcp-[0-9a-f]{32}", out["conversation"])
    info = cluster.run(out["run_id"])
    assert (info["face"], info["agent"], info["sender"]) == ("mcp", "echo", out["conversation"])


def test_a_call_with_the_returned_conversation_continues_it(
    cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(FakeReply(text="Nice to meet you, Ada."), FakeReply(text="You are Ada."),
                    model=MODEL)  # fmt: skip

    async def go() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with mcp(cluster.gateway_url) as client:
            first = await client.call_tool("mcpchat", {"message": "I am Ada."})
            assert first.structured_content is not None
            conversation = first.structured_content["conversation"]
            again = {"message": "Who am I?", "conversation": conversation}
            return first, await client.call_tool("mcpchat", again)

    first, second = asyncio.run(go())
    assert text_of(second) == "You are Ada."
    assert first.structured_content and second.structured_content
    assert second.structured_content["conversation"] == first.structured_content["conversation"]
    said = [(m["role"], m["content"]) for m in fake_messages(fake_llm) if m["role"] != "system"]
    assert said[-3:] == [
        ("user", "I am Ada."), ("assistant", "Nice to meet you, Ada."), ("user", "Who am I?"),
    ]  # fmt: skip


def test_two_calls_at_once_run_in_parallel(cluster: Cluster, fake_llm: FakeLLM) -> None:
    words = " ".join(f"w{i}" for i in range(10))
    fake_llm.script(*[FakeReply(text=words, chunk_delay=0.1)] * 2, model=MODEL)

    async def go() -> list[types.CallToolResult]:
        async with mcp(cluster.gateway_url) as client:
            calls = [client.call_tool("mcpchat", {"message": f"call {i}"}) for i in range(2)]
            return list(await asyncio.gather(*calls))

    results = asyncio.run(go())
    assert [text_of(r) for r in results] == [words, words]
    a, b = [cluster.run(r.structured_content["run_id"]) for r in results
            if r.structured_content]  # fmt: skip
    assert a["sender"] != b["sender"]
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]  # overlapped


def test_progress_notifications_come_while_the_run_streams(
    cluster: Cluster, fake_llm: FakeLLM
) -> None:
    words = " ".join(f"w{i}" for i in range(12))
    fake_llm.script(FakeReply(text=words, chunk_delay=0.1), model=MODEL)
    seen: list[tuple[float, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, message))

    async def go() -> types.CallToolResult:
        async with mcp(cluster.gateway_url) as client:
            return await client.call_tool(
                "mcpchat", {"message": "talk"}, progress_callback=progress
            )

    result = asyncio.run(go())
    assert result.structured_content is not None
    run_id = result.structured_content["run_id"]
    messages = [m or "" for _, m in seen]
    assert run_id in messages[0]
    assert [v for v, _ in seen] == sorted({v for v, _ in seen})  # increasing
    assert messages[1] == "run started"
    streamed = messages[2:]  # the reply, in batches as it streamed
    assert len(streamed) >= 2 and "".join(streamed) == words == text_of(result)


@pytest.mark.parametrize("mode", MODES)
def test_cancelling_the_call_cancels_the_run(
    cluster: Cluster, fake_llm: FakeLLM, mode: str
) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    fake_llm.script(FakeReply(text=words, chunk_delay=0.2), model=MODEL)
    found: list[str] = []
    streaming = asyncio.Event()

    async def progress(value: float, total: float | None, message: str | None) -> None:
        if match := re.search(r"run ([0-9a-f]{32})", message or ""):
            found.append(match[1])
        if (message or "").startswith("w"):
            streaming.set()

    async def go() -> None:
        async with mcp(cluster.gateway_url, mode=mode) as client:
            call = asyncio.ensure_future(
                client.call_tool("mcpchat", {"message": "go on"}, progress_callback=progress)
            )
            await asyncio.wait_for(streaming.wait(), 30)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(go())
    [run_id] = found
    wait_for(lambda: cluster.run(run_id)["status"] == "cancelled", 30, what="the cancel")


def test_an_idle_call_says_still_running_and_a_gateway_that_stops_ends_it_not_its_run(
    cluster: Cluster, home: Path, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    fake_llm.script(FakeReply(text=words, chunk_delay=0.1, delay=1.5), model=MODEL)
    seen: list[str] = []
    streaming = asyncio.Event()

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")
        if (message or "").startswith("w"):
            streaming.set()

    async def go(gateway: Cluster) -> MCPError:
        async with mcp(gateway.gateway_url) as client:
            call = asyncio.ensure_future(
                client.call_tool("mcpchat", {"message": "go on"}, progress_callback=progress)
            )
            await asyncio.wait_for(streaming.wait(), 30)
            gateway.stop(["gateway"])  # SIGTERM, as a rolling restart does
            with pytest.raises(MCPError) as ended:
                await call
            return ended.value

    gateway = Cluster(redis_url=cluster.redis_url, home=home, log_dir=tmp_path,
                      env_extra={"WALRUS_SSE_KEEPALIVE": "0.5"})  # fmt: skip
    with running(gateway, workers=()):
        error = asyncio.run(go(gateway))
    assert "still running" in seen[: seen.index(next(m for m in seen if m.startswith("w")))]
    assert error.error.message.startswith("unavailable: ") and error.error.data is not None
    run_id = error.error.data["run_id"]
    assert cluster.wait_run(run_id)["status"] == "succeeded"


def answer_blue(answers: list[types.ElicitRequestFormParams]) -> Any:
    async def elicit(
        ctx: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        answers.append(params)
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    return elicit


@pytest.mark.parametrize("mode", MODES)
def test_an_ask_user_is_elicited_and_the_run_ends_with_the_answer(
    cluster: Cluster, fake_llm: FakeLLM, mode: str
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text="blue it is"), model=MODEL
    )
    asked: list[types.ElicitRequestFormParams] = []

    async def go() -> types.CallToolResult:
        options = {"mode": mode, "elicitation_callback": answer_blue(asked)}
        async with mcp(cluster.gateway_url, **options) as client:
            return await client.call_tool("mcpchat", {"message": "pick a colour"})

    result = asyncio.run(go())
    assert text_of(result) == "blue it is" and not result.is_error
    [form] = asked
    assert form.message == "Which colour?"
    assert form.requested_schema["properties"]["answer"]["enum"] == ["blue"]
    tool = [m for m in fake_messages(fake_llm) if m["role"] == "tool"]
    assert tool[-1]["content"] == "blue"
    assert result.structured_content is not None
    assert cluster.run(result.structured_content["run_id"])["status"] == "succeeded"


@pytest.mark.parametrize("action", ["decline", "cancel"])
def test_a_declined_question_gets_a_refusal_and_a_cancelled_one_cancels_the_run(
    cluster: Cluster, fake_llm: FakeLLM, action: str
) -> None:
    then = [FakeReply(text="fine")] if action == "decline" else []  # a cancelled run asks no more
    fake_llm.script(FakeReply(tool_calls=[("ask_user", QUESTION)]), *then, model=MODEL)

    async def refuse(
        ctx: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action=action)

    async def go() -> types.CallToolResult:
        async with mcp(cluster.gateway_url, elicitation_callback=refuse) as client:
            return await client.call_tool("mcpchat", {"message": "pick a colour"})

    result = asyncio.run(go())
    assert result.structured_content is not None
    info = cluster.run(result.structured_content["run_id"])
    if action == "decline":
        assert text_of(result) == "fine" and info["status"] == "succeeded"
        tool = [m for m in fake_messages(fake_llm) if m["role"] == "tool"]
        assert tool[-1]["content"] == DECLINED
    else:
        assert result.is_error and info["status"] == "cancelled"
        assert result.structured_content["status"] == "cancelled"


def test_a_question_becomes_a_form_and_its_answers_the_reply() -> None:
    asked = {"kind": "question", "questions": [
        {"question": "Which colour?", "header": "Colour", "options": [{"label": "red"}]},
        {"question": "Which sizes?", "options": [{"label": "S"}, {"label": "M"}],
         "multi_select": True},
        {"question": "Why?"},
    ]}  # fmt: skip
    form = form_of(asked)
    props = form.schema["properties"]
    assert list(props) == ["answer_1", "answer_2", "answer_3"] == form.schema["required"]
    assert props["answer_1"] == {"type": "string", "title": "Colour",
                                 "description": "Which colour?", "enum": ["red"]}  # fmt: skip
    assert props["answer_2"]["type"] == "array"
    assert props["answer_2"]["items"] == {"type": "string", "enum": ["S", "M"]}
    assert props["answer_3"] == {"type": "string", "title": "Question 3", "description": "Why?"}
    answers = {"answer_1": "red", "answer_2": ["S", "M"], "answer_3": "because"}
    assert json.loads(answer_of(form, answers)) == {
        "Which colour?": "red", "Which sizes?": "S, M", "Why?": "because",
    }  # fmt: skip
    approval = form_of({"kind": "approval", "questions": [
        {"question": "Allow the tool call bash?",
         "options": [{"label": "allow"}, {"label": "deny"}]}]})  # fmt: skip
    assert approval.kind == "approval" and declined(approval) == "deny"
    assert approval.schema["properties"]["answer"]["enum"] == ["allow", "deny"]
    assert answer_of(approval, {"answer": "allow"}) == "allow"


def test_an_ask_user_without_elicitation_is_the_result_and_the_next_call_answers_it(
    cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text="green it is"), model=MODEL
    )

    async def go() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with mcp(cluster.gateway_url) as client:
            asked = await client.call_tool("mcpchat", {"message": "pick a colour"})
            assert asked.structured_content is not None
            assert cluster.run(asked.structured_content["run_id"])["status"] == "waiting"
            conversation = asked.structured_content["conversation"]
            again = {"message": "green", "conversation": conversation}
            return asked, await client.call_tool("mcpchat", again)

    asked, answered = asyncio.run(go())
    out = asked.structured_content
    assert out is not None and out["status"] == "waiting" and not asked.is_error
    assert "Which colour?" in text_of(asked) and out["conversation"] in text_of(asked)
    assert out["questions"][0]["question"] == "Which colour?" and out["call_id"]
    assert text_of(answered) == "green it is"
    assert answered.structured_content is not None
    assert answered.structured_content["run_id"] == out["run_id"]  # the same run, answered
    assert [m for m in fake_messages(fake_llm) if m["role"] == "tool"][-1]["content"] == "green"


async def no_progress(value: float, total: float | None, message: str | None) -> None:
    """A progress callback: the call asks for progress (a 2026-07-28 one streams at once)."""


@pytest.mark.parametrize("progress", [None, no_progress], ids=["plain", "progress"])
def test_an_unknown_tool_and_bad_arguments_are_errors(cluster: Cluster, progress: Any) -> None:
    async def go() -> types.CallToolResult:
        async with mcp(cluster.gateway_url) as client:
            with pytest.raises(MCPError, match="Unknown tool: 'nosuchagent'"):
                await client.call_tool("nosuchagent", {"message": "hi"}, progress_callback=progress)
            bad = {"message": "hi", "conversation": "a/b"}
            return await client.call_tool("echo", bad, progress_callback=progress)

    bad = asyncio.run(go())
    assert bad.is_error and text_of(bad).startswith("invalid: ")


# --- a gateway with tokens ------------------------------------------------------------------

ADMIN = f"admin-{uuid.uuid4().hex}"
LIMITED = f"limited-{uuid.uuid4().hex}"
ACME = f"acme-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def guarded(
    cluster: Cluster, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway of its own on the session cluster's Redis (its workers run the runs), with an
    admin token, a token limited to ``echo`` and a tenant token, one stream each."""
    own = tmp_path_factory.mktemp("mcp-tokens") / "home"
    shutil.copytree(home, own)
    with (own / "config.toml").open("a") as f:
        f.write(
            f'\n[gateway]\ntokens = ["{ADMIN}", {{ token = "{LIMITED}", agents = ["echo"] }}, '
            f'{{ token = "{ACME}", tenant = "acme" }}]\n'
        )
    c = Cluster(redis_url=cluster.redis_url, home=own, log_dir=tmp_path_factory.mktemp("logs"),
                env_extra={"WALRUS_GATEWAY_MAX_STREAMS_PER_CLIENT": "1"})  # fmt: skip
    with running(c, workers=()):
        yield c


def test_a_bad_token_is_refused_with_401(guarded: Cluster) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    answer = httpx.post(f"{guarded.gateway_url}/mcp", json=body,
                        headers={"Authorization": "Bearer nope-nope-nope-nope"})  # fmt: skip
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"

    async def go() -> None:
        with pytest.raises(ExceptionGroup) as refused:
            async with mcp(guarded.gateway_url, "nope-nope-nope-nope") as client:
                await client.list_tools()
        assert refused.group_contains(MCPError, match="error response", depth=2)

    asyncio.run(go())


@pytest.mark.parametrize("progress", [None, no_progress], ids=["plain", "progress"])
def test_a_token_lists_and_calls_only_its_agents_in_its_tenant(
    guarded: Cluster, progress: Any
) -> None:
    async def go() -> tuple[list[str], list[str], types.CallToolResult]:
        async with mcp(guarded.gateway_url, LIMITED) as limited:
            names = [t.name for t in (await limited.list_tools()).tools]
            with pytest.raises(MCPError, match="Unknown tool"):
                await limited.call_tool("mcpchat", {"message": "hi"}, progress_callback=progress)
        async with mcp(guarded.gateway_url, ADMIN) as admin:
            every = [t.name for t in (await admin.list_tools()).tools]
        async with mcp(guarded.gateway_url, ACME) as acme:
            result = await acme.call_tool("echo", {"message": "hi"}, progress_callback=progress)
        return names, every, result

    names, every, result = asyncio.run(go())
    assert names == ["echo"] and "mcpchat" in every and "echo" in every
    assert text_of(result) == "Hello from the mock model."
    assert result.structured_content is not None
    with http(guarded, ADMIN) as h:
        info = h.get(f"/v1/runs/{result.structured_content['run_id']}").json()
    assert (info["tenant"], info["face"]) == ("acme", "mcp")


LEGACY_HEADERS = {"Accept": "application/json, text/event-stream"}


def http(c: Cluster, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}", **LEGACY_HEADERS}
    return httpx.Client(base_url=c.gateway_url, timeout=30, headers=headers)


def test_a_session_answers_only_the_token_that_opened_it(guarded: Cluster) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}}  # fmt: skip
    with http(guarded, ADMIN) as admin:
        opened = admin.post("/mcp", json=hello)
        assert opened.status_code == 200, opened.text
        session = {"Mcp-Session-Id": opened.headers["Mcp-Session-Id"],
                   "MCP-Protocol-Version": "2025-11-25"}  # fmt: skip
        ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert admin.post("/mcp", json=ready, headers=session).status_code == 202
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        assert "mcpchat" in admin.post("/mcp", json=listing, headers=session).text
    with http(guarded, LIMITED) as limited:
        other = limited.post("/mcp", json=listing, headers=session)
    assert other.status_code == 404 and "Session not found" in other.text


def test_a_body_too_deep_is_a_json_rpc_error(cluster: Cluster) -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"deep": deep}}
    with cluster.http() as h:
        refused = h.post("/mcp", json=body, headers=LEGACY_HEADERS)
    assert refused.status_code == 422
    error = refused.json()
    assert error["jsonrpc"] == "2.0" and error["error"]["code"] == types.INVALID_REQUEST


@pytest.mark.parametrize(("exc", "status", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_a_refusal_is_a_tool_error_and_a_server_failure_a_json_rpc_error(
    exc: Exception, status: int, code: str
) -> None:
    if status >= 500:
        with pytest.raises(MCPError) as raised:
            failure(exc)
        assert raised.value.error.code == types.INTERNAL_ERROR
        assert raised.value.error.message.startswith(f"{code}: ")
        assert raised.value.error.data == {"status": status, "code": code}
        return
    result = failure(exc)
    assert result.is_error and text_of(result).startswith(f"{code}: ")


def test_the_docs_snippet_runs(cluster: Cluster) -> None:
    page = (Path(__file__).parent.parent / "docs" / "mcp.md").read_text()
    snippet = page.split("```python\n", 1)[1].split("```", 1)[0]
    snippet = snippet.replace(
        'GATEWAY = "http://127.0.0.1:8765"', f"GATEWAY = {cluster.gateway_url!r}"
    )
    assert cluster.gateway_url in snippet
    ran = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert "'echo'" in lines[0] and "'mcpchat'" in lines[0]
    assert lines[1].startswith("progress: run ") and "progress: run started" in lines
    assert lines.count("Hello from the mock model.") == 2
    assert "'status': 'succeeded'" in ran.stdout


@pytest.mark.parametrize("progress", [None, no_progress], ids=["plain", "progress"])
def test_a_call_over_the_token_s_streams_is_refused_and_sends_nothing(
    guarded: Cluster, fake_llm: FakeLLM, progress: Any
) -> None:
    words = " ".join(f"w{i}" for i in range(15))
    fake_llm.script(FakeReply(text=words, chunk_delay=0.1), model=MODEL)
    streaming = asyncio.Event()
    refused_in = f"refused-{uuid.uuid4().hex}"

    async def progress(value: float, total: float | None, message: str | None) -> None:
        if (message or "").startswith("w"):
            streaming.set()

    async def go() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with mcp(guarded.gateway_url, ADMIN) as client:
            first = asyncio.ensure_future(
                client.call_tool("mcpchat", {"message": "go on"}, progress_callback=progress)
            )
            await asyncio.wait_for(streaming.wait(), 30)
            second = {"message": "me too", "conversation": refused_in}
            refused = await client.call_tool("mcpchat", second, progress_callback=progress)
            return refused, await first

    refused, first = asyncio.run(go())
    assert refused.is_error and text_of(refused).startswith("too_many_streams: ")
    assert text_of(first) == words
    with http(guarded, ADMIN) as h:
        history = h.get(f"/v1/agents/mcpchat/conversations/{refused_in}/history")
    assert history.status_code == 200 and history.json()["messages"] == []
