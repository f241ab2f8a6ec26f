"""Processes of plain asyncio SSE clients, for the fan-out figure (:func:`bench.streams.fanout`).

One client is one TCP connection: a bare HTTP/1.1 ``GET`` (no keep-alive, no TLS), the status
line and headers, then the chunked body, in which it counts the ``event:`` lines. It costs a
fraction of an httpx stream's CPU, so at 10 000 streams the figure measures the gateway, not
the client; the streams are still spread over several processes (each reports its CPU, so the
report shows whether a client process was busy all the time).

A process opens its streams at a bounded rate from a start time the parent gives (the
monotonic clock is shared by the processes of one Linux machine) and sends back one
:data:`Outcome` per stream.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

Outcome = tuple[int, float, float, int, str, str]
"""Per stream: HTTP status (0: none), headers at, ended at (monotonic s; 0: never), events,
type of the last event, error (empty if none)."""


async def follow(host: str, port: int, path: str, answered: Callable[[], None]) -> Outcome:
    """Read one SSE stream to its end; count its events (``answered()`` once the headers or
    an error came)."""
    status, headers_at, events, last, error = 0, 0.0, 0, b"", ""
    told = False
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        headers_at = time.monotonic()
        told = True
        answered()
        status = int(head.split(b" ", 2)[1])
        chunked = b"transfer-encoding: chunked" in head.lower()
        tail = b""
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    break
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            for line in lines:
                if line.startswith(b"event: "):
                    events += 1
                    last = line[7:]
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        error = type(e).__name__
    finally:
        if writer is not None:
            writer.close()
        if not told:
            answered()
    return status, headers_at, time.monotonic(), events, last.decode(), error


async def _follow_all(
    conn: Connection, host: str, port: int, paths: list[str], rate: float, start_at: float
) -> list[Outcome]:
    waiting = len(paths)

    def answered() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            conn.send("connected")  # every stream has its headers (or failed)

    tasks = []
    for i, path in enumerate(paths):
        delay = start_at + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(follow(host, port, path, answered)))
    return list(await asyncio.gather(*tasks))


def serve(conn: Connection) -> None:
    """A client process: say ready, take ``(host, port, paths, rate, start_at)``, follow the
    paths, say when all are connected, send back the outcomes (in the order of ``paths``) and
    this process's CPU seconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conn.send("ready")
    host, port, paths, rate, start_at = conn.recv()
    outcomes = asyncio.run(_follow_all(conn, host, port, paths, rate, start_at))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send((outcomes, usage.ru_utime + usage.ru_stime))
    conn.close()
