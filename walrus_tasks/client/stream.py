"""Following a run's event stream, sans-IO: the SSE parser and the reconnect/resume decisions.

If the connection drops mid-stream, the client reconnects with ``Last-Event-ID`` = the id of the
last event it yielded, so the caller sees every event exactly once (docs/design.md, invariant 5).
``Resume`` decides what to do after an event, after a drop and when to give up; ``Client`` and
``AsyncClient`` only drive it with their own connection and sleep.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from walrus_tasks.client.core import GatewayUnreachable, raise_for_error, unexpected, unreachable

RETRY_DELAY = 0.2
"""Seconds before the first reconnection; doubled on each further attempt up to RETRY_DELAY_MAX."""

RETRY_DELAY_MAX = 2.0
"""The longest wait between two reconnections."""

RETRY_STATUSES = frozenset({502, 503, 504})
"""Statuses a proxy or a restarting gateway answers with: while following, a drop to retry."""

STREAM_CUT = "the stream ended before the run's end event"
"""The reason of a drop where the body simply ended (no transport error)."""


@dataclass(frozen=True)
class Event:
    """One run event: the SSE ``id`` (stream entry id), its ``type`` and the JSON object."""

    id: str
    type: str
    data: dict[str, Any]


class SSEParser:
    """Incremental SSE parser: ``feed`` one line at a time, get an Event at each frame's end.

    A frame is dispatched only at its terminating blank line, so a frame cut short by a
    dropped connection is never yielded (the resume delivers it whole). Keep-alive comments are
    skipped. Data that is not a JSON object raises ValueError.
    """

    def __init__(self) -> None:
        self._id, self._kind, self._data = "", "", list[str]()

    def feed(self, line: str) -> Event | None:
        """Take one line (without its newline); the completed event, if this line ends one."""
        if line == "":
            event = None
            if self._data:
                payload = json.loads("\n".join(self._data))
                if not isinstance(payload, dict):
                    raise ValueError(f"event data is not a JSON object: {payload!r:.100}")
                kind = self._kind or str(payload.get("type", ""))
                event = Event(id=self._id, type=kind, data=payload)
            self._id, self._kind, self._data = "", "", []
            return event
        if not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                self._id = value
            elif field == "event":
                self._kind = value
            elif field == "data":
                self._data.append(value)
        return None


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """The events of an SSE body, given line by line (see ``SSEParser``)."""
    parser = SSEParser()
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event


@contextmanager
def stream_errors(base_url: str, path: str) -> Iterator[None]:
    """Around one SSE request: a transport failure is a drop, bad event data a walrus error."""
    try:
        with unreachable(base_url):
            yield
    except ValueError as e:  # event data that is not a JSON object
        raise unexpected(base_url + path, f"bad event data: {e}") from e


def wants_error_body(resp: httpx.Response) -> bool:
    """Whether ``resp`` is an error whose body names it: read it before ``check_stream``."""
    return not resp.is_success and resp.status_code not in RETRY_STATUSES


def check_stream(resp: httpx.Response, base_url: str, path: str) -> None:
    """Raise unless ``resp`` is an event stream.

    A 502/503/504 is a drop (GatewayUnreachable), another error status its walrus error, and
    another kind of body an unexpected answer.
    """
    if resp.status_code in RETRY_STATUSES:
        raise GatewayUnreachable(base_url, f"HTTP {resp.status_code}")
    raise_for_error(resp)
    content_type = resp.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        kind = content_type or "untyped"
        raise unexpected(base_url + path, f"a {kind} body, not an event stream")


@dataclass
class Resume:
    """The reconnect/resume decisions for one followed stream; the caller does the I/O.

    A driver loops: open the stream with ``headers()``; for each event call ``on_event`` then
    yield it, and stop after it if ``on_event`` said so; when the stream drops (or just ends),
    sleep ``on_drop(reason, now)`` seconds and open again. ``on_drop`` raises GatewayUnreachable
    once the stream has been down ``give_up`` seconds without a new event.
    """

    base_url: str
    give_up: float
    last_id: str | None = None
    until_end: bool = True
    """Stop after the run's ``end`` event; false for the live feed, which goes on until the
    caller stops."""
    down_since: float | None = None
    """When the stream first dropped since its last event."""
    failures: int = 0

    def headers(self) -> dict[str, str]:
        """The headers of the next connection: resume after the last event yielded."""
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def on_event(self, event: Event) -> bool:
        """Note an event about to be yielded; True if the stream is complete after it."""
        self.down_since, self.failures = None, 0
        self.last_id = event.id or self.last_id
        return self.until_end and event.type == "end"

    def on_drop(self, reason: str, now: float) -> float:
        """The seconds to wait before reconnecting; GatewayUnreachable if it is time to give up."""
        self.down_since = now if self.down_since is None else self.down_since
        down = now - self.down_since
        left = self.give_up - down
        if left <= 0:
            raise GatewayUnreachable(
                self.base_url, f"{reason} (gave up reconnecting after {down:.1f} s)"
            )
        delay = min(RETRY_DELAY * 2.0**self.failures, RETRY_DELAY_MAX, left)
        self.failures += 1
        return delay
