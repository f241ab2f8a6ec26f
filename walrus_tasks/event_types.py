"""The run events: every event a run's stream can hold, typed, with its one constructor.

A run's stream (``keys.run_part(run_id, "events")``) is what clients read over SSE and the
WebSocket, and the live feed carries the same events. The SSE ``event:`` name is ``type``.
In order, per run::

    start
    ( text_start chunk* [ text_end ] | thinking )*       one LLM step's output
    [ restart ] retry                                    a failed LLM call, tried again
    restart                                              the step's worker was lost: it runs again
    [ tool_start tool_result* tools_complete ]           its tool calls, if any
    ( ask_user | user_steered | compacted )              whenever they happen
    ... the next step ...
    end                                                  always last, exactly once

A ``restart`` says that what the step streamed so far is void: clients drop the text and
thinking (``STEP_OUTPUT``) since the last ``STEP_BOUNDARY`` event before it, and the step
streams again from its beginning (history never holds the void output: a step is committed
once, whole). Its ``reason`` says why:

- the step's LLM call failed after it had streamed output: ``restart`` comes before the
  ``retry`` (``worker/llm_call.py``);
- the step's worker was lost (killed, or cut off from Redis past its lease) after the step had
  streamed output: ``restart {reason: "worker lost"}`` comes first when the step is claimed
  again, written by ``lua/begin_step.lua`` in the script that re-claims it, so before any
  output of the new attempt. The lost attempt's text may have no ``text_end``.

A face whose client cannot take text back (OpenAI chat streaming, Agent Protocol messages) uses
``walrus_tasks.reply_text``: it skips what the client already has while the new attempt
repeats it exactly, and ends the stream with an error where it differs.

Three are appended by Lua, atomically with the transition they belong to: ``start``
(``lua/lib/runs.lua``, as the run starts), ``user_steered`` (``lua/steer_inject.lua``) and a
lost worker's ``restart`` (``lua/begin_step.lua``, as the step is claimed again; the event is
built here). Their shapes are the TypedDicts below all the same; ``tests/test_event_types.py``
checks what Lua writes against them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, NotRequired

from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

EndStatus = Literal["succeeded", "failed", "cancelled"]


class Start(TypedDict):
    """The run started: its user message entered history."""

    type: Literal["start"]
    run_id: str
    agent: str
    sender: str


class TextStart(TypedDict):
    """A text segment of the model's answer begins."""

    type: Literal["text_start"]


class Chunk(TypedDict):
    """Streamed answer text (one or more tokens)."""

    type: Literal["chunk"]
    content: str


class TextEnd(TypedDict):
    """The text segment ended."""

    type: Literal["text_end"]


class Thinking(TypedDict):
    """Streamed reasoning text (never part of history)."""

    type: Literal["thinking"]
    content: str


class ToolCall(TypedDict):
    """One tool call the model asked for."""

    id: str
    name: str
    arguments: dict[str, Any]


class ToolStart(TypedDict):
    """The step's tool calls, in call order; they run in parallel."""

    type: Literal["tool_start"]
    calls: list[ToolCall]


class ToolResult(TypedDict):
    """One tool call finished (in completion order); ``output`` is always a string."""

    type: Literal["tool_result"]
    call_id: str
    name: str
    output: str
    is_error: bool
    duration_ms: int


class ToolsComplete(TypedDict):
    """Every tool call of the step has its result; the next step follows."""

    type: Literal["tools_complete"]


AskKind = Literal["question", "approval", "client_tool"]
"""What an ``ask_user`` event waits for (``AskUser``)."""


class AskUser(TypedDict):
    """The run waits for the client: a question, an approval, or a client function's output.

    ``question``: the ``ask_user`` tool; ``approval``: a call under an ``ask`` permission
    (``tool`` names it); ``client_tool``: a function the client runs itself (``tool`` gives its
    name and arguments, ``questions`` is empty; ``walrus_tasks.client_tools``).
    """

    type: Literal["ask_user"]
    kind: AskKind
    questions: list[dict[str, Any]]
    call_id: NotRequired[str]
    tool: NotRequired[dict[str, Any]]


class UserSteered(TypedDict):
    """A steering message entered history before the step's LLM call."""

    type: Literal["user_steered"]
    content: str


class Compacted(TypedDict):
    """History was summarised; ``archived`` messages moved to the compaction archive."""

    type: Literal["compacted"]
    content: str
    archived: int


class Retry(TypedDict):
    """The step's LLM call failed transiently; attempt ``attempt`` follows in ``delay_ms``.

    ``model`` is the model of that attempt (a fallback, once the agent's model gave up).
    """

    type: Literal["retry"]
    attempt: int
    delay_ms: int
    reason: str
    model: str


