"""How many event streams one client may hold open: ``WALRUS_GATEWAY_MAX_STREAMS_PER_CLIENT``.

A stream costs the gateway a hub subscription and a buffer for as long as it is open, and a
WebSocket carries any number of them on one connection, so the per-address connection cap of
:mod:`gateway.server` does not bound them. The client is its token (with tokens configured) or
its address (the peer's, or the one a trusted proxy forwards). Every stream counts: the native
SSE routes (a run's events, a streamed message, the feed), the OpenAI and Agent Protocol
streams, an MCP ``tools/call`` while it runs, and the WebSocket ``stream``/``subscribe_events``
operations. The counts are per gateway process, in memory.

:class:`StreamLimitMiddleware` gives each request a :class:`_Holder`; a streaming route calls
:func:`hold_stream` before it starts anything (so a refused stream changed nothing), and the
slot is given back when the request's task ends (a done callback: it runs however it ends).
A WebSocket operation holds one with :func:`stream_slot` for as long as it streams, and so does
a stream served by a task other than its request's (an MCP session's, ``gateway.mcp_face``),
given the request's scope: the middleware puts the holder there too (``HOLDER_KEY``).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import GRANT_KEY
from walrus_tasks.config import TokenGrant
from walrus_tasks.errors import WalrusError


class TooManyStreams(WalrusError):
    """``429 too_many_streams``: the client holds its limit of open streams."""

    status = 429
    code = "too_many_streams"


class StreamCounts:
    """Open streams per client key, capped at ``limit``; thread-safe (sync routes count too)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}
        self.lock = threading.Lock()

    def acquire(self, key: str) -> None:
        """Count one more stream of ``key``, or raise :class:`TooManyStreams`."""
        with self.lock:
            held = self.open.get(key, 0)
            if held >= self.limit:
                raise TooManyStreams(
                    f"this client has {self.limit} event streams open on this gateway process: "
                    "close one first (WALRUS_GATEWAY_MAX_STREAMS_PER_CLIENT)"
                )
            self.open[key] = held + 1

    def release(self, key: str, n: int = 1) -> None:
        """``n`` streams of ``key`` have ended."""
        with self.lock:
            held = self.open.get(key, 0) - n
            if held > 0:
                self.open[key] = held
            else:
                self.open.pop(key, None)


class _Holder:
    """One request's client key and the streams it holds."""

    __slots__ = ("counts", "held", "key")

    def __init__(self, counts: StreamCounts, key: str) -> None:
        self.counts, self.key, self.held = counts, key, 0

    def release(self, _: object = None) -> None:
        """Give back every stream the request held (its task is done)."""
        held, self.held = self.held, 0
        if held:
            self.counts.release(self.key, held)


_REQUEST: ContextVar[_Holder | None] = ContextVar("walrus_stream_holder", default=None)
HOLDER_KEY = "walrus.stream_holder"
"""The scope key of a request's :class:`_Holder` (for :func:`stream_slot` given a scope)."""


def client_key(scope: Scope) -> str:
    """Whom a request's streams count for: its token (hashed), else its client address."""
    grant = scope.get(GRANT_KEY)
    if isinstance(grant, TokenGrant):
        secret = grant.token.get_secret_value().encode()
        return "token:" + hashlib.sha256(secret).hexdigest()[:16]
    client = scope.get("client") or ("?", 0)
    return f"address:{client[0]}"


class StreamLimitMiddleware:
    """ASGI middleware: give each request a stream holder; release its streams at the end.

    Installed inside the bearer check (so the request's grant is known) and outside every
    route that streams, the native SSE middleware included.
    """

    def __init__(self, app: ASGIApp, counts: StreamCounts) -> None:
        self.app = app
        self.counts = counts

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Run the request with a holder; give back whatever it held when it ends.

        The server runs each request (each WebSocket) in a task of its own, which ends when
        the request does, however it ends: the holder is set in that task's context and given
        back by a done callback of the task. Not a coroutine with a ``finally``: that would
        keep one more frame alive for as long as each stream is open.
        """
        task = asyncio.current_task()
        if task is not None and scope["type"] in ("http", "websocket"):
            holder = _Holder(self.counts, client_key(scope))
            _REQUEST.set(holder)  # the request task's own context
            scope[HOLDER_KEY] = holder
            task.add_done_callback(holder.release)
        return self.app(scope, receive, send)


def hold_stream() -> None:
    """Count a stream for the current HTTP request until it ends, or raise TooManyStreams.

    Call it before the stream's route changes anything. Outside a request (a unit test
    calling a route function) it does nothing.
    """
    holder = _REQUEST.get()
    if holder is None:
        return
    holder.counts.acquire(holder.key)
    holder.held += 1


@contextmanager
def stream_slot(scope: Scope | None = None) -> Iterator[None]:
    """Hold a stream while the block runs: the current WebSocket operation's, or ``scope``'s.

    With ``scope`` it counts for that request's client whatever task runs the block.
    """
    holder = _REQUEST.get() if scope is None else scope.get(HOLDER_KEY)
    if not isinstance(holder, _Holder):
        yield
        return
    holder.counts.acquire(holder.key)
    try:
        yield
    finally:
        holder.counts.release(holder.key)
