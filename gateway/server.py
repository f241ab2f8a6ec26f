"""The gateway's HTTP server: uvicorn's httptools protocol, bounded for every client.

Plain uvicorn lets any client tie a process up without a token: it waits forever for the first
byte of a connection and for the end of a request's headers (a "slowloris" sends one header line
every few seconds), takes a request head of any size (llhttp sets no limit), and serves as many
connections from one address as it sends. :class:`BoundedHttpTools` adds, per connection:

- an idle timeout before the first byte (``WALRUS_GATEWAY_IDLE_TIMEOUT``): then it is closed;
- a header timeout from a request's first byte until its headers are complete
  (``WALRUS_GATEWAY_HEADER_TIMEOUT``): then ``408`` and closed (between requests uvicorn's
  keep-alive timeout applies, as before);
- a limit on a request's line and headers (``WALRUS_GATEWAY_MAX_HEADER_BYTES``): ``431`` and
  closed, counted on the raw bytes as they arrive, so a huge head is never buffered whole;
- a cap on the open connections of one client address (``WALRUS_GATEWAY_MAX_CONNECTIONS_PER_
  CLIENT``): the connection over it is answered ``429`` and closed at once. A WebSocket counts
  until it closes.

The client address is the peer's, unless the peer is one of ``WALRUS_GATEWAY_TRUSTED_PROXIES``:
then it is the one ``X-Forwarded-For`` names (uvicorn's own reading of it, which also sets the
ASGI ``client``), and a proxy's connection counts for the client of its latest request (a proxy
pools connections across its clients). The counts are per gateway process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from collections.abc import AsyncGenerator, Callable
from typing import Any

import uvicorn
from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from gateway.connection import LeanConnection
from walrus_tasks.settings import Settings

log = logging.getLogger("walrus.gateway.server")

STREAMS_END_WAIT = 1.0
"""Seconds a stopping server waits for its streams to write their last error frame."""
STARTUP_FAILURE = 3
"""The exit code when the server did not start (uvicorn.run's, which this replaces)."""


class AddressCounts:
    """Open connections per client address, capped at ``limit`` (one per gateway process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more connection of ``address``; False (and not counted) at the cap."""
        held = self.open.get(address, 0)
        if held >= self.limit:
            return False
        self.open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """One connection of ``address`` is gone."""
        held = self.open.get(address, 0) - 1
        if held > 0:
            self.open[address] = held
        else:
            self.open.pop(address, None)


class _Refused(Exception):
    """Raised from a parser callback: the request is refused (``_refused`` holds the answer)."""


LINGER = 2.0
"""Seconds a refused connection still reads (and drops) what the client sends after the answer:
closing with unread input would reset the connection, and the reset can destroy the answer
before the client reads it."""


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole ``Connection: close`` response with the gateway's JSON error body."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class BoundedHttpTools(LeanConnection):
    """uvicorn's httptools protocol with the bounds of the module docstring.

    On :class:`gateway.connection.LeanConnection` (what each connection holds). Configured by
    :func:`bounded_protocol` (class attributes: one set per process).
    """

    # Slots, not the instance dict: uvicorn's protocol keeps ~30 attributes in its __dict__, and
    # 7 more would make every connection's dict double (measured: ~1 KB per open stream).
    __slots__ = (
        "_draining",
        "_head_bytes",
        "_head_done",
        "_held",
        "_in_head",
        "_refused",
        "_timer",
    )

    idle_timeout = 10.0
    header_timeout = 10.0
    max_head = 16 * 1024
    counts = AddressCounts(1024)
    trusted: _TrustedHosts | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._held: str | None = None  # the address this connection is counted for
        self._head_bytes = 0  # raw bytes of the request head read so far
        self._in_head = True  # between a message's end and the next one's headers
        self._head_done = False  # a head completed during the current feed
        self._refused: bytes | None = None  # the answer to send once the parser stops
        self._draining = False  # answered and closing: input is dropped

    # --- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the peer (unless it is a trusted proxy) and arm the idle timeout."""
        super().connection_made(transport)
        peer = self.client[0] if self.client else ""
        if (self.trusted is None or peer not in self.trusted) and not self._count(peer):
            return
        self._arm(self.idle_timeout, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timer and uncount the connection."""
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def _count(self, address: str) -> bool:
        if self.counts.acquire(address):
            self._held = address
            return True
        log.debug("refused a connection of %s: %d open", address, self.counts.limit)
        message = (
            f"{address} has {self.counts.limit} connections open to this gateway process: "
            "close some (WALRUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT)"
        )
        self._close_with(error_bytes(429, "too_many_connections", message))
        return False

    def _uncount(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self.counts.release(held)

    def _close_with(self, response: bytes) -> None:
        """Answer ``response``, then close after the client stops sending (or ``LINGER``)."""
        self._disarm()
        if self._draining or self.transport.is_closing():
            return
        self._draining = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self._arm(LINGER, self.transport.close)
        else:
            self.transport.close()

    # --- timers --------------------------------------------------------------------------

    def _arm(self, delay: float, then: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, then)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> None:
        self._timer = None
        self.transport.close()  # no byte yet: nothing to answer

    def _slow_head(self) -> None:
        self._timer = None
        message = f"request headers not received within {self.header_timeout:g} s"
        self._close_with(error_bytes(408, "timeout", message))

    # --- reading -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed the parser; count the head's bytes; answer 431 when it is over the limit."""
        if self._draining or self.transport.is_closing():
            return
        counting, self._head_done = self._in_head, False
        super().data_received(data)  # a callback's _Refused comes back as a parser error
        if self._refused is not None:
            response, self._refused = self._refused, None
            self._close_with(response)
            return
        # A chunk that started in a head and ended in one, with no head completed in it,
        # is all head: count it (a chunk that also held a body is counted by the callbacks).
        if counting and self._in_head and not self._head_done and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._close_with(self._too_large())

    def send_400_response(self, msg: str) -> None:
        """The parser failed: answer our refusal if a callback refused, else uvicorn's 400."""
        if self._refused is None:
            super().send_400_response(msg)

    def _too_large(self) -> bytes:
        message = f"request line and headers exceed the {self.max_head}-byte limit"
        return error_bytes(431, "headers_too_large", message)

    def on_message_begin(self) -> None:
        """A request's first byte: its headers must be complete within the header timeout."""
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._arm(self.header_timeout, self._slow_head)

    def on_headers_complete(self) -> None:
        """Check the head's size (and the proxied client's count), then serve it."""
        self._disarm()
        self._in_head, self._head_done = False, True
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_head:
            self._refused = self._too_large()
            raise _Refused
        if self.trusted is not None and self.client and self.client[0] in self.trusted:
            self._count_forwarded()
        super().on_headers_complete()

    def _count_forwarded(self) -> None:
        """Count a proxy's connection for the client its request is for."""
        assert self.trusted is not None
        forwarded = b",".join(v for n, v in self.headers if n == b"x-forwarded-for")
        client = self.trusted.get_trusted_client_address(forwarded.decode("latin-1"))[0]
        address = client or (self.client[0] if self.client else "")
        if address == self._held:
            return
        self._uncount()
        if not self.counts.acquire(address):
            message = (
                f"{address} has {self.counts.limit} connections open to this gateway process "
                "(WALRUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT)"
            )
            self._refused = error_bytes(429, "too_many_connections", message)
            raise _Refused
        self._held = address

    def on_message_complete(self) -> None:
        """The body is read: the next bytes are the next request's head."""
        super().on_message_complete()
        self._in_head = True

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to the WebSocket protocol; it stays counted until it closes."""
        self._disarm()
        held, self._held = self._held, None
        super().handle_websocket_upgrade()
        if held is None:
            return
        protocol = self.transport.get_protocol()
        lost = protocol.connection_lost
        counts = self.counts

        def connection_lost(exc: Exception | None) -> None:
            counts.release(held)
            lost(exc)

        # The transport calls the protocol's connection_lost: wrapped on this instance only.
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]


def trusted_proxies(settings: Settings) -> list[str]:
    """``WALRUS_GATEWAY_TRUSTED_PROXIES`` as a list (empty: trust no ``X-Forwarded-For``)."""
    return [p.strip() for p in settings.gateway_trusted_proxies.split(",") if p.strip()]


def bounded_protocol(settings: Settings) -> type[BoundedHttpTools]:
    """The protocol class with this process's bounds (and its own connection counts)."""
    proxies = trusted_proxies(settings)
    return type(
        "GatewayHttpProtocol",
        (BoundedHttpTools,),
        {
            "idle_timeout": settings.gateway_idle_timeout,
            "header_timeout": settings.gateway_header_timeout,
            "max_head": settings.gateway_max_header_bytes,
            "counts": AddressCounts(settings.gateway_max_connections_per_client),
            "trusted": _TrustedHosts(proxies) if proxies else None,
        },
    )


def untrack_async_generators() -> None:
    """Keep the running loop from tracking every async generator it starts.

    asyncio's loop adds each async generator, as it first runs, to a weak set, which only
    ``shutdown_asyncgens`` reads when the loop is closed, to close the ones still suspended:
    ~0.1 KB of weak reference a generator, and an open stream runs four or five of them,
    nested (~0.5 KB a stream, docs/benchmarks.md, issue 25, fifth round). The gateway's streams
    are closed by their own ``finally`` (and the server ends every stream before it stops), so
    its loop does without that set. A generator dropped unfinished is still closed on the loop,
    as asyncio closes it (the finalizer hook stays). Called on the loop's thread, while it runs.
    """
    loop = asyncio.get_running_loop()

    def finalize(agen: AsyncGenerator[Any, Any]) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.create_task, agen.aclose())

    sys.set_asyncgen_hooks(firstiter=None, finalizer=finalize)


class _Server(uvicorn.Server):
    """uvicorn's server, ending the app's open streams first when it stops.

    Without it a stream never ends by itself: uvicorn waits ``timeout_graceful_shutdown`` for
    its connection, then cancels the task, and the client sees the connection cut with no
    error frame (and the log a ``CancelledError``). Here each stream ends with its face's
    ``unavailable`` error, which says to resume from the last event id, and its connection
    closes at once.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Untrack async generators (:func:`untrack_async_generators`)."""
        untrack_async_generators()
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        hub = getattr(getattr(app, "state", None), "hub", None)
        if hub is not None:
            hub.end_streams("the gateway is shutting down")
            # Each stream writes its error while its connection is open (a WebSocket is then
            # closed with 1012, service restart).
            await hub.streams_ended(STREAMS_END_WAIT)
        await super().shutdown(sockets)


def serve(app: Any, settings: Settings) -> None:
    """Serve ``app`` with uvicorn and the bounded protocol until stopped."""
    proxies = trusted_proxies(settings)
    config = uvicorn.Config(
        app, host=settings.gateway_host, port=settings.gateway_port, log_config=None,
        http=bounded_protocol(settings),
        timeout_graceful_shutdown=3,
        # Longer than clients keep an idle pooled connection: see settings.GATEWAY_KEEP_ALIVE.
        timeout_keep_alive=settings.gateway_keep_alive,
        # A frame over the body limit closes the socket with 1009 before the app sees it.
        ws_max_size=settings.max_body_bytes,
        # X-Forwarded-For is believed from the configured proxies only (uvicorn's default
        # trusts loopback, so any local program could claim any address).
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies,
    )  # fmt: skip
    server = _Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run does: the port was taken, or the app failed
