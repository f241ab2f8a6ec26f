"""The load: N conversations of M messages POSTed over HTTP, spread over the fault window.

A send is retried only when nothing can have been accepted: the connection was refused (or
never made), or the gateway answered 503. Anything else that is not a 202 (a 500, a reset or a
timeout after the request went out) is *ambiguous*: the message may or may not have been
accepted, and retrying it could run it twice. It is recorded as such and not retried; the check
then allows it in history at most once, in its place.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

RETRY_STATUS = 503
"""The one answer that says the message was not accepted and may be sent again."""


@dataclass
class Message:
    """One message of one conversation, and what became of its send."""

    conversation: int
    index: int
    content: str
    outcome: str = "unsent"
    """``accepted`` (202), ``ambiguous``, ``rejected`` (4xx, 5xx other than 503) or
    ``gave up`` (refused / 503 until the send timeout)."""
    run_id: str = ""
    detail: str = ""
    attempts: int = 0


@dataclass
class Load:
    """Every message, by conversation, in send order."""

    agent: str
    conversations: int
    messages: int
    sent: dict[str, list[Message]] = field(default_factory=dict)
    retries: Counter[str] = field(default_factory=Counter)
    """Why sends were retried (``refused``, ``503``…) -> count."""

    def __post_init__(self) -> None:
        for c in range(self.conversations):
            self.sent[sender(c)] = [Message(c, m, f"c{c}-m{m}") for m in range(self.messages)]

    def all(self) -> list[Message]:
        return [m for msgs in self.sent.values() for m in msgs]

    def counts(self) -> Counter[str]:
        return Counter(m.outcome for m in self.all())


@dataclass
class Pacer:
    """Holds sends back while ``limit`` accepted runs have not ended, so that tasks never wait
    in a queue longer than the dispatch grace, however slow the machine (a queue longer than
    that is mistaken for dead workers: runs fail after repeated recoveries). It waits at most
    ``max_wait`` per send, so stuck runs cannot stop the load. ``pending`` is kept up to date
    by the caller (from Redis); ``limit`` 0 means no limit."""

    limit: int = 0
    max_wait: float = 30.0
    pending: int = 0
    free: int = 0
    """Sends let through whatever ``pending`` says: set when Redis goes down, so that the
    outage meets some traffic (``pending`` cannot be read then) without a burst of every
    held send."""

    async def room(self) -> None:
        """Return once fewer than ``limit`` runs are pending, or after ``max_wait``."""
        t0 = time.monotonic()
        while self.limit and self.pending >= self.limit and time.monotonic() - t0 < self.max_wait:
            if self.free > 0:
                self.free -= 1
                return
            await asyncio.sleep(0.2)


def sender(conversation: int) -> str:
    """The sender of conversation ``c`` (a fresh Redis per run, so no prefix is needed)."""
    return f"c{conversation}"


async def send_all(
    gateway_url: str, load: Load, window: float, send_timeout: float, in_flight: int,
    pacer: Pacer | None = None,
) -> None:  # fmt: skip
    """Send every message, message m of conversation c at about ``window * (m*N + c) / (N*M)``
    seconds (later if ``pacer`` holds it back); a conversation's messages go in order, each once
    its predecessor's POST is done."""
    pacer = pacer or Pacer()
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    timeout = httpx.Timeout(10.0, connect=3.0)
    gate = asyncio.Semaphore(in_flight)
    t0 = time.monotonic()
    total = load.conversations * load.messages
    async with httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=timeout) as http:

        async def conversation(name: str, msgs: list[Message]) -> None:
            for msg in msgs:
                due = t0 + window * (msg.index * load.conversations + msg.conversation) / total
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await pacer.room()
                async with gate:
                    await _send(http, load, name, msg, send_timeout)

        await asyncio.gather(*(conversation(n, ms) for n, ms in load.sent.items()))


async def _send(
    http: httpx.AsyncClient, load: Load, name: str, msg: Message, send_timeout: float
) -> None:
    deadline = time.monotonic() + send_timeout
    body = {"content": msg.content, "sender": name}
    pause = 0.2
    while True:
        msg.attempts += 1
        retry = ""
        try:
            resp = await http.post(f"/v1/agents/{load.agent}/messages", json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            retry = "refused" if isinstance(e, httpx.ConnectError) else type(e).__name__
        except httpx.HTTPError as e:  # the request may have reached the gateway
            msg.outcome, msg.detail = "ambiguous", type(e).__name__
            return
        else:
            if resp.status_code == 202:
                msg.outcome, msg.run_id = "accepted", str(resp.json()["run_id"])
                return
            if resp.status_code != RETRY_STATUS:
                bad = resp.status_code >= 500
                msg.outcome = "ambiguous" if bad else "rejected"
                msg.detail = f"HTTP {resp.status_code}"
                return
            retry = "503"
        load.retries[retry] += 1
        if time.monotonic() + pause > deadline:
            msg.outcome, msg.detail = "gave up", retry
            return
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
