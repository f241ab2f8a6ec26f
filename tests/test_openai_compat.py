"""The OpenAI-compatible endpoint, driven by the official ``openai`` SDK."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.cluster import Cluster, wait_for
from tests.fakellm import FakeLLM
from walrus_tasks import indexes

REPLY = "Hello from the mock model."


@pytest.fixture
def client(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=cluster.gateway_url + "/v1", api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


def test_non_streaming_returns_the_reply_with_usage(
    client: openai.OpenAI, cluster: Cluster, sender: str
) -> None:
    completion = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], user=sender
    )
    assert completion.object == "chat.completion" and completion.model == "echo"
    assert completion.id.startswith("chatcmpl-") and completion.created > 0
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == REPLY
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5 and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    run_id = completion.id.removeprefix("chatcmpl-")
    assert cluster.wait_run(run_id)["status"] == "succeeded"


def test_streaming_concatenates_to_the_reply_and_ends(
    client: openai.OpenAI, cluster: Cluster, sender: str
) -> None:
    with client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "hi"}],
        user=sender,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "echo" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == 5
    assert [m["content"] for m in cluster.history("echo", sender)] == ["hi", REPLY]


def test_streaming_without_include_usage_sends_no_usage_chunk(
    client: openai.OpenAI, sender: str
) -> None:
    with client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], user=sender, stream=True
    ) as stream:
        chunks = list(stream)
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_raw_stream_ends_with_done(cluster: Cluster, sender: str) -> None:
    body = {"model": "echo", "user": sender, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    with cluster.http() as c, c.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"


def test_user_is_the_sender_and_only_the_last_user_message_is_sent(
    client: openai.OpenAI, cluster: Cluster, sender: str
) -> None:
    client.chat.completions.create(
        model="echo",
        user=sender,
        messages=[
            {"role": "system", "content": "ignored: the agent has its own system prompt"},
            {"role": "user", "content": "an earlier message, ignored"},
            {"role": "assistant", "content": "an earlier reply, ignored"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
            },
        ],
    )
    history = cluster.history("echo", sender)
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "first\nsecond"),
        ("assistant", REPLY),
    ]


def test_two_calls_with_the_same_user_continue_one_conversation(
    client: openai.OpenAI, cluster: Cluster, sender: str
) -> None:
    for content in ("one", "two"):
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": content}], user=sender
        )
    history = cluster.history("echo", sender)
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "one"), ("assistant", REPLY), ("user", "two"), ("assistant", REPLY),
    ]  # fmt: skip


def test_no_user_is_stateless_with_the_whole_context(
    client: openai.OpenAI, cluster: Cluster, fake_llm: FakeLLM
) -> None:
    messages: Any = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "my name is Ann"},
        {"role": "assistant", "content": "hi Ann"},
        {"role": "user", "content": "what is my name?"},
    ]
    completion = client.chat.completions.create(model="oai", messages=messages)
    run_id = completion.id.removeprefix("chatcmpl-")
    with cluster.http() as c:
        sender = c.get(f"/v1/runs/{run_id}").json()["sender"]
    assert sender.startswith("oneshot-")
    sent = json.dumps(fake_llm.requests_for("m-oai")[-1]["messages"])
    assert "my name is Ann" in sent and "hi Ann" in sent and "be brief" in sent
    wait_for(lambda: not cluster.history("oai", sender), 10, what="the one-shot to go")


def test_parallel_stateless_calls_neither_queue_nor_share_context(
    client: openai.OpenAI, cluster: Cluster
) -> None:
    def call(i: int) -> str:
        completion = client.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": f"call {i}"}]
        )
        return completion.id.removeprefix("chatcmpl-")

    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        run_ids = list(pool.map(call, range(3)))
    elapsed = time.monotonic() - started
    with cluster.http() as c:
        runs = [c.get(f"/v1/runs/{r}").json() for r in run_ids]
    assert len({r["sender"] for r in runs}) == 3
    durations = [r["finished_at"] - r["started_at"] for r in runs]
    # Queued one behind another they would take the sum of their durations.
    assert elapsed < sum(durations) - min(durations) / 2, (elapsed, durations)
    assert all(r["seq"] == 1 for r in runs)  # each the first message of its conversation


def test_a_sender_header_continues_a_conversation(client: openai.OpenAI, cluster: Cluster) -> None:
    sender = f"hdr-{uuid.uuid4().hex[:8]}"
    for content in ("one", "two"):
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": content}],
            extra_headers={"X-Walrus-Sender": sender},
        )
    assert [m["content"] for m in cluster.history("echo", sender)][::2] == ["one", "two"]


@pytest.mark.parametrize(
    "extra", [{"n": 2}, {"tools": [{"type": "function", "function": {"name": "f"}}]}]
)
def test_unsupported_parameters_are_400(cluster: Cluster, extra: dict[str, Any]) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **extra}
    with cluster.http() as c:
        resp = c.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "unsupported_parameter"


def test_models_lists_the_agents(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert "echo" in models and "broken" in models
    assert models["echo"].object == "model" and models["echo"].owned_by == "walrus"
    assert client.models.retrieve("echo").id == "echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody")


@pytest.fixture
def unchanged(cluster: Cluster) -> Iterator[None]:
    """Fail the test if any walrus key changes while it runs."""
    r = cluster.redis()
    wait_for(lambda: indexes.sizes(r, "runs:active", "leases") == [0, 0], 30)
    before = {k: r.dump(k) for k in r.scan_iter("walrus:*")}
    yield
    assert {k: r.dump(k) for k in r.scan_iter("walrus:*")} == before
    r.close()


def test_unknown_model_is_not_found(client: openai.OpenAI, unchanged: None) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == {
        "message": "unknown model 'gpt-4o': models are walrus agents (GET /v1/models)",
        "type": "invalid_request_error",
        "code": "not_found",
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "echo", "user": "a b", "messages": [{"role": "user", "content": "hi"}]},
         "invalid sender"),
        ({"model": "echo", "messages": [{"role": "system", "content": "hi"}]}, "no message"),
        ({"model": "echo", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "no text"),
        ({"model": "echo", "messages": [{"role": "user", "content": "  "}]}, "no text"),
        ({"model": "echo", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)  # fmt: skip
def test_bad_requests_are_422_in_openai_shape(
    cluster: Cluster, unchanged: None, body: dict[str, object], fragment: str
) -> None:
    with cluster.http() as c:
        resp = c.post("/v1/chat/completions", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid"
    assert fragment in error["message"]


def test_malformed_json_is_422(cluster: Cluster, unchanged: None) -> None:
    with cluster.http() as c:
        resp = c.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert resp.status_code == 422
    assert resp.json()["error"]["message"] == "malformed JSON body"


def test_body_over_the_limit_is_413(cluster: Cluster, unchanged: None) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    with cluster.http() as c:
        resp = c.post("/v1/chat/completions", json=body)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"


def test_failed_run_is_a_502_with_the_run_error(client: openai.OpenAI, sender: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "hi"}], user=sender
        )
    assert info.value.status_code == 502
    assert "the mock model was told to fail" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "run_failed"


def test_failed_run_mid_stream_is_an_error_frame(
    client: openai.OpenAI, cluster: Cluster, sender: str
) -> None:
    with (
        pytest.raises(openai.APIError) as info,
        client.chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "hi"}], user=sender, stream=True
        ) as stream,
    ):
        list(stream)
    assert "the mock model was told to fail" in info.value.message
    body = {"model": "broken", "user": sender, "stream": True,
            "messages": [{"role": "user", "content": "again"}]}  # fmt: skip
    with cluster.http() as c, c.stream("POST", "/v1/chat/completions", json=body) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and '"error"' in lines[-2]


def test_both_endpoints_are_in_the_openapi_document(cluster: Cluster) -> None:
    with cluster.http() as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/chat/completions"] and "get" in paths["/v1/models"]


def test_the_completion_id_names_the_run(cluster: Cluster, sender: str) -> None:
    body = {"model": "echo", "user": sender, "messages": [{"role": "user", "content": "x"}]}
    with cluster.http() as c:
        run_id = c.post("/v1/chat/completions", json=body).json()["id"].removeprefix("chatcmpl-")
    events = cluster.events(run_id)
    assert events[0][1] == {"type": "start", "run_id": run_id, "agent": "echo", "sender": sender}
    assert events[-1][1]["status"] == "succeeded"


def test_a_killed_run_mid_stream_is_an_error_frame(
    client: openai.OpenAI, cluster: Cluster, sender: str
) -> None:
    seen = []
    with (
        pytest.raises(openai.APIError) as info,
        client.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "hi"}], user=sender, stream=True
        ) as stream,
    ):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
            if "w1" in seen:
                with cluster.http() as c:
                    c.post(f"/v1/agents/slow/conversations/{sender}/kill")
    assert "cancelled" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "run_cancelled"
    assert "w20" not in seen
