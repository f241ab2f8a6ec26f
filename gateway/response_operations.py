"""The Responses face's operations: its response records, and the walrus runs behind them.

A response is a view of one walrus run from a point of the run's event stream on:
``resp_<run_id>`` from the run's start, and ``resp_<run_id>_<n>`` (n = 1, 2, …) from where the
response before it stopped at client function calls (the same run went on once the client
answered them). Its record (``keys.response``) holds what the request asked, the conversation
and that starting point; everything else (status, output, usage) is read from the run's events,
and kept in the record as the final object once the response has ended (a ``store: false``
response's record is deleted then instead). The face renders these in OpenAI's shapes
(``gateway/responses/``) and touches no key itself; the operations every face shares are in
:mod:`gateway.operations`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import redis

from walrus_tasks import keys
from walrus_tasks.errors import Conflict, NotFound
from walrus_tasks.run_stream import parse
from walrus_tasks.tenancy import Caller, tenant_of

RESPONSE_ID_RE = re.compile(r"^resp_(?P<run_id>[0-9a-f]{32})(?:_(?P<n>[1-9][0-9]{0,5}))?$")
SENDER_PREFIX = "resp"
"""A new conversation's sender is ``resp-<uuid>`` (in the caller's tenant)."""


def response_id(run_id: str, n: int = 0) -> str:
    """The id of run ``run_id``'s ``n``-th response (0: the first)."""
    return f"resp_{run_id}_{n}" if n else f"resp_{run_id}"


def unknown(response_id: str) -> NotFound:
    """The 404 of a response that does not exist (or is another tenant's, or was deleted)."""
    return NotFound(f"unknown response {response_id!r}")


@dataclass(frozen=True, slots=True)
class ResponseView:
    """One response's record, typed (slotted: a stream's translation keeps one)."""

    id: str
    run_id: str
    agent: str
    sender: str
    """The conversation's sender as the state layer knows it (``<tenant>/…`` in a tenant)."""
    created_at: int
    n: int = 0
    after: str = "0-0"
    """The run event entry id the response starts after."""
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    previous_response_id: str | None = None
    conversation: str | None = None
    store: bool = True
    background: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    input: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    """The response object once it has ended."""

    @property
    def tag(self) -> str:
        """What its item ids carry: the response id without ``resp_``."""
        return self.id.removeprefix("resp_")

    def fields(self) -> dict[str, str]:
        """The record's hash fields (``final`` is written apart, by :func:`finish`)."""
        return {
            "id": self.id, "run_id": self.run_id, "agent": self.agent, "sender": self.sender,
            "created_at": str(self.created_at), "n": str(self.n), "after": self.after,
            "instructions": json.dumps(self.instructions), "metadata": json.dumps(self.metadata),
            "previous_response_id": self.previous_response_id or "",
            "conversation": self.conversation or "", "store": "1" if self.store else "",
            "background": "1" if self.background else "", "tools": json.dumps(self.tools),
            "input": json.dumps(self.input),
        }  # fmt: skip

    @classmethod
    def of(cls, h: dict[str, str]) -> ResponseView:
        """The view of a record's hash."""
        return cls(
            id=h["id"], run_id=h["run_id"], agent=h["agent"], sender=h["sender"],
            created_at=int(h["created_at"]), n=int(h["n"]), after=h["after"],
            instructions=json.loads(h["instructions"]), metadata=json.loads(h["metadata"]),
            previous_response_id=h["previous_response_id"] or None,
            conversation=h["conversation"] or None, store=bool(h["store"]),
            background=bool(h["background"]), tools=json.loads(h["tools"]),
            input=json.loads(h["input"]), final=json.loads(h["final"]) if h.get("final") else None,
        )  # fmt: skip


def get_response(r: redis.Redis, response_id: str, caller: Caller) -> ResponseView:
    """The record of ``response_id``; NotFound also for another tenant's (and a malformed id)."""
    if not RESPONSE_ID_RE.fullmatch(response_id):
        raise unknown(response_id)
    h: dict[str, str] = r.hgetall(keys.response(response_id))  # type: ignore[assignment]
    if not h.get("run_id") or not caller.sees(h["sender"]):
        raise unknown(response_id)
    return ResponseView.of(h)


def store_response(r: redis.Redis, view: ResponseView, ttl: int) -> None:
    """Record a new response (kept ``ttl`` seconds); Conflict if its id is taken.

    Only a continuation's id can be: two requests answering the same function calls.
    """
    key = keys.response(view.id)
    if not r.hsetnx(key, "run_id", view.run_id):
        raise Conflict(f"response {view.previous_response_id} was already continued ({view.id})")
    pipe = r.pipeline()
    pipe.hset(key, mapping=view.fields())  # type: ignore[arg-type]
    pipe.expire(key, ttl)
    pipe.execute()


def finish(r: redis.Redis, view: ResponseView, final: dict[str, Any], ttl: int) -> None:
    """The response has ended: keep its final object ``ttl`` seconds more, or (store false) not.

    Every reader that sees the end calls it, with the same object; the first one kept stays
    (a reader that came after the run's events expired has nothing better to say).
    """
    key = keys.response(view.id)
    if not view.store:
        r.delete(key)
        return
    if r.exists(key) and r.hsetnx(key, "final", json.dumps(final)):  # not made anew if deleted
        r.expire(key, ttl)


def delete_response(r: redis.Redis, response_id: str, caller: Caller) -> None:
    """Delete a response's record (NotFound if there is none the caller sees); the run stays."""
    get_response(r, response_id, caller)
    r.delete(keys.response(response_id))


def events_after(r: redis.Redis, run_id: str, after: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's events after entry ``after`` that are there now: ``(entry id, event)``."""
    entries: Any = r.xrange(keys.run_part(run_id, "events"), f"({after}", "+")
    return [parse(entry_id, fields) for entry_id, fields in entries]


def waiting_calls(r: redis.Redis, run_id: str) -> set[str]:
    """The ids of the run's tool calls parked waiting (for a reply, a child, a client)."""
    return set(r.hkeys(keys.run_part(run_id, "waits")))  # type: ignore[arg-type]


def run_tenant(view: ResponseView) -> str | None:
    """The tenant of the response's conversation (None: the default)."""
    return tenant_of(view.sender)
