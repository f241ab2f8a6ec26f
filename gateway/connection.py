"""One HTTP connection: uvicorn's httptools protocol holding less, and saying when it is lost.

An SSE stream holds its connection for as long as the client listens, so every object of a
connection counts ten thousand times over. Measured with tracemalloc on 900 open native
streams (``docs/benchmarks.md``, issue 25, fourth round), uvicorn's protocol kept three
``collections.deque`` per connection, ~740 bytes each though each is nearly always empty: the
queue of pipelined requests, and the waiters of two ``asyncio.Event`` (the request's message
event and the flow control's writable event). :class:`LeanConnection` gives each a list
instead (56 bytes; ``asyncio.Event`` only appends, removes and iterates its waiters, and the
pipeline queue is only appended to at the left, popped at the right and tested).

It also offers each request the :data:`ON_LEAVE` scope key: ``scope[ON_LEAVE](callback)``
calls ``callback`` once when the connection is lost while the request is being answered
(``None`` stops that). A stream that used it needs no task of its own waiting on ``receive``
for ``http.disconnect`` (:class:`gateway.sse.EventStream`, with that task as the fallback on
another server). Both are tested in ``tests/test_connection.py``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ON_LEAVE = "walrus.on_leave"
"""The scope key of a request's "call this when my client leaves" (see the module docstring)."""

Leave = Callable[[], None]


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests, as a list: ``appendleft``, ``pop``, truth."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def lean_event(event: asyncio.Event) -> None:
    """Give ``event`` a list for its waiters, unless it has a waiter already."""
    waiters = event._waiters
    if isinstance(waiters, deque) and not waiters:
        event._waiters = []  # type: ignore[assignment]  # list: see the module docstring


class LeanConnection(HttpToolsProtocol):
    """uvicorn's httptools protocol holding less per connection, with :data:`ON_LEAVE`."""

    __slots__ = ("_on_leave",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self._on_leave: Leave | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """The flow control's writable event waits on a list."""
        super().connection_made(transport)
        lean_event(self.flow._is_writable_event)

    def connection_lost(self, exc: Exception | None) -> None:
        """Then tell the request being answered, if it asked (:data:`ON_LEAVE`)."""
        leave, self._on_leave = self._on_leave, None
        super().connection_lost(exc)
        if leave is not None:
            leave()

    def on_message_begin(self) -> None:
        """A request's scope offers :data:`ON_LEAVE`."""
        super().on_message_begin()
        self.scope[ON_LEAVE] = self._watch  # type: ignore[literal-required]

    def on_headers_complete(self) -> None:
        """The request's message event waits on a list."""
        super().on_headers_complete()
        if self.cycle is not None:  # None: a WebSocket upgrade was the first request
            lean_event(self.cycle.message_event)

    def _watch(self, leave: Leave | None) -> None:
        """Call ``leave`` when the connection is lost (at once if it is); None: do not."""
        if leave is not None and self.transport.is_closing():
            self.loop.call_soon(leave)
            return
        self._on_leave = leave
