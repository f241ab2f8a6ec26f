"""Any OpenAI-compatible chat-completions endpoint (OpenAI, DeepSeek, Ollama, vLLM, llama.cpp…)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)

from walrus_tasks.config import ProviderConfig
from walrus_tasks.errors import ProviderError
from worker.providers.base import (
    TRANSIENT_TYPES,
    FirstTokenWatch,
    LLMRequest,
    StepUsage,
    StreamItem,
    TextDelta,
    ThinkingDelta,
    ToolCallRequest,
    cached_client,
    first_token_error,
    parse_arguments,
    status_error,
    timeouts,
    transport_error,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _client(config: ProviderConfig) -> openai.OpenAI:
    return cached_client(
        "openai",
        config,
        lambda: openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "unused",  # local servers need no key; the SDK wants one
            max_retries=0,  # the run retries (worker.retry): a wait never holds a pool slot
            timeout=timeouts(config),
        ),
    )


class OpenAIProvider:
    """Streams chat completions from an OpenAI-compatible ``base_url`` with the official SDK."""

    def __init__(self, config: ProviderConfig) -> None:
        self._config = config
        self._where = config.base_url or DEFAULT_BASE_URL

    def stream(self, request: LLMRequest, pause: Callable[[float], None]) -> Iterator[StreamItem]:
        """Stream one step: text and reasoning as they come, then tool calls, then usage."""
        tools = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
        watch: FirstTokenWatch | None = None
        try:
            chunks = _client(self._config).chat.completions.create(
                model=request.model,
                messages=cast("list[ChatCompletionMessageParam]", to_openai_messages(request)),
                tools=cast("list[ChatCompletionToolUnionParam]", tools) if tools else openai.omit,
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeouts(self._config),
            )
            watch = FirstTokenWatch(self._config.first_token_timeout, chunks.response)
            with chunks:
                for item in _translate(chunks):
                    watch.seen()
                    yield item
        except (openai.OpenAIError, httpx2.HTTPError, ValueError) as e:
            if watch is not None and watch.fired:
                raise first_token_error("openai", self._config, self._where) from e
            raise _provider_error(e, self._where) from e
        finally:
            if watch is not None:
                watch.seen()


def to_openai_messages(request: LLMRequest) -> list[dict[str, Any]]:
    """Walrus history (see ``LLMRequest``) as chat-completions messages, system prompt first."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for m in request.messages:
        role = m.get("role")
        if role == "assistant":
            calls = [_openai_call(c) for c in m.get("tool_calls") or []]
            message: dict[str, Any] = {"role": "assistant", "content": m.get("content") or ""}
            if calls:
                message["tool_calls"] = calls
                message["content"] = m.get("content") or None  # some servers reject "" here
            out.append(message)
        elif role == "tool":
            out.append(
                {"role": "tool", "tool_call_id": m["tool_call_id"], "content": str(m["content"])}
            )
        else:
            out.append({"role": "system" if role == "system" else "user", "content": m["content"]})
    return out


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    args = call.get("arguments") or {}
    # Arguments that were not JSON go back as the model wrote them.
    text = args["_raw"] if set(args) == {"_raw"} else json.dumps(args)
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": text},
    }


@dataclass
class _PartialCall:
    id: str
    made_up: bool = False  # ``id`` is ours: the call's first fragment had none
    name: str = ""
    args: list[str] = field(default_factory=list)


def _translate(chunks: Iterable[ChatCompletionChunk]) -> Iterator[StreamItem]:
    calls: list[_PartialCall] = []
    by_index: dict[int, _PartialCall] = {}
    usage: StepUsage | None = None
    for chunk in chunks:
        if chunk.usage is not None:  # last chunk normally; some servers send it on every chunk
            usage = StepUsage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices[:1]:
            delta = choice.delta
            reasoning = getattr(delta, "reasoning_content", None) or getattr(
                delta, "reasoning", None
            )
            if isinstance(reasoning, str) and reasoning:
                yield ThinkingDelta(reasoning)
            if delta.content:
                yield TextDelta(delta.content)
            if delta.refusal:
                yield TextDelta(delta.refusal)
            for tc in delta.tool_calls or []:
                slot = by_index.get(tc.index) if tc.index is not None else None
                if slot is not None and tc.id and tc.id != slot.id:
                    if slot.made_up:  # the real id of a call whose first fragment had none
                        slot.id, slot.made_up = tc.id, False
                    else:  # a server reusing an index with a fresh id: a new call
                        slot = None
                if slot is None:
                    slot = _PartialCall(id=tc.id or f"call_{len(calls)}", made_up=not tc.id)
                    calls.append(slot)
                    if tc.index is not None:
                        by_index[tc.index] = slot
                if tc.function is not None:
                    name = tc.function.name or ""
                    if name != slot.name:  # some servers repeat the whole name in each fragment
                        slot.name += name
                    slot.args.append(tc.function.arguments or "")
    for call in calls:
        yield ToolCallRequest(
            id=call.id, name=call.name, arguments=parse_arguments("".join(call.args))
        )
    if usage is not None:
        yield usage


def _server_message(body: object, fallback: str) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def _provider_error(e: Exception, where: str) -> ProviderError:
    """An SDK or transport failure as a ProviderError naming the provider, status and server."""
    if isinstance(e, openai.APIStatusError):
        message = _server_message(e.body, e.message)
        return status_error("openai", e.status_code, where, message, e.response.headers)
    if isinstance(e, openai.APIConnectionError):  # the SDK wraps the httpx2 error as the cause
        cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
        return transport_error("openai", cause, where)
    if isinstance(e, openai.APIError):  # an error inside a 200 stream
        message = _server_message(e.body, e.message)
        kind = e.type or ""
        return ProviderError(
            f"openai: error from {where}: {message}", transient=kind in TRANSIENT_TYPES
        )
    if isinstance(e, (httpx2.HTTPError, ValueError)):
        return transport_error("openai", e, where)
    return ProviderError(f"openai: {e}")
