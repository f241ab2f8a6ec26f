"""The Anthropic Messages face (``POST /v1/messages``), driven by the official ``anthropic`` SDK."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from gateway.anthropic_messages import anthropic_error
from gateway.anthropic_messages.blocks import Blocks, Forward
from gateway.errors import failure_response
from tests.cluster import Cluster, running, wait_for
from tests.conftest import redis_db_url, write_agents, write_home
from tests.fakellm import FakeError, FakeLLM, FakeReply
from tests.test_error_mapping import CASES
from walrus_tasks import indexes
from walrus_tasks.event_types import chunk, restart, text_start, thinking, tools_complete
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.reply_text import ReplyDiverged

MODEL = "m-anth"
"""The fake model of agent ``anth`` (the session cluster's agent on the Anthropic provider)."""

THINK = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture
def client(cluster: Cluster) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=cluster.gateway_url, api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def run_of(cluster: Cluster, message_id: str) -> dict[str, Any]:
    """The run a message id names (``msg_<run_id>``), once it has ended."""
    assert message_id.startswith("msg_"), message_id
    return cluster.wait_run(message_id.removeprefix("msg_"))


def gone(cluster: Cluster, agent: str, sender: str) -> None:
    """Wait until the one-shot conversation ``(agent, sender)`` has been deleted."""
    assert sender.startswith("oneshot-"), sender
    wait_for(lambda: not cluster.history(agent, sender), 10, what="the one-shot to go")


# --- messages.create ----------------------------------------------------------------------------


def test_create_answers_with_the_reply_usage_and_an_id_naming_the_run(
    client: anthropic.Anthropic, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(FakeReply(text="Hello from Claude's stand-in."), model=MODEL)
    message = client.messages.create(model="anth", max_tokens=64, messages=user("hi"))
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "anth" and message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    [block] = message.content
    assert block.type == "text" and block.text == "Hello from Claude's stand-in."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    run = run_of(cluster, message.id)
    assert run["status"] == "succeeded" and run["face"] == "anthropic-messages"
    assert run["agent"] == "anth"
    gone(cluster, "anth", run["sender"])


def test_system_and_earlier_turns_are_the_context(
    client: anthropic.Anthropic, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(FakeReply(text="Your name is Ann."), model=MODEL)
    message = client.messages.create(
        model="anth",
        max_tokens=64,
        system=[{"type": "text", "text": "be brief"}],
        messages=[
            {"role": "user", "content": "my name is Ann"},
            {"role": "assistant", "content": [{"type": "text", "text": "hi Ann"}]},
            {"role": "user", "content": [{"type": "text", "text": "what is my name?"}]},
        ],
        metadata={"user_id": "someone"},
        extra_body={"temperature": 0.2, "something_new": {"x": 1}},  # ignored
    )
    assert message.content[0].type == "text" and message.content[0].text == "Your name is Ann."
    sent = fake_llm.requests_for(MODEL)[-1]["messages"]
    # The provider joins consecutive user entries into one turn (Anthropic's alternation).
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    said = json.dumps(sent)
    context = ["(system) be brief", "my name is Ann", "hi Ann", "what is my name?"]
    places = [said.find(text) for text in context]
    assert -1 not in places and places == sorted(places), said
    gone(cluster, "anth", run_of(cluster, message.id)["sender"])


def test_a_sender_header_continues_a_server_side_conversation(
    client: anthropic.Anthropic, cluster: Cluster, sender: str
) -> None:
    for content in ("one", "two"):
        client.messages.create(
            model="echo",
            max_tokens=64,
            messages=[{"role": "user", "content": "ignored"}, *user(content)],
            extra_headers={"X-Walrus-Sender": sender},
        )
    history = cluster.history("echo", sender)
    assert [m["content"] for m in history if m["role"] == "user"] == ["one", "two"]


# --- messages.stream ----------------------------------------------------------------------------


def test_stream_text_joins_to_the_reply_and_the_final_message_has_it(
    client: anthropic.Anthropic, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    fake_llm.script(FakeReply(text="one two three four"), model=MODEL)
    with client.messages.stream(model="anth", max_tokens=64, messages=user("count")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "one two three four"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [
        ("text", "one two three four")
    ]
    assert final.stop_reason == "end_turn" and final.model == "anth"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)
    run = run_of(cluster, final.id)
    assert run["face"] == "anthropic-messages"
    gone(cluster, "anth", run["sender"])


def test_thinking_is_a_thinking_block_when_asked_for(
    client: anthropic.Anthropic, fake_llm: FakeLLM
) -> None:
    reply = FakeReply(thinking="let me think hard", text="It is 42.")
    fake_llm.script(reply, reply, reply, model=MODEL)
    with client.messages.stream(
        model="anth",
        max_tokens=2048,
        thinking=THINK,
        messages=user("why?"),  # type: ignore[arg-type]
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds.count("content_block_start") == 2 and kinds.count("content_block_stop") == 2
    thought, text = final.content
    assert thought.type == "thinking" and thought.thinking == "let me think hard"
    assert text.type == "text" and text.text == "It is 42."
    created = client.messages.create(
        model="anth",
        max_tokens=2048,
        thinking=THINK,
        messages=user("why?"),  # type: ignore[arg-type]
    )
    assert [b.type for b in created.content] == ["thinking", "text"]
    assert created.content[0].thinking == "let me think hard"  # type: ignore[union-attr]
    unasked = client.messages.create(model="anth", max_tokens=64, messages=user("why?"))
    assert [(b.type, getattr(b, "text", None)) for b in unasked.content] == [("text", "It is 42.")]


def test_the_raw_stream_is_anthropic_s_event_sequence(cluster: Cluster) -> None:
    body = {"model": "echo", "max_tokens": 64, "stream": True, "messages": user("hi")}
    with cluster.http() as c, c.stream("POST", "/v1/messages", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        names = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1] == "content_block_start" and names[-3] == "content_block_stop"
    assert set(names[2:-3]) == {"content_block_delta"}


# --- failures -----------------------------------------------------------------------------------


def test_a_failed_run_raises_an_api_error_with_its_message(
    client: anthropic.Anthropic, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    refusal = FakeError(status=400, type="invalid_request_error", message="the fake says no")
    fake_llm.script(refusal, refusal, model=MODEL)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="anth", max_tokens=64, messages=user("hi"))
    assert info.value.status_code == 502 and "the fake says no" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    body: Any = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["error"]["code"] == "run_failed"
    assert cluster.wait_run(body["error"]["run_id"])["status"] == "failed"
    with (
        pytest.raises(anthropic.APIStatusError) as streamed,
        client.messages.stream(model="anth", max_tokens=64, messages=user("hi")) as stream,
    ):
        list(stream.text_stream)
    assert "the fake says no" in streamed.value.message
    assert streamed.value.body["error"]["code"] == "run_failed"  # type: ignore[index]


def test_a_run_killed_mid_stream_ends_it_with_an_error_event(
    client: anthropic.Anthropic, cluster: Cluster
) -> None:
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(model="slow", max_tokens=64, messages=user("hi")) as stream,
    ):
        for event in stream:
            if event.type == "message_start":
                run_id = event.message.id.removeprefix("msg_")
            elif event.type == "text":
                seen.append(event.text)
                if "w1" in seen:
                    with cluster.http() as c:
                        sender = c.get(f"/v1/runs/{run_id}").json()["sender"]
                        c.post(f"/v1/agents/slow/conversations/{sender}/kill")
    assert "cancelled" in info.value.message
    assert info.value.body["error"]["code"] == "run_cancelled"  # type: ignore[index]
    assert seen and "w20" not in seen
    gone(cluster, "slow", sender)


@pytest.fixture
def unchanged(cluster: Cluster) -> Iterator[None]:
    """Fail the test if any walrus key changes while it runs."""
    r = cluster.redis()
    wait_for(lambda: indexes.sizes(r, "runs:active", "leases") == [0, 0], 30)
    before = {k: r.dump(k) for k in r.scan_iter("walrus:*")}
    yield
    assert {k: r.dump(k) for k in r.scan_iter("walrus:*")} == before
    r.close()


def test_an_unknown_model_is_not_found(client: anthropic.Anthropic, unchanged: None) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=user("hi"))
    assert info.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "unknown model 'claude-sonnet-4-5': models are walrus agents "
            "(GET /v1/models)",
            "code": "not_found",
        },
    }


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"messages": [*user("hi"), {"role": "assistant", "content": "The answer is"}]},
         "last message must be the user's"),
        ({"messages": user("  ")}, "no text"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]},
         "messages[0].content[0]: 'image' blocks are not supported"),
        ({"system": [{"type": "document", "source": {}}]}, "system[0]: 'document' blocks"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "messages.0.role"),
        ({"messages": []}, "messages"),
        ({"tools": [{"name": "f", "input_schema": {"type": "object"}}]}, "client-side tools"),
        ({"messages": user("hi"), "model": None}, "model"),
        ({"extra_headers": {"X-Walrus-Sender": "a b"}}, "invalid sender"),
    ],
)  # fmt: skip
def test_bad_input_is_a_bad_request_and_stores_nothing(
    client: anthropic.Anthropic, unchanged: None, extra: dict[str, Any], fragment: str
) -> None:
    params = {"model": "echo", "max_tokens": 64, "messages": user("hi"), **extra}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(**params)
    error: Any = info.value.body
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert fragment in error["error"]["message"]


