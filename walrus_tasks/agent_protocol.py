"""The Agent Protocol's (LangGraph's) view of walrus runs and messages.

Shared by the gateway's Agent Protocol routes (``gateway.agent_protocol``) and the worker's
webhooks (``walrus_tasks.webhooks``), which POST the same run objects.

Message ids are derived, never stored, so a message keeps its id across reads and the ids a
stream announces match the ones ``values`` and the thread's state show: the user message of run
R is ``human-R`` (a steering message ``human-R-<n>``), the assistant message of step n of R is
``ai-R-<n>`` (a step commits at most one), a tool result ``tool-<call id>``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from walrus_tasks.json_depth import loads_stored
from walrus_tasks.tenancy import bare

STATUS = {
    "queued": "pending",
    "running": "running",
    "waiting": "running",
    "succeeded": "success",
    "failed": "error",
    "cancelled": "interrupted",
}
"""Walrus run status -> Agent Protocol run status."""

THREAD_SENDER = "thread:"
"""A thread's conversation is ``(agent, "thread:<thread id>")`` (of its tenant: ``tenancy``)."""


def iso(ms: float | str | None) -> str | None:
    """An ISO 8601 time of epoch milliseconds."""
    if ms in (None, ""):
        return None
    return datetime.fromtimestamp(int(float(ms)) / 1000, UTC).isoformat()


def thread_of(sender: str) -> str | None:
    """The thread id of a thread's (scoped) sender, or None."""
    sender = bare(sender)  # a named tenant's thread: ``<tenant>/thread:<id>``
    return sender[len(THREAD_SENDER) :] if sender.startswith(THREAD_SENDER) else None


def run_object(run_id: str, record: dict[str, str], ap: dict[str, str]) -> dict[str, Any]:
    """A LangGraph run of the walrus run ``record`` and what the Agent Protocol recorded of it.

    ``ap`` may be empty (a run a cron fired): thread and assistant then come from the record.
    """
    kwargs: dict[str, Any] = {"stream_mode": json.loads(ap.get("stream_mode") or "[]")}
    if record.get("webhook"):
        kwargs["webhook"] = record["webhook"]

    return {
        "run_id": run_id,
        "thread_id": ap.get("thread_id") or thread_of(record.get("sender", "")),
        "assistant_id": ap.get("assistant_id") or record.get("agent"),
        "created_at": iso(record.get("created_at")),
        "updated_at": iso(
            record.get("finished_at") or record.get("started_at") or record.get("created_at")
        ),
        "status": STATUS.get(record.get("status", ""), "pending"),
        "metadata": loads_stored(ap.get("metadata") or "{}"),
        "multitask_strategy": ap.get("multitask_strategy", "reject"),
        "kwargs": kwargs,
    }


# --- walrus history as LangChain-style message dicts -------------------------------------------


def ai_id(run_id: str, step: int) -> str:
    """The id of the assistant message of step ``step`` of run ``run_id``."""
    return f"ai-{run_id}-{step}"


def _base(kind: str, content: Any, mid: str) -> dict[str, Any]:
    return {
        "type": kind,
        "content": content,
        "id": mid,
        "name": None,
        "additional_kwargs": {},
        "response_metadata": {},
    }


def tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Walrus tool calls ``{id, name, arguments}`` as LangChain ``tool_calls``."""
    return [
        {"id": c.get("id"), "name": c.get("name"), "args": c.get("arguments") or {},
         "type": "tool_call"}
        for c in calls
    ]  # fmt: skip


def ai_message(content: str, mid: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An ``ai`` message."""
    message = _base("ai", content, mid)
    message.update(tool_calls=tool_calls(calls), invalid_tool_calls=[], usage_metadata=None)
    return message


def tool_message(content: str, call_id: str, name: str, is_error: bool) -> dict[str, Any]:
    """A ``tool`` message answering call ``call_id``."""
    message = _base("tool", content, f"tool-{call_id}")
    message.update(
        tool_call_id=call_id, name=name, status="error" if is_error else "success", artifact=None
    )
    return message


def to_langchain(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation's walrus messages as LangChain message dicts, in order."""
    out: list[dict[str, Any]] = []
    steps: dict[str, int] = {}
    steered: dict[str, int] = {}
    for i, m in enumerate(history):
        run = str(m.get("run_id") or f"m{i}")
        role, content = m.get("role"), m.get("content") or ""
        if role == "assistant":
            step = steps.get(run, 0)
            steps[run] = step + 1
            out.append(ai_message(str(content), ai_id(run, step), m.get("tool_calls") or []))
        elif role == "tool":
            call_id = str(m.get("tool_call_id") or f"m{i}")
            out.append(
                tool_message(str(content), call_id, str(m.get("name")), bool(m.get("is_error")))
            )
        elif m.get("steered"):
            n = steered.get(run, 0) + 1
            steered[run] = n
            out.append(_base("human", content, f"human-{run}-{n}"))
        else:
            out.append(_base("human", content, f"human-{run}" if m.get("run_id") else run))
    return out
