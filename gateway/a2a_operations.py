"""The A2A face's reads of a run: a task is a walrus run, seen by its caller.

What :mod:`gateway.a2a` reads beyond :mod:`gateway.operations`: a run's record, its events so
far and the question it waits on; an A2A task's state, artifact and history are built from
these. Typed and raising :mod:`walrus_tasks.errors`; the face renders them in A2A's shapes and
touches no key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from gateway.run_interrupts import waiting_calls
from walrus_tasks import keys, waits
from walrus_tasks.errors import NotFound
from walrus_tasks.models import RunInfo, RunStatus
from walrus_tasks.names import RUN_ID_RE
from walrus_tasks.run_stream import parse
from walrus_tasks.tenancy import Caller

Event = tuple[str, dict[str, Any]]
"""One run event with its stream entry id."""

ANSWERED_KINDS = frozenset(waits.REPLY_KINDS.split(","))
"""The waits a client's reply ends: a question, an approval, a client tool call."""


@dataclass(frozen=True)
class TaskRecord:
    """What an A2A task is made of: the run, its message, its events so far, its question."""

    run: RunInfo
    content: str
    """The message the run answers (the task's first user message)."""
    events: list[Event]
    """The run's events so far, in order (empty when they were not asked for)."""
    question: Event | None
    """The ``ask_user`` event the run waits on for the client's answer, if any."""


def task_record(
    r: redis.Redis, run_id: str, agent: str, caller: Caller, events: bool = True
) -> TaskRecord:
    """Run ``run_id`` of ``agent`` as ``caller`` sees it, with its events if ``events``.

    NotFound for a malformed id, an unknown run, another agent's run and another tenant's run
    (a tenant token sees only its tenant's runs; an admin token every run). A waiting run's
    events are always read, since its question is one of them, and so are an ended run's,
    since its reply artifact is made of them (a blocking send whose run ended before its first
    read answered with a completed task and no artifact).
    """
    missing = NotFound(f"task {run_id!r} not found (of agent {agent!r}, for this caller)")
    if not RUN_ID_RE.fullmatch(run_id):
        raise missing
    found: list[Event] | None = None
    if events:
        # One snapshot: read apart, a run that ends between the two reads would show a status
        # before its end and events through it, and a subscription would go on after its
        # `end`, for nothing ever comes (finish.lua writes both in one step).
        pipe = r.pipeline(transaction=True)
        pipe.hgetall(keys.run(run_id))
        pipe.xrange(keys.run_part(run_id, "events"))
        record, entries = pipe.execute()
        found = _parsed(entries)
    else:
        record = r.hgetall(keys.run(run_id))
    if not record or record.get("agent") != agent or not caller.sees(record.get("sender", "")):
        raise missing
    run = RunInfo.from_hash(record)
    if found is None:
        read = run.status == RunStatus.waiting or run.status.terminal
        found = run_events(r, run_id) if read else []
    question = pending_question(r, run_id, found) if run.status == RunStatus.waiting else None
    return TaskRecord(run=run, content=record.get("content", ""), events=found, question=question)


def run_events(r: redis.Redis, run_id: str) -> list[Event]:
    """Every event of the run so far, in order (a read that does not wait)."""
    return _parsed(r.xrange(keys.run_part(run_id, "events")))


def _parsed(entries: Any) -> list[Event]:
    return [parse(entry_id, fields) for entry_id, fields in entries]


def pending_question(r: redis.Redis, run_id: str, events: list[Event]) -> Event | None:
    """The latest ``ask_user`` event of ``events`` whose call waits for the client's reply."""
    calls = waiting_calls(r, run_id, ANSWERED_KINDS)
    for entry_id, event in reversed(events):
        if event.get("type") == "ask_user" and event.get("call_id") in calls:
            return entry_id, event
    return None
