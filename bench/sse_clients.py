"""Processes of plain asyncio SSE clients, for the fan-out figure (:func:`bench.streams.fanout`).

One client is one TCP connection: a bare HTTP/1.1 request (no keep-alive, no TLS; a ``GET``,
or a ``POST`` with a body for a face whose subscription is one, A2A's JSON-RPC
``SubscribeToTask``), the status line and headers, then the chunked body, in which it counts
the SSE events: each block of lines with a ``data:`` line, named by its ``event:`` line
(``message`` without one), except OpenAI's ``data: [DONE]`` end marker, which it notes
instead. It keeps the type and the data of the last event. It costs a fraction of an httpx
stream's CPU, so at 10 000 streams the figure measures the gateway, not the client; the
streams are still spread over several processes (each reports its CPU, so the report shows
whether a client process was busy all the time).

A process opens its streams at a bounded rate from a start time the parent gives (the
monotonic clock is shared by the processes of one Linux machine) and sends back one
:class:`Outcome` per stream.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import NamedTuple


class Request(NamedTuple):
    """What one client sends: ``method path``, its own headers, and a body (``POST``)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class Outcome(NamedTuple):
    """How one stream went (times on the monotonic clock, in seconds)."""

    status: int
    """HTTP status (0: none)."""
    headers_at: float
    ended_at: float
    """0: never."""
    events: int
    last: str
    """Type of the last event (its ``event:`` name, ``message`` without one)."""
    error: str
    """Empty if none."""
    data: str = ""
    """The last event's data."""
    done: bool = False
    """The stream carried OpenAI's ``data: [DONE]``."""


def encode(host: str, port: int, request: Request) -> bytes:
    """The bytes of ``request`` (``Connection: close``; ``Accept: text/event-stream`` unless
    its headers have an ``Accept`` of their own)."""
    accept = (
        []
        if any(k.lower() == "accept" for k, _ in request.headers)
        else ["Accept: text/event-stream"]
    )
    head = [
        f"{request.method} {request.path} HTTP/1.1",
        f"Host: {host}:{port}",
        *accept,
        "Connection: close",
        *(f"{k}: {v}" for k, v in request.headers),
    ]
    if request.body or request.method != "GET":
        head.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + request.body


async def follow(host: str, port: int, request: Request, answered: Callable[[], None]) -> Outcome:
    """Read one SSE stream to its end; count its events (``answered()`` once the headers or
    an error came)."""
    status, headers_at, events, last, data, done, error = 0, 0.0, 0, b"", b"", False, ""
    told = False
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(encode(host, port, request))
        head = await reader.readuntil(b"\r\n\r\n")
        headers_at = time.monotonic()
        told = True
        answered()
        status = int(head.split(b" ", 2)[1])
        chunked = b"transfer-encoding: chunked" in head.lower()
        tail = b""
        name: bytes | None = None  # of the event being read
        value: bytes | None = None
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    break
                body = (await reader.readexactly(size + 2))[:-2]
            else:
                body = await reader.read(65536)
                if not body:
                    break
            lines = (tail + body).split(b"\n")
            tail = lines.pop()
            for line in lines:
                if line.endswith(b"\r"):  # sse-starlette (A2A) ends its lines with CRLF
                    line = line[:-1]
                if not line:  # the end of an event
                    if value is not None:
                        if value == b"[DONE]" and name is None:
                            done = True
                        else:
                            events += 1
                            last, data = name or b"message", value
                    name = value = None
                elif line.startswith(b"event:"):
                    name = line[6:].removeprefix(b" ")
                elif line.startswith(b"data:"):
                    more = line[5:].removeprefix(b" ")
                    value = more if value is None else value + b"\n" + more
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        error = type(e).__name__
    finally:
        if writer is not None:
            writer.close()
        if not told:
            answered()
    return Outcome(
        status, headers_at, time.monotonic(), events, last.decode(), error, data.decode(), done
    )


async def _follow_all(
    conn: Connection, host: str, port: int, requests: list[Request], rate: float, start_at: float
) -> list[Outcome]:
    waiting = len(requests)

    def answered() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            conn.send("connected")  # every stream has its headers (or failed)

    tasks = []
    for i, request in enumerate(requests):
        delay = start_at + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(follow(host, port, request, answered)))
    return list(await asyncio.gather(*tasks))


def serve(conn: Connection) -> None:
    """A client process: say ready, take ``(host, port, requests, rate, start_at)``, follow
    the requests, say when all are connected, send back the outcomes (in the order of
    ``requests``) and this process's CPU seconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conn.send("ready")
    host, port, requests, rate, start_at = conn.recv()
    outcomes = asyncio.run(_follow_all(conn, host, port, requests, rate, start_at))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send((outcomes, usage.ru_utime + usage.ru_stime))
    conn.close()
