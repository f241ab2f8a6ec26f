"""Walrus history as LangChain-style message dicts, and the text of a run's ``input``.

Message ids are derived, never stored, so a message keeps its id across reads and the ids a
stream announces match the ones ``values`` and the thread's state show: the user message of run
R is ``human-R`` (a steering message ``human-R-<n>``), the assistant message of step n of R is
``ai-R-<n>`` (a step commits at most one), a tool result ``tool-<call id>``.
"""

from __future__ import annotations

import json
from typing import Any

from walrus_tasks.errors import InvalidInput


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


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content array."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p if isinstance(p, str) else str(p.get("text", ""))
            for p in content
            if isinstance(p, str) or (isinstance(p, dict) and p.get("type") == "text")
        ]
        return "\n".join(parts)
    raise InvalidInput("input.messages: content must be a string or a list of parts")


def input_text(data: Any) -> str:
    """The message a run's ``input`` sends: its last human (``user``) message's text.

    ``{"messages": [...]}`` with LangChain (``type``) or OpenAI (``role``) messages, or a
    single message dict, or a string.
    """
    if isinstance(data, str):
        text = data
    elif isinstance(data, dict):
        messages = data.get("messages", [data] if "content" in data else [])
        if isinstance(messages, dict):
            messages = [messages]
        humans = [
            m
            for m in messages
            if isinstance(m, dict) and (m.get("type") or m.get("role")) in ("human", "user")
        ]
        if not humans:
            raise InvalidInput("input.messages: no human message to send")
        text = _text(humans[-1].get("content"))
    else:
        raise InvalidInput("input: expected {'messages': [...]}")
    if not text.strip():
        raise InvalidInput("input: the message has no text")
    return text


def resume_text(value: Any) -> str:
    """The reply a ``command.resume`` value sends: a string as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
