"""A request's ``input`` and ``tools``, read into what walrus sends: checked before anything is.

``input`` is a string (one user message) or a list of items: messages (``role`` user, system,
developer or assistant; ``content`` a string or ``input_text``/``output_text`` parts) and
``function_call_output`` items (the client's answers to the function calls a response stopped
at). Anything else is a 400 that says what is supported, and nothing is stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gateway.oneshot import prior_history
from gateway.responses.models import BadRequest, FunctionTool, Unsupported
from walrus_tasks.errors import describe_invalid
from walrus_tasks.models import ClientTool

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")


@dataclass
class Input:
    """The items of a request's ``input``, normalised (each gets its id when it is stored)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    """As ``input_items`` lists them: ``message`` and ``function_call_output`` items."""
    messages: list[tuple[str, str]] = field(default_factory=list)
    """``(role, text)`` of every message, in order."""
    outputs: dict[str, str] = field(default_factory=dict)
    """``call_id -> output`` of the ``function_call_output`` items."""

    def last_user(self) -> tuple[int, str]:
        """``(index in messages, text)`` of the last user message, or BadRequest."""
        for i in range(len(self.messages) - 1, -1, -1):
            role, text = self.messages[i]
            if role == "user":
                if not text.strip():
                    raise BadRequest("input: the last user message has no text")
                if i != len(self.messages) - 1:
                    raise BadRequest("input: the last message must be a user message")
                return i, text
        raise BadRequest("input: no message with role 'user'")

    def prior(self, instructions: str | None) -> list[dict[str, Any]]:
        """The history a new conversation starts with: instructions, then the earlier messages.

        System and developer messages (and ``instructions``) enter as user messages marked
        ``(system)``, as every stateless face's do (:func:`gateway.oneshot.prior_history`).
        """
        last, _ = self.last_user()
        system = [("system", instructions)] if instructions else []
        return prior_history([*system, *self.messages[:last]])


def _text(where: str, content: Any) -> str:
    """A message's text: a string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content: must be a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise BadRequest(
                f"{where}.content[{j}]: part type {kind!r} is not supported "
                "(text parts only: input_text, output_text)"
            )
        texts.append(part["text"])
    return "\n".join(texts)


def _output(where: str, output: Any) -> str:
    """A function call's output: a string, or its text parts joined (other JSON as JSON)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return _text(where, output)
    return json.dumps(output, ensure_ascii=False)


def read_input(raw: str | list[dict[str, Any]]) -> Input:
    """``raw`` (the request's ``input``) normalised, or BadRequest saying what is wrong."""
    got = Input()
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not raw:
        raise BadRequest("input: must not be empty")
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise BadRequest(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
            text = _text(where, item.get("content"))
            part = "output_text" if role == "assistant" else "input_text"
            content: dict[str, Any] = {"type": part, "text": text}
            if role == "assistant":
                content["annotations"] = []
            got.messages.append((role, text))
            got.items.append(
                {"type": "message", "role": role, "content": [content], "status": "completed"}
            )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise BadRequest(f"{where}.call_id: the id of the function call it answers")
            if call_id in got.outputs:
                raise BadRequest(f"{where}: a second output for call {call_id!r}")
            output = _output(f"{where}.output", item.get("output"))
            got.outputs[call_id] = output
            got.items.append(
                {"type": "function_call_output", "call_id": call_id, "output": output,
                 "status": "completed"}
            )  # fmt: skip
        else:
            raise BadRequest(
                f"{where}: item type {kind!r} is not supported (supported: message, "
                "function_call_output)"
            )
    return got


def client_tools(tools: list[FunctionTool]) -> list[ClientTool]:
    """``tools`` as the engine's client tools (``SendMessage.client_tools``), or BadRequest."""
    out = []
    for i, tool in enumerate(tools):
        asked = tool.model_dump(include={"name", "description", "parameters"}, exclude_none=True)
        try:
            out.append(ClientTool.model_validate(asked))
        except ValidationError as e:
            raise BadRequest(f"tools[{i}]: {describe_invalid(e.errors(), 'tool')}") from None
    return out


def read_tools(raw: list[dict[str, Any]] | None) -> list[FunctionTool]:
    """The client function tools of ``raw``; other tool types are a 400 (the agent has its own)."""
    tools = []
    for i, tool in enumerate(raw or []):
        kind = tool.get("type")
        if kind != "function":
            raise Unsupported(
                f"tools[{i}]: type {kind!r} is not supported: only client function tools "
                "(type 'function'); the agent's own tools run on the server"
            )
        try:
            tools.append(FunctionTool.model_validate(tool))
        except ValidationError as e:
            raise BadRequest(f"tools[{i}]: {describe_invalid(e.errors(), 'tool')}") from None
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise BadRequest("tools: two function tools have the same name")
    client_tools(tools)  # what the engine would refuse, refused here as a 400
    return tools
