"""The wire shapes of Anthropic's Messages API that the face reads and writes, and its errors.

Our own pydantic models (the gateway does not import the ``anthropic`` package): a request
keeps only what walrus reads (unknown parameters are accepted and ignored), an answer has the
fields the official client parses.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from walrus_tasks.errors import InvalidInput

# --- errors -----------------------------------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
"""Anthropic's error ``type`` of a status (any other 4xx: ``invalid_request_error``, 5xx:
``api_error``)."""


def anthropic_error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """``{"type": "error", "error": {"type", "message", "code"}}``: Anthropic's, with our code.

    Invalid input (our 422) is Anthropic's ``400 invalid_request_error``, which the client
    raises as ``BadRequestError``.
    """
    status = 400 if status == 422 else status
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    body = {"type": kind, "message": message, "code": code, **extra}
    return JSONResponse({"type": "error", "error": body}, status_code=status)


# --- the request ------------------------------------------------------------------------------


class Block(BaseModel):
    """A content block of the request: only ``text`` blocks are read."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class InputMessage(BaseModel):
    """One entry of ``messages``."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[Block]


class Metadata(BaseModel):
    """``metadata``: ``user_id`` is accepted and ignored (it names no conversation)."""

    model_config = ConfigDict(extra="allow")

    user_id: str | None = None


class Thinking(BaseModel):
    """``thinking``: whether the answer shows the agent's thinking (its budget is not applied)."""

    model_config = ConfigDict(extra="allow")

    type: str
    display: str | None = None

    @property
    def shown(self) -> bool:
        """Thinking is shown unless disabled or ``display: "omitted"``."""
        return self.type != "disabled" and self.display != "omitted"


class MessagesRequest(BaseModel):
    """``POST /v1/messages``; unknown Anthropic parameters are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the agent")
    messages: list[InputMessage] = Field(
        min_length=1, description="the whole conversation, ending with the user's message"
    )
    max_tokens: int | None = Field(
        default=None, description="accepted, not applied: the agent's config bounds its output"
    )
    system: str | list[Block] | None = Field(
        default=None, description="enters as context, a user message marked `(system)`"
    )
    metadata: Metadata | None = None
    stream: bool = False
    thinking: Thinking | None = Field(
        default=None, description="shows the agent's thinking as `thinking` blocks"
    )
    tools: list[Any] | None = Field(default=None, description="refused: the agent's own tools run")


SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
"""Blocks of an earlier answer a client sends back, which are not context (thinking never
enters history)."""


def block_text(content: str | list[Block], where: str) -> str:
    """The text of a message's content: a string, or its text blocks joined by newlines."""
    if isinstance(content, str):
        return content
    texts = []
    for i, block in enumerate(content):
        if block.type == "text" and block.text is not None:
            texts.append(block.text)
        elif block.type not in SKIPPED_BLOCKS:
            raise InvalidInput(
                f"{where}[{i}]: {block.type!r} blocks are not supported: walrus agents take text"
            )
    return "\n".join(texts)


def turns(body: MessagesRequest) -> list[tuple[str, str]]:
    """The request's ``(role, text)`` turns: ``system`` first, the last the user's message.

    InvalidInput when the last message is not a user message with text (an assistant
    prefill is not supported) or a block is not text.
    """
    out: list[tuple[str, str]] = [
        (m.role, block_text(m.content, f"messages[{i}].content"))
        for i, m in enumerate(body.messages)
    ]
    role, text = out[-1]
    if role != "user":
        raise InvalidInput("messages: the last message must be the user's (no assistant prefill)")
    if not text.strip():
        raise InvalidInput("messages: the last user message has no text")
    system = "" if body.system is None else block_text(body.system, "system")
    return [("system", system), *out] if system.strip() else out


# --- the answer -------------------------------------------------------------------------------


class TextBlock(BaseModel):
    """Text of the agent's reply."""

    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    """The agent's thinking; ``signature`` is empty (walrus signs nothing)."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


ContentBlock = TextBlock | ThinkingBlock


class Usage(BaseModel):
    """Tokens the run used, summed over its steps."""

    input_tokens: int
    output_tokens: int


class Message(BaseModel):
    """The answer: ``id`` is ``msg_<run_id>``, ``model`` the agent."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ContentBlock]
    model: str
    stop_reason: Literal["end_turn"] | None = "end_turn"
    stop_sequence: None = None
    usage: Usage


MESSAGE_ID_PREFIX = "msg_"
"""A message's id is this prefix and the id of the walrus run that answered it."""


def message_id(run_id: str) -> str:
    """The id of the message run ``run_id`` answers."""
    return MESSAGE_ID_PREFIX + run_id


def usage_of(end: dict[str, Any] | None) -> Usage:
    """Anthropic usage from an ``end`` event's ``usage`` (zero before the end)."""
    usage = (end or {}).get("usage") or {}
    return Usage(
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
    )
