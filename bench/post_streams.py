"""``python -m bench.post_streams``: what an open stream costs on the faces whose stream is the
answer to the ``POST`` that creates its run (one client per run).

The fan-out (``python -m bench --only fanout``) measures the faces a client can follow a run
on that exists already. These are the others: OpenAI chat completions (``"stream": true``),
Anthropic Messages, the native message with ``"stream": true`` and a Responses create with
``"stream": true``. For each face in turn, a fresh gateway with no worker (so every run stays
queued and every stream stays open and idle) takes ``--streams`` clients, each POSTing one
message in a conversation of its own over a raw connection (``--concurrency`` opening at
once); once every one has its ``200`` the gateway's RSS growth (``VmRSS``) is divided by the
streams. What opening them costs (each ``POST`` submits a run) is in the figure too, as far as
the gateway's heap keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import LIFTED, environment
from bench.sse_clients import Request, encode
from bench.streams import heap_snapshot, rss_kb
from walrus_tasks import heap

AGENT = "idle"
FACES = ("openai", "anthropic", "native", "responses", "mcp")
JSON = (("Content-Type", "application/json"),)
MCP_VERSION = "2026-07-28"
"""The MCP protocol a ``tools/call`` speaks: the ``mcp`` package's default, no session."""
SETTLE_S = 2.0
"""Seconds after the last ``200`` before RSS is read (the last requests' work done)."""


def headers(face: str) -> tuple[tuple[str, str], ...]:
    """The request headers of ``face`` besides ``Host``, ``Accept`` and ``Content-Length``."""
    if face == "mcp":  # as the mcp package's client sends a tools/call
        return (*JSON, ("MCP-Protocol-Version", MCP_VERSION), ("MCP-Method", "tools/call"),
                ("MCP-Name", AGENT), ("Accept", "application/json, text/event-stream"))  # fmt: skip
    return JSON


def request(face: str, sender: str) -> tuple[str, bytes]:
    """``(path, JSON body)`` of one streamed message of ``sender`` on ``face``."""
    message = [{"role": "user", "content": "go"}]
    body: dict[str, Any]
    if face == "openai":
        path = "/v1/chat/completions"
        body = {"model": AGENT, "user": sender, "stream": True, "messages": message}
    elif face == "anthropic":
        path = "/v1/messages"
        body = {"model": AGENT, "max_tokens": 64, "stream": True, "messages": message,
                "metadata": {"user_id": sender}}  # fmt: skip
    elif face == "native":
        path = f"/v1/agents/{AGENT}/messages"
        body = {"content": "go", "sender": sender, "stream": True}
    elif face == "responses":
        path = "/v1/responses"
        body = {"model": AGENT, "input": "go", "stream": True, "conversation": sender}
    elif face == "mcp":  # progress asked: the call's stream opens at once, with "still running"
        path = "/mcp"
        meta = {"progressToken": sender, "io.modelcontextprotocol/protocolVersion": MCP_VERSION,
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}}  # fmt: skip
        params = {"name": AGENT, "arguments": {"message": "go"}, "_meta": meta}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    else:
        raise ValueError(f"unknown face {face!r}")
    return path, json.dumps(body).encode()


async def _open(port: int, face: str, sender: str) -> tuple[str, asyncio.StreamWriter]:
    """Send the ``POST``; its status code (``"0"``: none) and the open connection."""
    path, body = request(face, sender)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode("127.0.0.1", port, Request("POST", path, headers(face), body)))
    await writer.drain()
    line = await reader.readline()
    return (line.split()[1].decode() if len(line.split()) > 1 else "0"), writer


async def _measure(
    port: int, pid: int, face: str, n: int, concurrency: int, heap_dir: Path | None
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    stamp = time.time_ns()

    async def one(i: int) -> tuple[str, asyncio.StreamWriter]:
        async with gate:
            return await _open(port, face, f"post-{i}-{stamp}")

    before = rss_kb(pid)
    if heap_dir:
        os.kill(pid, heap.SIGNAL)  # start tracing: what the streams allocate
    started = time.monotonic()
    opened = await asyncio.gather(*(one(i) for i in range(n)))
    open_s = time.monotonic() - started
    await asyncio.sleep(SETTLE_S)
    after = rss_kb(pid)
    heap_file = await asyncio.to_thread(heap_snapshot, pid, heap_dir) if heap_dir else None
    for _, writer in opened:
        writer.close()
    statuses = [status for status, _ in opened]
    return {
        "face": face,
        "streams": n,
        "answered_200": statuses.count("200"),
        "other_statuses": sorted(set(statuses) - {"200"}),
        "open_s": round(open_s, 2),
        "rss_before_kb": before,
        "rss_open_kb": after,
        "rss_growth_per_stream_kb": round((after - before) / n, 2),
        "heap": heap.top(heap_file, n) if heap_file else None,
    }


def measure(face: str, n: int, concurrency: int, heap_dir: Path | None = None) -> dict[str, Any]:
    """One face on a gateway of its own (its heap grown by no other face).

    With ``heap_dir`` the gateway traces its heap while the streams open, and the result's
    ``heap`` sums up what they hold (``walrus_tasks.heap``).
    """
    agents = {AGENT: 'model = "mock"\n[mock]\nreply = "hi"\n'}
    extra = {**LIFTED, **({heap.ENV: str(heap_dir.resolve())} if heap_dir else {})}
    with environment(0, 1, agents=agents, env_extra=extra, name="post-streams") as env:
        port = int(env.gateway_url.rsplit(":", 1)[1])
        pid = env.cluster.procs["gateway"].pid
        return asyncio.run(_measure(port, pid, face, n, concurrency, heap_dir))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.post_streams", description=__doc__)
    p.add_argument("--streams", type=int, default=1000, help="open streams per face (1000)")
    p.add_argument("--faces", default=",".join(FACES), help=f"comma-separated, of {FACES}")
    p.add_argument("--concurrency", type=int, default=200, help="POSTs opening at once (200)")
    p.add_argument(
        "--heap", metavar="DIR", type=Path,
        help="a tracemalloc snapshot of each face's gateway while its streams are open, written "
        "to DIR and summed up per stream (walrus_tasks.heap; slows the opening down)",
    )  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    faces = [f for f in args.faces.split(",") if f]
    if unknown := set(faces) - set(FACES):
        print(f"unknown faces {sorted(unknown)}: pick from {', '.join(FACES)}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # every stream is a socket here and in the gateway (which raises its own)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    for face in faces:
        print(f"{face}: {args.streams} streams ...", file=sys.stderr, flush=True)
        results.append(measure(face, args.streams, args.concurrency, args.heap))
        print(f"  {results[-1]['rss_growth_per_stream_kb']} KB a stream", file=sys.stderr)
        if h := results[-1]["heap"]:
            lines = [f"    {row['kb_per']:7.3f}  {row['where']}" for row in h["by_line"][:12]]
            print(f"  heap traced: {h['total_kb_per']} KB a stream; largest lines:", *lines,
                  sep="\n", file=sys.stderr)  # fmt: skip
    print(json.dumps(results, indent=2))
    return 0 if all(r["answered_200"] == r["streams"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