class Restart(TypedDict):
    """Drop the output streamed by step ``step`` so far: the step runs again from its start.

    ``reason``: the error of the failed LLM call, or ``worker lost`` (``WORKER_LOST``).
    """

    type: Literal["restart"]
    step: int
    reason: str


class Usage(TypedDict):
    """Tokens the run used, summed over its steps."""

    input_tokens: int
    output_tokens: int


class End(TypedDict):
    """The run ended: always the last event, exactly once."""

    type: Literal["end"]
    status: EndStatus
    usage: Usage
    model: str | None
    error: NotRequired[str]


RunEvent = (
    Start
    | TextStart
    | Chunk
    | TextEnd
    | Thinking
    | ToolStart
    | ToolResult
    | ToolsComplete
    | AskUser
    | UserSteered
    | Compacted
    | Retry
    | Restart
    | End
)
"""Any run event (the ``type`` field tells which)."""

STEP_OUTPUT = frozenset({"text_start", "chunk", "text_end", "thinking"})
"""What an LLM step streams as it goes: what a ``restart`` drops."""

STEP_BOUNDARY = frozenset(
    {"start", "tools_complete", "restart", "tool_start", "tool_result", "ask_user"}
)
"""Events that no output of the current step precedes: a ``restart`` drops the output since the
last of them. ``tool_start``, ``tool_result`` and ``ask_user`` belong to the step before, and
count because a worker lost before it wrote ``tools_complete`` leaves the next step after them."""

STEP_BUDGET = "step budget exhausted"
"""How the ``error`` of a failed ``end`` begins when the run ran out of steps
(``max_iterations``): the agent stopped before it finished, rather than erred."""

WORKER_LOST = "worker lost"
"""The ``reason`` of a ``restart`` written as a lost worker's step is claimed again."""

RUN_EVENT: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
"""Validates a run event and gives its JSON schema (the OpenAPI document of the SSE routes)."""


def text_start() -> TextStart:
    """``text_start``."""
    return {"type": "text_start"}


def chunk(content: str) -> Chunk:
    """``chunk {content}``."""
    return {"type": "chunk", "content": content}


def text_end() -> TextEnd:
    """``text_end``."""
    return {"type": "text_end"}


def thinking(content: str) -> Thinking:
    """``thinking {content}``."""
    return {"type": "thinking", "content": content}


def tool_start(calls: list[ToolCall]) -> ToolStart:
    """``tool_start {calls}``."""
    return {"type": "tool_start", "calls": calls}


def tool_result(
    call_id: str, name: str, output: str, is_error: bool, duration_ms: int
) -> ToolResult:
    """``tool_result {call_id, name, output, is_error, duration_ms}``."""
    return {
        "type": "tool_result",
        "call_id": call_id,
        "name": name,
        "output": output,
        "is_error": is_error,
        "duration_ms": duration_ms,
    }


def tools_complete() -> ToolsComplete:
    """``tools_complete``."""
    return {"type": "tools_complete"}


def ask_user(
    kind: AskKind,
    questions: list[dict[str, Any]],
    tool: dict[str, Any] | None = None,
) -> AskUser:
    """``ask_user {kind, questions, tool?}`` (the call id is added as the wait is parked)."""
    event: AskUser = {"type": "ask_user", "kind": kind, "questions": questions}
    if tool is not None:
        event["tool"] = tool
    return event


def compacted(content: str, archived: int) -> Compacted:
    """``compacted {content, archived}``."""
    return {"type": "compacted", "content": content, "archived": archived}


def retry(attempt: int, delay_ms: int, reason: str, model: str) -> Retry:
    """``retry {attempt, delay_ms, reason, model}``."""
    return {
        "type": "retry",
        "attempt": attempt,
        "delay_ms": delay_ms,
        "reason": reason,
        "model": model,
    }


def restart(step: int, reason: str) -> Restart:
    """``restart {step, reason}``: clients drop the step's partial output."""
    return {"type": "restart", "step": step, "reason": reason}


def end(status: EndStatus, usage: Usage, model: str | None, error: str = "") -> End:
    """``end {status, usage, model, error?}``."""
    event: End = {"type": "end", "status": status, "usage": usage, "model": model}
    if error:
        event["error"] = error
    return event


def event_json(event: Mapping[str, Any]) -> str:
    """The stored and streamed form of a run event."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def sse_schema() -> dict[str, Any]:
    """The OpenAPI ``text/event-stream`` content of a route streaming run events."""
    return {
        "text/event-stream": {
            "schema": {
                "type": "string",
                "description": (
                    "SSE frames `id: <stream entry id>`, `event: <type>`, `data: <the event as "
                    "JSON>`; resumable with `Last-Event-ID`. The data is a RunEvent."
                ),
            },
            "x-run-event": _inline_refs(RUN_EVENT.json_schema()),
        }
    }


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` put in place, so it stands anywhere in a document."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]
