"""The Anthropic Messages API, with the official SDK."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import (
    MessageDeltaUsage,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStreamEvent,
    ToolParam,
    Usage,
)

from walrus_tasks.config import ProviderConfig
from walrus_tasks.errors import ProviderError
from worker.providers.base import (
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

DEFAULT_BASE_URL = "https://api.anthropic.com"


def _client(config: ProviderConfig) -> anthropic.Anthropic:
    return cached_client(
        "anthropic",
        config,
        lambda: anthropic.Anthropic(
            base_url=config.base_url,
            api_key=config.api_key or "unused",  # never fall back to ambient credentials
            max_retries=0,  # the run retries (worker.retry): a wait never holds a pool slot
            timeout=timeouts(config),
        ),
    )


class AnthropicProvider:
    """Streams ``/v1/messages`` answers of an Anthropic (or compatible) ``base_url``."""

    def __init__(self, config: ProviderConfig) -> None:
        self._config = config
        self._where = config.base_url or DEFAULT_BASE_URL

    def stream(self, request: LLMRequest, pause: Callable[[float], None]) -> Iterator[StreamItem]:
        """Stream one step: text and thinking as they come, each tool call when whole, usage."""
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        watch: FirstTokenWatch | None = None
        try:
            events = _client(self._config).messages.create(
                model=request.model,
                max_tokens=self._config.max_tokens,
                system=request.system or anthropic.omit,
                messages=cast("list[MessageParam]", to_anthropic_messages(request)),
                tools=cast("list[ToolParam]", tools) if tools else anthropic.omit,
                stream=True,
                timeout=timeouts(self._config),
            )
            watch = FirstTokenWatch(self._config.first_token_timeout, events.response)
            with events:
                for item in _translate(events):
                    watch.seen()
                    yield item
        except (anthropic.AnthropicError, httpx2.HTTPError, ValueError) as e:
            if watch is not None and watch.fired:
                raise first_token_error("anthropic", self._config, self._where) from e
            raise _provider_error(e, self._where) from e
        finally:
            if watch is not None:
                watch.seen()


def to_anthropic_messages(request: LLMRequest) -> list[dict[str, Any]]:
    """Walrus history as Messages API turns; consecutive same-role entries share one turn.

    So the tool results of one step become one user turn of ``tool_result`` blocks.
    """
    out: list[dict[str, Any]] = []
    for m in request.messages:
        role = m.get("role")
        blocks: list[dict[str, Any]] = []
        if role == "tool":
            result = {"type": "tool_result", "tool_use_id": m["tool_call_id"]}
            blocks.append(
                result | {"content": str(m["content"]), "is_error": bool(m.get("is_error"))}
            )
        elif m.get("content"):  # the API rejects empty text blocks
            blocks.append({"type": "text", "text": str(m["content"])})
        if role == "assistant":
            for call in m.get("tool_calls") or []:
                use = {"type": "tool_use", "id": call["id"], "name": call["name"]}
                blocks.append(use | {"input": call.get("arguments") or {}})
        turn = "assistant" if role == "assistant" else "user"
        if not blocks:
            continue
        if out and out[-1]["role"] == turn:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": turn, "content": blocks})
    return out


@dataclass
class _ToolUse:
    id: str
    name: str
    start_input: object
    json: list[str] = field(default_factory=list)


def _translate(events: Iterable[RawMessageStreamEvent]) -> Iterator[StreamItem]:
    uses: dict[int, _ToolUse] = {}
    tokens_in = tokens_out = 0
    for event in events:
        if isinstance(event, RawMessageStartEvent):
            tokens_in = _input_tokens(event.message.usage)
            tokens_out = event.message.usage.output_tokens
        elif isinstance(event, RawContentBlockStartEvent):
            block = event.content_block
            if block.type == "tool_use":
                uses[event.index] = _ToolUse(block.id, block.name, block.input)
        elif isinstance(event, RawContentBlockDeltaEvent):
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                yield TextDelta(delta.text)
            elif delta.type == "thinking_delta" and delta.thinking:
                yield ThinkingDelta(delta.thinking)
            elif delta.type == "input_json_delta" and event.index in uses:
                uses[event.index].json.append(delta.partial_json)
        elif isinstance(event, RawContentBlockStopEvent) and event.index in uses:
            use = uses.pop(event.index)
            yield ToolCallRequest(id=use.id, name=use.name, arguments=_arguments(use))
        elif isinstance(event, RawMessageDeltaEvent):
            tokens_out = event.usage.output_tokens  # cumulative, so it replaces
            if event.usage.input_tokens is not None:
                # Cumulative too; max() keeps the start's cache counts if the delta omits them.
                tokens_in = max(tokens_in, _input_tokens(event.usage))
    yield StepUsage(input_tokens=tokens_in, output_tokens=tokens_out)


def _input_tokens(usage: Usage | MessageDeltaUsage) -> int:
    """Cached prompt tokens are input too: the run reports the whole context size."""
    return (
        (usage.input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


def _arguments(use: _ToolUse) -> dict[str, Any]:
    if use.json:
        return parse_arguments("".join(use.json))
    return use.start_input if isinstance(use.start_input, dict) else {}


def _provider_error(e: Exception, where: str) -> ProviderError:
    """An SDK or transport failure as a ProviderError naming the provider, status and server."""
    if isinstance(e, anthropic.APIStatusError):
        message = e.api_message or _body_text(e.body) or e.message
        # status < 400: an ``event: error`` inside a 200 stream
        return status_error(
            "anthropic", e.status_code, where, message, e.response.headers, e.type or ""
        )
    if isinstance(e, anthropic.APIConnectionError):  # the SDK wraps the httpx2 error as the cause
        cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
        return transport_error("anthropic", cause, where)
    if isinstance(e, (httpx2.HTTPError, ValueError)):  # raised unwrapped while streaming
        return transport_error("anthropic", e, where)
    return ProviderError(f"anthropic: {e}")


def _body_text(body: object) -> str:
    if isinstance(body, str):
        return body.strip()[:500]
    return json.dumps(body)[:500] if body else ""
