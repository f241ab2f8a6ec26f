"""The text of a run's ``input`` and of a ``command.resume``; LangChain messages re-exported.

The LangChain-style views of walrus history are in :mod:`walrus_tasks.agent_protocol` (the
worker's webhooks send them too).
"""

from __future__ import annotations

import json
from typing import Any

from walrus_tasks.agent_protocol import ai_id as ai_id
from walrus_tasks.agent_protocol import ai_message as ai_message
from walrus_tasks.agent_protocol import to_langchain as to_langchain
from walrus_tasks.agent_protocol import tool_message as tool_message
from walrus_tasks.errors import InvalidInput


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
