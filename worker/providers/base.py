"""What every LLM provider implements: stream one step's answer as typed items."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx2

from walrus_tasks.config import AgentConfig, ProviderConfig
from walrus_tasks.errors import ProviderError


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: name, description and a JSON-Schema for its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class LLMRequest:
    """One LLM call.

    ``messages`` are history entries in walrus form::

        {"role": "user", "content": str}
        {"role": "assistant", "content": str, "tool_calls": [{"id", "name", "arguments": dict}]?}
        {"role": "tool", "tool_call_id": str, "name": str, "content": str, "is_error": bool}

    Extra keys (``run_id`` …) may be present and are ignored by providers.
    """

    agent: AgentConfig
    model: str
    system: str
    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = field(default_factory=list)


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply text."""

    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """A piece of the model's reasoning, when the provider streams it."""

    text: str


@dataclass(frozen=True)
class ToolCallRequest:
    """A complete tool call the model asked for (yielded once its arguments are whole)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class StepUsage:
    """Token counts of the call (yielded once, at the end, when the provider reports them)."""

    input_tokens: int
    output_tokens: int


StreamItem = TextDelta | ThinkingDelta | ToolCallRequest | StepUsage


class Provider(Protocol):
    """An LLM endpoint.

    ``stream`` yields items as they arrive. ``pause(seconds)`` is the run's interruptible sleep:
    it raises ``Cancelled`` when the run is killed (the mock model paces its chunks with it).
    Errors of the endpoint (HTTP status, malformed stream, connection) are raised as
    ``walrus_tasks.errors.ProviderError`` with a message naming the provider and the status.
    """

    def stream(self, request: LLMRequest, pause: Callable[[float], None]) -> Iterator[StreamItem]:
        """Stream one step's answer."""
        ...


class _Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closeable)
_clients: dict[tuple[int, str, str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def cached_client(kind: str, config: ProviderConfig, build: Callable[[], C]) -> C:
    """One SDK client per (process, kind, base_url, api_key), built on first use.

    Keyed by pid so a forked pool process never shares its parent's sockets.
    """
    key = (os.getpid(), kind, config.base_url, config.api_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = build()
    return client


def close_clients() -> None:
    """Close this process's cached SDK clients (tests, shutdown)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def parse_arguments(raw: str) -> dict[str, Any]:
    """Tool arguments from the model's JSON text; anything but an object → ``{"_raw": raw}``."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def transport_error(provider: str, e: Exception, where: str) -> ProviderError:
    """A failure without an HTTP status: timeout, connection refused or cut, unparsable data."""
    if isinstance(e, httpx2.TimeoutException | TimeoutError):
        return ProviderError(f"{provider}: timed out waiting for {where}")
    if isinstance(e, ValueError):
        return ProviderError(f"{provider}: malformed stream from {where}: {e}")
    return ProviderError(f"{provider}: connection to {where} failed: {e or type(e).__name__}")
