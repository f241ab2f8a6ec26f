"""What every LLM provider implements: stream one step's answer as typed items."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
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
    """A failure without an HTTP status: timeout, connection refused or cut, unparsable data.

    Timeouts and connection failures are transient; a malformed stream is not.
    """
    if isinstance(e, httpx2.TimeoutException | TimeoutError):
        return ProviderError(f"{provider}: timed out waiting for {where}", transient=True)
    if isinstance(e, ValueError):
        return ProviderError(f"{provider}: malformed stream from {where}: {e}")
    return ProviderError(
        f"{provider}: connection to {where} failed: {e or type(e).__name__}", transient=True
    )


TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
"""Statuses worth a retry besides every 5xx: timeout, conflict/overloaded, too early, rate limit."""
TRANSIENT_TYPES = frozenset(
    {"overloaded_error", "rate_limit_error", "api_error", "server_error", "timeout_error"}
)
"""Error types of an in-stream error event that are worth a retry."""
_CONTEXT_RE = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many (input )?tokens"
    r"|reduce the length",
    re.I,
)


def status_error(
    provider: str,
    status: int,
    where: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    error_type: str = "",
) -> ProviderError:
    """An HTTP error answer (or an in-stream error event, ``status`` < 400) as a ProviderError.

    Classified for the retry policy: transient or not, how long the provider asked us to wait,
    and whether the request was too long for the model.
    """
    if status < 400:
        text = f"{provider}: stream error from {where}: {error_type}: {message}"
        return ProviderError(text, transient=error_type in TRANSIENT_TYPES)
    return ProviderError(
        f"{provider}: HTTP {status} from {where}: {message}",
        transient=status in TRANSIENT_STATUSES or status >= 500,
        retry_after=retry_after(headers or {}) if status in (429, 503, 529) else None,
        context_length=status in (400, 413) and bool(_CONTEXT_RE.search(message)),
    )


_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asks us to wait, from its headers; None if it does not say.

    ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date); else the rate-limit
    reset headers of the exhausted limit: OpenAI's ``x-ratelimit-reset-{requests,tokens}``
    (durations like ``1s``, ``6m0s``, ``20ms``), Anthropic's
    ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`` (RFC 3339).
    """
    h = {k.lower(): v for k, v in headers.items()}
    now = time.time() if now is None else now
    if (ms := _number(h.get("retry-after-ms"))) is not None:
        return max(ms / 1000, 0.0)
    if (value := h.get("retry-after")) is not None:
        if (seconds := _number(value)) is not None:
            return max(seconds, 0.0)
        try:
            return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
        except (TypeError, ValueError):
            pass
    resets: list[float] = []
    for limit in ("requests", "tokens"):
        if h.get(f"x-ratelimit-remaining-{limit}", "1") == "0":
            resets += _durations([h.get(f"x-ratelimit-reset-{limit}", "")])
    for limit in ("requests", "tokens", "input-tokens", "output-tokens"):
        if h.get(f"anthropic-ratelimit-{limit}-remaining", "1") == "0":
            stamp = h.get(f"anthropic-ratelimit-{limit}-reset", "")
            try:
                resets.append(datetime.fromisoformat(stamp).timestamp() - now)
            except ValueError:
                continue
    return max(max(resets), 0.0) if resets else None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _durations(values: list[str]) -> list[float]:
    out = []
    for value in values:
        parts = _GO_DURATION_RE.findall(value)
        if parts:
            out.append(sum(float(n) * _UNITS[unit] for n, unit in parts))
    return out


def timeouts(config: ProviderConfig) -> httpx2.Timeout:
    """The provider's connect, read and overall timeouts for the SDK client."""
    read = config.read_timeout or config.timeout
    return httpx2.Timeout(config.timeout, connect=config.connect_timeout, read=read)


def first_token_error(provider: str, config: ProviderConfig, where: str) -> ProviderError:
    """The stream was closed by its first-token timeout (transient: worth a retry)."""
    seconds = config.first_token_timeout
    return ProviderError(
        f"{provider}: timed out waiting for the first token from {where} ({seconds:g} s)",
        transient=True,
    )


class FirstTokenWatch:
    """Cuts a streamed answer that yields nothing within ``seconds`` (the first-token timeout).

    ``response`` is the SDK stream's HTTP response. Closing it from this thread would not wake
    the read blocked in the worker's thread, so its socket is shut down: the read fails, and
    the provider reports the timeout (``fired``). ``seen()`` disarms the watch.
    """

    def __init__(self, seconds: float | None, response: httpx2.Response) -> None:
        self.fired = False
        self._timer: threading.Timer | None = None
        if seconds:
            self._timer = threading.Timer(seconds, self._fire, (response,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, response: httpx2.Response) -> None:
        self.fired = True
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        else:
            response.close()

    def seen(self) -> None:
        """The first item arrived: the watch is off."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
