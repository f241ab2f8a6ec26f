"""What an Agent Protocol run waits on: its questions and approvals, as interrupts.

A run parked on a question (``ask_user``) or an approval has a wait of that kind for the call
(``walrus_tasks.waits``); the question itself is in the run's events. A thread's state and a
resume (``gateway.thread_state``, ``agent_protocol.run_start``), and the MCP and A2A faces'
pending questions, read them here: blocking (``pending_interrupts``) or from replies read
together on the event loop (``calls_waiting``, ``questions_of``, ``interrupts_of``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import redis

from walrus_tasks import keys

QUESTIONS_SCAN = 1000
"""How many of a run's latest events are searched for its questions (``ask_user``)."""
INTERRUPT_KINDS = ("ask", "approval")
"""The waits a client's answer ends, shown as interrupts."""


def _questions(r: redis.Redis, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's ``ask_user`` events ``(entry id, event)``, newest first (the latest scanned)."""
    return questions_of(r.xrevrange(keys.run_part(run_id, "events"), count=QUESTIONS_SCAN))


def questions_of(entries: Any) -> list[tuple[str, dict[str, Any]]]:
    """The ``ask_user`` events ``(entry id, event)`` of a run's stream ``entries`` (XREVRANGE)."""
    found = []
    for entry_id, fields in entries:
        event = json.loads(fields["data"])
        if event.get("type") == "ask_user":
            found.append((str(entry_id), event))
    return found


def last_question(r: redis.Redis, run_id: str) -> str:
    """The entry id of the run's latest ``ask_user`` ("0-0" if none): its rest streams after."""
    asked = _questions(r, run_id)
    return asked[0][0] if asked else "0-0"


def waiting_calls(r: redis.Redis, run_id: str, kinds: Collection[str]) -> set[str]:
    """The call ids run ``run_id`` is parked on, in waits of one of ``kinds`` (``waits.py``)."""
    return calls_waiting(r.hgetall(keys.run_part(run_id, "waits")), kinds)  # type: ignore[arg-type]


def calls_waiting(waits: dict[str, str], kinds: Collection[str]) -> set[str]:
    """The call ids of a run's ``waits`` hash in waits of one of ``kinds``."""
    return {c for c, w in waits.items() if json.loads(w).get("kind") in kinds}


def pending_interrupts(r: redis.Redis, run_id: str) -> list[dict[str, Any]]:
    """The questions and approvals run ``run_id`` waits on, as interrupts ``{value, id}``."""
    calls = waiting_calls(r, run_id, INTERRUPT_KINDS)
    if not calls:
        return []
    return interrupts_of(calls, _questions(r, run_id))


def interrupts_of(
    calls: set[str], questions: list[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The interrupts ``{value, id}`` of the waiting ``calls``, oldest first.

    ``questions``: the run's ``ask_user`` events, newest first (:func:`questions_of`).
    """
    out = []
    for _, event in questions:
        if event.get("call_id") in calls:
            calls.discard(event["call_id"])
            value = {k: v for k, v in event.items() if k not in ("type", "call_id")}
            out.append({"value": value, "id": event["call_id"]})
    return out[::-1]
