"""One HTTP connection: uvicorn's httptools protocol holding less, and saying when it is lost.

An SSE stream holds its connection for as long as the client listens, so every object of a
connection counts ten thousand times over. Measured with tracemalloc on 900 open native
streams (``docs/benchmarks.md``, issue 25, fourth round), uvicorn's protocol kept three
``collections.deque`` per connection, ~740 bytes each though each is nearly always empty: the
queue of pipelined requests, and the waiters of two ``asyncio.Event`` (the request's message
event and the flow control's writable event). :class:`LeanConnection` gives each a list
instead (56 bytes; ``asyncio.Event`` only appends, removes and iterates its waiters, and the
pipeline queue is only appended to at the left, popped at the right and tested).

Its HTTP parser (~0.9 KB, httptools' C state) is dropped once a request has been read whole
and nothing past it was: a stream's connection receives nothing more while it is open. After a
keep-alive request the next bytes get a new parser, which starts where the kept one would (at
a message's start); after one that said ``Connection: close`` they are ignored, as the kept
parser ignored them (uvicorn sets ``lenient_data_after_close``). A parser mid-way through a
pipelined request is kept.

What a response writes goes out in one ``send`` per turn of the event loop
(:class:`_OneSend`): uvicorn writes a response's status line and headers, then its body, each
with a ``send`` of its own, and a client woken by the first reads again for the second. With
their writes held until the loop's turn ends, a JSON answer is one ``send`` and one read
(docs/benchmarks.md, issue 25, twentieth round).

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
from contextlib import suppress
from typing import Any

import httptools
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


def _parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    """A new parser for ``protocol``, set up as uvicorn sets up its first."""
    parser = httptools.HttpRequestParser(protocol)
    with suppress(AttributeError):  # httptools < 0.6.3, as uvicorn allows
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


class _OneSend:
    """A connection's transport whose writes of one turn of the loop go out as one ``send``.

    The first write of a turn is held and a flush scheduled (``call_soon``); the writes after
    it in the same turn join it. Closing, or ending the writes, sends what is held first;
    aborting drops it. Everything else is the transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self._flush)
        else:
            self._held.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held or ()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LeanConnection(HttpToolsProtocol):
    """uvicorn's httptools protocol holding less per connection, with :data:`ON_LEAVE`."""

    __slots__ = ("_between", "_keep_alive", "_on_leave")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self._on_leave: Leave | None = None
        self._between = False
        """The parser has read a request whole and nothing of the next one."""
        self._keep_alive = True
        """That request keeps the connection open for another."""

    def data_received(self, data: bytes) -> None:
        """Parse ``data`` (with a new parser if the last was dropped); drop it if idle after."""
        if self.parser is None:
            if not self._keep_alive:  # after a Connection: close, as its parser did
                return
            self.parser = _parser(self)
        super().data_received(data)
        if self._between and not self.transport.is_closing():
            self.parser = None  # type: ignore[assignment]  # see the module docstring

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """The flow control's writable event waits on a list; writes go by :class:`_OneSend`."""
        super().connection_made(transport)
        lean_event(self.flow._is_writable_event)
        self.transport = _OneSend(transport, self.loop)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        """The WebSocket's protocol writes on the transport itself (what is held sent first)."""
        if isinstance(self.transport, _OneSend):
            self.transport._flush()
            self.transport = self.transport._transport
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        """Then tell the request being answered, if it asked (:data:`ON_LEAVE`)."""
        leave, self._on_leave = self._on_leave, None
        super().connection_lost(exc)
        if leave is not None:
            leave()

    def on_message_begin(self) -> None:
        """A request's scope offers :data:`ON_LEAVE`."""
        self._between = False
        super().on_message_begin()
        self.scope[ON_LEAVE] = self._watch  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        """Between requests: the parser may go (see the module docstring)."""
        super().on_message_complete()
        self._between, self._keep_alive = True, self.parser.should_keep_alive()

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
