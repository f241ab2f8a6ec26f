"""The OpenAI and Anthropic providers against the fake LLM server, over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent, RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk

from tests.fakellm import FakeError, FakeLLM, FakeReply
from walrus_tasks.config import AgentConfig, Config, ProviderConfig
from walrus_tasks.errors import ProviderError
from worker.providers import provider_for
from worker.providers.anthropic import AnthropicProvider
from worker.providers.anthropic import _translate as anthropic_translate
from worker.providers.base import (
    LLMRequest,
    Provider,
    StepUsage,
    StreamItem,
    TextDelta,
    ThinkingDelta,
    ToolCallRequest,
    ToolSpec,
    close_clients,
)
from worker.providers.mock import MockProvider
from worker.providers.openai import OpenAIProvider
from worker.providers.openai import _translate as openai_translate

KINDS = ["openai", "anthropic"]
AGENT = AgentConfig(name="tester", model="fake/m1")
CLOCK = ToolSpec("clock", "What time is it", {"type": "object", "properties": {}})


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server
    close_clients()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeLLM) -> None:
    fake.reset()


def url(fake: FakeLLM, kind: str) -> str:
    return fake.openai_base_url if kind == "openai" else fake.base_url


def make(kind: str, fake: FakeLLM | str, **options: Any) -> Provider:
    """A provider of ``kind`` talking to the fake server (or to a base URL)."""
    base_url = fake if isinstance(fake, str) else url(fake, kind)
    config = ProviderConfig.model_validate(
        {"kind": kind, "base_url": base_url, "api_key": "k", "timeout": 5, **options}
    )
    return OpenAIProvider(config) if kind == "openai" else AnthropicProvider(config)


def run(provider: Provider, model: str = "m1", **fields: Any) -> list[StreamItem]:
    """Everything one step streams (request fields default to a system prompt and "hi")."""
    fields = {"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}], **fields}
    return list(provider.stream(LLMRequest(AGENT, model, **fields), pause=lambda s: None))


def of(items: list[StreamItem], kind: type[Any]) -> list[Any]:
    return [i for i in items if isinstance(i, kind)]


def text(items: list[StreamItem], kind: type[TextDelta | ThinkingDelta] = TextDelta) -> str:
    return "".join(d.text for d in of(items, kind))


CALLS = [
    {"id": "c1", "name": "clock", "arguments": {}},
    {"id": "c2", "name": "clock", "arguments": {"tz": "UTC"}},
]
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "what time is it?", "run_id": "r1"},
    {"role": "assistant", "content": "Let me look.", "run_id": "r1", "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "c1", "name": "clock", "content": "12:00", "is_error": False},
    {"role": "tool", "tool_call_id": "c2", "name": "clock", "content": "no tz", "is_error": True},
]


@pytest.mark.parametrize("kind", KINDS)
def test_text_streams_as_several_deltas(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(text="Hello brave new world", usage=(21, 4)))
    items = run(make(kind, fake))
    assert len(of(items, TextDelta)) == 4
    assert text(items) == "Hello brave new world"
    assert items[-1] == StepUsage(input_tokens=21, output_tokens=4)
    assert not of(items, ToolCallRequest)
    assert "tools" not in fake.requests[0]  # no tools offered: no tools key at all


@pytest.mark.parametrize("kind", KINDS)
def test_first_request_carries_system_prompt_and_tools(fake: FakeLLM, kind: str) -> None:
    run(make(kind, fake, max_tokens=321), tools=[CLOCK])
    [body] = fake.requests
    assert body["model"] == "m1" and body["stream"] is True
    if kind == "openai":
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]
        assert body["stream_options"] == {"include_usage": True}
        assert body["tools"] == [{"type": "function", "function": vars(CLOCK)}]
    else:
        assert body["system"] == "Be brief."
        assert body["max_tokens"] == 321
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        tool = {"name": "clock", "description": "What time is it", "input_schema": CLOCK.parameters}
        assert body["tools"] == [tool]


@pytest.mark.parametrize("kind", KINDS)
def test_split_tool_call_arguments_come_out_whole(fake: FakeLLM, kind: str) -> None:
    args = {"city": "Lisbon", "units": ["metric", "iso"], "n": 3}
    fake.script(FakeReply(text="Checking.", tool_calls=[("weather", args), ("clock", {})]))
    items = run(make(kind, fake), tools=[CLOCK])
    calls = of(items, ToolCallRequest)
    assert [(c.name, c.arguments) for c in calls] == [("weather", args), ("clock", {})]
    assert len({c.id for c in calls}) == 2 and all(c.id for c in calls)
    assert text(items) == "Checking."
    assert isinstance(items[-1], StepUsage)


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_tool_arguments_are_kept_raw(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(tool_calls=[("clock", '{"tz": "UT')]))
    [call] = of(run(make(kind, fake)), ToolCallRequest)
    assert call.arguments == {"_raw": '{"tz": "UT'}


def test_openai_history_with_tool_results_is_converted(fake: FakeLLM) -> None:
    items = run(make("openai", fake), messages=HISTORY, tools=[CLOCK])
    assert text(items) == fake.default_text
    messages = fake.requests[0]["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1] == {"role": "user", "content": "what time is it?"}
    assert messages[2] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {"id": c, "type": "function", "function": {"name": "clock", "arguments": a}}
            for c, a in [("c1", "{}"), ("c2", '{"tz": "UTC"}')]
        ],
    }
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
        {"role": "tool", "tool_call_id": "c2", "content": "no tz"},
    ]


def test_anthropic_history_with_tool_results_is_converted(fake: FakeLLM) -> None:
    history = [*HISTORY, {"role": "user", "content": "and now?", "run_id": "r2"}]
    run(make("anthropic", fake), messages=history, tools=[CLOCK])
    assert fake.requests[0]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "what time is it?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "c1", "name": "clock", "input": {}},
                {"type": "tool_use", "id": "c2", "name": "clock", "input": {"tz": "UTC"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "12:00", "is_error": False},
                {"type": "tool_result", "tool_use_id": "c2", "content": "no tz", "is_error": True},
                {"type": "text", "text": "and now?"},
            ],
        },
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_tool_round_trip_sends_results_on_second_call(fake: FakeLLM, kind: str) -> None:
    provider = make(kind, fake)
    fake.script(FakeReply(tool_calls=[("clock", {})]), FakeReply(text="It is noon."), model="m1")
    [call] = of(run(provider, tools=[CLOCK]), ToolCallRequest)
    result = {"role": "tool", "tool_call_id": call.id, "name": "clock", "content": "12:00"}
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [vars(call)]},
        {**result, "is_error": False},
    ]
    assert text(run(provider, messages=history, tools=[CLOCK])) == "It is noon."
    second = fake.requests[1]["messages"]
    if kind == "openai":
        assert second[2]["tool_calls"][0]["id"] == call.id and second[2]["content"] is None
        assert second[3] == {"role": "tool", "tool_call_id": call.id, "content": "12:00"}
    else:
        use = {"type": "tool_use", "id": call.id, "name": "clock", "input": {}}
        assert second[1]["content"] == [use]
        assert second[2]["content"][0]["tool_use_id"] == call.id


@pytest.mark.parametrize("kind", KINDS)
def test_thinking_streams_as_thinking_deltas(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(thinking="hmm let me see", text="Yes."))
    items = run(make(kind, fake))
    assert text(items, ThinkingDelta) == "hmm let me see"
    assert text(items) == "Yes."


@pytest.mark.parametrize(("kind", "status"), [("openai", 500), ("anthropic", 529)])
def test_http_error_is_provider_error_with_status_and_message(
    fake: FakeLLM, kind: str, status: int
) -> None:
    fake.script(FakeError(status=status, message="boom: the model is down"))
    with pytest.raises(ProviderError) as err:
        run(make(kind, fake))
    message = err.value.message
    assert message.startswith(f"{kind}: HTTP {status} from {url(fake, kind)}")
    assert "boom: the model is down" in message
    assert len(fake.requests) == 1  # max_retries=0: the run decides about retrying


@pytest.mark.parametrize("kind", KINDS)
def test_error_event_mid_stream_is_provider_error(fake: FakeLLM, kind: str) -> None:
    fake.script(
        FakeError(message="overloaded, try later", type="overloaded_error", mid_stream=True)
    )
    with pytest.raises(ProviderError, match=f"^{kind}: .*error from .*: overloaded, try later"):
        run(make(kind, fake))


@pytest.mark.parametrize("kind", KINDS)
def test_broken_stream_is_provider_error(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(text="a b c d e f", cut_after=3))
    with pytest.raises(ProviderError, match=f"^{kind}: connection to .* failed: .*incomplete"):
        run(make(kind, fake))


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_server_is_provider_error(kind: str) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ProviderError, match=f"^{kind}: connection to {where} failed"):
        run(make(kind, where))


@pytest.mark.parametrize("kind", KINDS)
def test_slow_server_times_out(fake: FakeLLM, kind: str) -> None:
    fake.script(FakeReply(text="a b c", chunk_delay=1.0))
    with pytest.raises(ProviderError, match=f"^{kind}: timed out"):
        run(make(kind, fake, timeout=0.2))


@pytest.mark.parametrize("kind", KINDS)
def test_abandoned_stream_is_closed_and_server_keeps_serving(fake: FakeLLM, kind: str) -> None:
    provider = make(kind, fake)
    fake.script(FakeReply(text="w1 w2 w3 w4 w5 w6", chunk_delay=0.05))
    request = LLMRequest(AGENT, "m1", "", [{"role": "user", "content": "hi"}])
    stream = provider.stream(request, pause=lambda s: None)
    assert isinstance(stream, Generator)
    assert next(stream) == TextDelta("w1")
    stream.close()  # what a cancelled run does
    assert of(run(provider), TextDelta)


def test_scripts_are_keyed_by_model_under_concurrency(fake: FakeLLM) -> None:
    for m in ("m1", "m2", "m3"):
        fake.script(*(FakeReply(text=f"{m} says {i}", chunk_delay=0.01) for i in range(3)), model=m)

    def agent(kind: str, model: str) -> tuple[str, list[str]]:
        provider = make(kind, fake)
        return model, [text(run(provider, model=model)) for _ in range(3)]

    with ThreadPoolExecutor(3) as pool:  # three agents share the server at once
        results = dict(pool.map(agent, ["openai", "anthropic", "openai"], ["m1", "m2", "m3"]))
    assert results == {m: [f"{m} says {i}" for i in range(3)] for m in ("m1", "m2", "m3")}
    assert len(fake.requests_for("m2")) == 3
    assert text(run(make("openai", fake))) == fake.default_text  # queues empty: the default


def test_provider_for_builds_by_kind(tmp_path: Any) -> None:
    providers = {"oa": ProviderConfig(kind="openai"), "an": ProviderConfig(kind="anthropic")}
    config = Config(home=tmp_path, providers=providers)
    oa, an = AgentConfig(name="a", model="oa/gpt"), AgentConfig(name="b", model="an/claude")
    assert isinstance(provider_for(AgentConfig(name="m"), config), MockProvider)
    assert isinstance(provider_for(oa, config), OpenAIProvider)
    assert isinstance(provider_for(an, config), AnthropicProvider)
    with pytest.raises(ProviderError, match="'nope' is not configured"):
        provider_for(AgentConfig(name="c", model="nope/x"), config)


def openai_chunk(delta: dict[str, Any]) -> ChatCompletionChunk:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    head = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m1"}
    return ChatCompletionChunk.model_validate({**head, "choices": [choice]})


def test_openai_tool_call_whose_id_comes_late_is_one_call() -> None:
    fragments = [
        {"index": 0, "function": {"name": "clock", "arguments": '{"tz": '}},
        {"index": 0, "id": "call_real", "function": {"arguments": '"UTC"}'}},
    ]
    chunks = [openai_chunk({"tool_calls": [f]}) for f in fragments]
    [call] = of(list(openai_translate(chunks)), ToolCallRequest)
    assert call == ToolCallRequest(id="call_real", name="clock", arguments={"tz": "UTC"})


def test_anthropic_usage_counts_cached_input_tokens() -> None:
    cached = {"cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000}
    usage = {"input_tokens": 5, "output_tokens": 1, **cached}
    message: dict[str, Any] = {"id": "m", "type": "message", "role": "assistant", "model": "m1"}
    message |= {"content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    delta = {"stop_reason": "end_turn", "stop_sequence": None}
    # A message_delta may repeat the cache counts or leave them out: the total is the same.
    for delta_usage in [{"input_tokens": 5}, {"input_tokens": 5, **cached}]:
        events: list[RawMessageStreamEvent] = [
            RawMessageStartEvent.model_validate({"type": "message_start", "message": message}),
            RawMessageDeltaEvent.model_validate(
                {
                    "type": "message_delta",
                    "delta": delta,
                    "usage": {**delta_usage, "output_tokens": 9},
                }
            ),
        ]
        assert list(anthropic_translate(events)) == [StepUsage(1105, 9)]