def test_malformed_json_is_a_bad_request(cluster: Cluster, unchanged: None) -> None:
    with cluster.http() as c:
        resp = c.post(
            "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "type": "invalid_request_error",
        "message": "malformed JSON body",
        "code": "invalid",
    }


# --- tokens: x-api-key, tenants -----------------------------------------------------------------

ADMIN = f"admin-{uuid.uuid4().hex}"
ACME = f"acme-{uuid.uuid4().hex}"
ECHO_ONLY = f"echo-only-{uuid.uuid4().hex}"
PAUSES = """
    model = "mock"
    [mock]
    reply = "a b c"
    chunk_delay_ms = 500
"""


@pytest.fixture(scope="module")
def token_cluster(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and a worker with an admin token, a tenant token (``acme``) and one limited
    to ``echo``; idle streams send a keep-alive every 0.2 s, and agent ``pauses`` idles."""
    home = write_home(tmp_path_factory.mktemp("anthropic-home"), fake_llm.base_url)
    write_agents(home, {"pauses": PAUSES})
    with (home / "config.toml").open("a") as f:
        f.write(
            f'\n[gateway]\ntokens = ["{ADMIN}", {{ token = "{ACME}", tenant = "acme" }}, '
            f'{{ token = "{ECHO_ONLY}", agents = ["echo"] }}]\n'
        )
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=Path(home),
        log_dir=tmp_path_factory.mktemp("anthropic-logs"),
        env_extra={"WALRUS_SSE_KEEPALIVE": "0.2"},
    )
    with running(c):
        yield c


def sdk(cluster: Cluster, token: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=cluster.gateway_url, api_key=token, max_retries=0, timeout=60
    )


def test_a_tenant_token_as_x_api_key_runs_in_its_tenant(token_cluster: Cluster) -> None:
    with sdk(token_cluster, ACME) as client:
        message = client.messages.create(model="echo", max_tokens=64, messages=user("hi"))
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the mock model."
    run_id = message.id.removeprefix("msg_")
    with httpx.Client(base_url=token_cluster.gateway_url, timeout=30) as c:
        mine = c.get(f"/v1/runs/{run_id}", headers={"x-api-key": ACME})
        admin = c.get(f"/v1/runs/{run_id}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert mine.status_code == 200, mine.text
    assert mine.json()["tenant"] == "acme" and mine.json()["face"] == "anthropic-messages"
    assert admin.json()["tenant"] == "acme"


def test_a_wrong_key_is_an_authentication_error_in_anthropic_s_shape(
    token_cluster: Cluster,
) -> None:
    with (
        sdk(token_cluster, "not-a-token") as client,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        client.messages.create(model="echo", max_tokens=64, messages=user("hi"))
    error: Any = info.value.body
    assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
    assert "x-api-key" in error["error"]["message"]
    assert "not-a-token" not in str(error)


def test_a_token_limited_to_echo_may_not_ask_another_model(token_cluster: Cluster) -> None:
    with sdk(token_cluster, ECHO_ONLY) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as info:
            client.messages.create(model="slow", max_tokens=64, messages=user("hi"))
        assert info.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
        message = client.messages.create(model="echo", max_tokens=64, messages=user("hi"))
    assert message.content[0].type == "text"


def test_an_idle_stream_sends_pings_that_the_sdk_skips(token_cluster: Cluster) -> None:
    body = {"model": "pauses", "max_tokens": 64, "stream": True, "messages": user("hi")}
    headers = {"x-api-key": ADMIN}
    with (
        httpx.Client(base_url=token_cluster.gateway_url, timeout=30, headers=headers) as c,
        c.stream("POST", "/v1/messages", json=body) as resp,
    ):
        names = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
    assert "ping" in names and names[-1] == "message_stop"
    with (
        sdk(token_cluster, ADMIN) as client,
        client.messages.stream(model="pauses", max_tokens=64, messages=user("hi")) as stream,
    ):
        text = "".join(stream.text_stream)
    assert text == "a b c"


# --- the shapes, without a cluster --------------------------------------------------------------


@pytest.mark.parametrize(("exc", "status", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_every_failure_renders_in_anthropic_s_shape(
    exc: BaseException, status: int, code: str
) -> None:
    response = failure_response(exc, anthropic_error)
    body = json.loads(response.body)
    assert response.status_code == (400 if status == 422 else status)
    assert body["type"] == "error" and body["error"]["code"] == code
    assert body["error"]["type"] == {
        422: "invalid_request_error", 404: "not_found_error", 403: "permission_error",
        409: "invalid_request_error", 413: "request_too_large", 500: "api_error",
        503: "overloaded_error",
    }[status]  # fmt: skip
    if status == 503:
        assert response.headers["Retry-After"]


def step(*events: dict[str, Any]) -> list[dict[str, Any]]:
    return [*events, tools_complete()]


def test_the_whole_answer_counts_a_restarted_step_s_output_once() -> None:
    events = [
        thinking("hmm"), text_start(), chunk("Let me "), restart(1, "worker lost"),
        thinking("hmm"), text_start(), chunk("Let me look."), *step(),
        thinking("found"), chunk(" It is late."),
    ]  # fmt: skip
    shown, hidden = Blocks(thinking=True), Blocks(thinking=False)
    for event in events:
        shown.feed(event)
        hidden.feed(event)
    assert [b.model_dump() for b in shown.content] == [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "Let me look."},
        {"type": "thinking", "thinking": "found", "signature": ""},
        {"type": "text", "text": " It is late."},
    ]
    assert [b.model_dump() for b in hidden.content] == [
        {"type": "text", "text": "Let me look. It is late."}
    ]


def test_the_stream_forwards_a_restarted_step_s_repeat_once_and_refuses_a_change() -> None:
    forward = Forward(thinking=True)
    sent = [forward.feed(e) for e in [thinking("hmm"), chunk("Let me "), restart(1, "lost")]]
    again = [forward.feed(e) for e in [thinking("hmm"), chunk("Let me "), chunk("look.")]]
    assert [s for s in sent + again if s and s[1]] == [
        ("thinking", "hmm"), ("text", "Let me "), ("text", "look.")
    ]  # fmt: skip
    changed = Forward(thinking=False)
    for event in [thinking("ignored"), chunk("Yes"), restart(1, "lost")]:
        changed.feed(event)
    with pytest.raises(ReplyDiverged):
        changed.feed(chunk("No"))
