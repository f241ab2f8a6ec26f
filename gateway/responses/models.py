"""The Responses face's wire shapes: the request we accept and the objects we answer with.

Only the fields walrus reads or writes; unknown request fields (sampling parameters,
``reasoning``, ``text``, ``truncation``, …) are accepted and ignored. The item types are the
OpenAI / Open Responses ones the ``openai`` package parses: ``message`` (``output_text``
parts), ``reasoning`` (``reasoning_text`` content), ``function_call`` (a call of a client
function tool) and ``mcp_call`` (a call of one of the agent's own tools, run by walrus, with its
output). No ``from __future__ import annotations``: FastAPI resolves these at runtime.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from walrus_tasks.errors import InvalidInput

Status = Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete", "failed"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "incomplete"})
"""The statuses a response does not leave."""


class BadRequest(InvalidInput):
    """Raised when a request asks for what the face cannot read (HTTP 400, nothing stored)."""

    code = "invalid_request"
    status = 400


class Unsupported(InvalidInput):
    """Raised when a request asks for a feature walrus does not offer here (HTTP 400)."""

    code = "unsupported_parameter"
    status = 400


# --- the request ------------------------------------------------------------------------------


class FunctionTool(BaseModel):
    """A client function tool: the model may call it, the client runs it."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"] = "function"
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseCreate(BaseModel):
    """``POST /v1/responses``; unknown OpenAI parameters are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the agent")
    input: str | list[dict[str, Any]] = Field(
        description="a user message, or a list of items: messages (role user, system, "
        "developer or assistant; text parts) and `function_call_output` items"
    )
    instructions: str | None = Field(
        default=None,
        description="context for a new conversation, entered ahead of its input as a "
        "`(system)` message; not sent again on a continuation",
    )
    stream: bool = False
    background: bool = Field(default=False, description="answer at once; poll or stream it")
    store: bool = Field(default=True, description="false: not retrievable once it has ended")
    previous_response_id: str | None = Field(
        default=None, description="continue the conversation (and run) of that response"
    )
    conversation: str | dict[str, Any] | None = Field(
        default=None, description="a walrus sender: the server-side conversation to continue"
    )
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="client function tools only (type `function`)"
    )


# --- the objects ------------------------------------------------------------------------------


class OutputText(BaseModel):
    """A text part of an assistant message."""

    type: Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[Any] = Field(default_factory=list)


class ReasoningText(BaseModel):
    """The model's reasoning (walrus ``thinking`` events)."""

    type: Literal["reasoning_text"] = "reasoning_text"
    text: str = ""


class MessageItem(BaseModel):
    """The agent's text: one ``message`` item per text segment."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "in_progress"
    content: list[OutputText] = Field(default_factory=list)


class ReasoningItem(BaseModel):
    """The model's thinking between its texts and calls."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    status: ItemStatus = "in_progress"
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)


class FunctionCallItem(BaseModel):
    """A call of a client function tool: the client runs it and answers with its output."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus = "completed"


class McpCallItem(BaseModel):
    """A call of one of the agent's own tools, run by walrus: its output, or its error."""

    id: str
    type: Literal["mcp_call"] = "mcp_call"
    server_label: str = "walrus"
    name: str
    arguments: str
    status: ItemStatus = "in_progress"
    output: str | None = None
    error: dict[str, Any] | None = None


OutputItem = MessageItem | ReasoningItem | FunctionCallItem | McpCallItem


class TokenDetails(BaseModel):
    """Token breakdowns walrus does not count apart (always 0)."""

    cached_tokens: int = 0


class OutputDetails(BaseModel):
    """Token breakdowns walrus does not count apart (always 0)."""

    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    """The run's tokens, summed over its steps."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: TokenDetails = Field(default_factory=TokenDetails)
    output_tokens_details: OutputDetails = Field(default_factory=OutputDetails)


class ResponseError(BaseModel):
    """Why a response failed (or was cancelled)."""

    code: str
    message: str


class IncompleteDetails(BaseModel):
    """Why a response stopped before the agent finished."""

    reason: str


class ConversationRef(BaseModel):
    """The conversation a response belongs to, when the request named one."""

    id: str


class ResponseObject(BaseModel):
    """A response: ``resp_<run_id>`` (``resp_<run_id>_<n>`` after a client function call)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Status
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    previous_response_id: str | None = None
    conversation: ConversationRef | None = None
    background: bool = False
    store: bool = True
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    truncation: str = "disabled"


class InputItemList(BaseModel):
    """``GET /v1/responses/{id}/input_items``: one page of the request's input items."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedResponse(BaseModel):
    """``DELETE /v1/responses/{id}``."""

    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
