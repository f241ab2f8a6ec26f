"""One ``tools/call`` of the MCP face following its run: progress, questions, the result.

:func:`steps` reads the run's events through the app's hub until ``end`` and says what the
call says: progress messages, then the reply (a ``CallToolResult``). :func:`follow` sends them
for the ``mcp`` package; :mod:`gateway.mcp_plain` writes them itself for a 2026-07-28 call with a
progress token. On the way:

- **progress** (when the client sent a ``progressToken``): a notification per batch of
  streamed text (its ``message`` is that text, at most every :data:`PROGRESS_EVERY` seconds)
  and per step of the run (``calling clock``, ``clock done (3 ms)``, a retry, a restart), and
  ``still running`` while the run is idle, which also keeps a quiet stream open;
- **a question** (``ask_user``, or a tool call waiting for approval): asked by elicitation if the
  client declared that capability. On a 2026-07-28 connection the call returns an
  ``InputRequiredResult`` whose ``requestState`` names the run (:class:`Resume`); the client
  answers by calling again, on any gateway, and that call follows the run on. On an older
  connection the question is an ``elicitation/create`` request on the call's own stream, and
  the same call goes on once it is answered (or once the run went on without it: answered from
  another face, timed out, cancelled). A client without the capability gets the question as
  the result (``status: waiting``); its next call to the conversation answers it;
- **cancellation** of the call (``notifications/cancelled``, or a 2026-07-28 client closing the
  request) cancels the run; the call ending otherwise (the gateway stopping, Redis away past
  ``WALRUS_SSE_REDIS_GRACE``) does not: it is a JSON-RPC error naming the run, which goes on.

Where the run started before this call (a call that answers a question), the events the client
was shown already (up to ``Start.asked``) only rebuild the reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import anyio
import mcp_types as types
import redis
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gateway.errors import REDIS_DOWN, failure_of
from gateway.hub import Hub, Item
from gateway.mcp_questions import Form, answer_of, declined, form_of, question_text
from gateway.operations import cancel_run_id, reply, run_error, run_events
from gateway.subscription import seq
from walrus_tasks.config import Config
from walrus_tasks.errors import Unavailable, WalrusError
from walrus_tasks.names import ENTRY_ID_RE, RUN_ID_RE, SENDER_RE
from walrus_tasks.reply_text import ForwardOnce, ReplyDiverged, ReplyText
from walrus_tasks.tenancy import Caller

log = logging.getLogger("walrus.gateway.mcp")

PROGRESS_EVERY = 0.25
"""Seconds between two progress notifications of streamed text (a batch of chunks)."""

ASKED = ("question", "approval")
"""The ``ask_user`` kinds a person answers (a ``client_tool`` call is a program's: not ours)."""

Ctx = ServerRequestContext[Any, Any]
Result = types.CallToolResult | types.InputRequiredResult


@dataclass(frozen=True)
class CallEnv:
    """What a call acts with: the app's Redis, config and hub, and the caller."""

    r: redis.Redis
    config: Config
    hub: Hub
    caller: Caller


@dataclass(slots=True)
class Start:
    """The run a call follows, in ``conversation`` of ``agent``.

    ``asked``: the entry id of the last event the client was shown before this call ("0-0" for
    a new run); ``unanswered``: call ids of questions asked before it that still wait.
    """

    agent: str
    conversation: str
    run_id: str
    asked: str = "0-0"
    unanswered: frozenset[str] = frozenset()
    answered: set[str] = field(default_factory=set)

    def summary(self, status: str, **extra: Any) -> dict[str, Any]:
        """The result's ``structuredContent``: the run, its conversation, its status."""
        return {"run_id": self.run_id, "conversation": self.conversation, "status": status, **extra}

    def shown(self, entry_id: str) -> bool:
        """True for an event the client was shown before this call."""
        return seq(entry_id) <= seq(self.asked)


class Resume(BaseModel):
    """The ``requestState`` of an ``InputRequiredResult``: the run whose question it asks.

    The client sends it back as it is; it is checked against Redis (the run must be the
    caller's, of the tool's agent and this conversation), never trusted.
    """

    run: str = Field(pattern=RUN_ID_RE.pattern)
    conversation: str = Field(pattern=SENDER_RE.pattern)
    asked: str = Field(pattern=ENTRY_ID_RE.pattern)


class Progress:
    """The progress messages of one call, as they become due (:meth:`take` hands them on)."""

    __slots__ = ("at", "diverged", "due", "once", "said", "text")

    def __init__(self) -> None:
        self.due: list[str] = []
        self.text = ""
        self.at = 0.0
        self.once = ForwardOnce()
        self.diverged = False
        self.said = ""

    def say(self, message: str) -> None:
        """One message due."""
        self.said = message
        self.due.append(message)

    def take(self) -> list[str]:
        """The messages due since the last take."""
        due, self.due = self.due, []
        return due

    def flush(self) -> None:
        """The text streamed since the last message, if any."""
        if self.text:
            text, self.text, self.at = self.text, "", time.monotonic()
            self.say(text)

    def event(self, event: Mapping[str, Any], shown: bool) -> None:
        """Report ``event`` (only keep track of it if the client was ``shown`` it before)."""
        if not self.diverged:
            try:
                text = self.once.feed(event)
            except ReplyDiverged:
                self.diverged, text = True, ""
                if not shown:
                    self.say("the reply restarted: the result holds it whole")
            if not shown:
                self.text += text
        if shown:
            return
        if event["type"] in ("chunk", "text_start", "text_end"):
            if self.text and time.monotonic() - self.at >= PROGRESS_EVERY:
                self.flush()
            return
        self.flush()
        message = describe(event)
        if message and not (message == "thinking" and self.said == "thinking"):
            self.say(message)


def describe(event: Mapping[str, Any]) -> str:
    """What a run event says to a person watching the call ('' for nothing)."""
    kind = event["type"]
    if kind == "tool_start":
        return "calling " + ", ".join(str(c.get("name")) for c in event.get("calls", []))
    if kind == "tool_result":
        done = "failed" if event.get("is_error") else "done"
        return f"{event.get('name')} {done} ({event.get('duration_ms', 0)} ms)"
    if kind == "retry":
        return f"the model call failed ({event.get('reason')}): attempt {event.get('attempt')}"
    if kind == "restart":
        return f"the step restarts ({event.get('reason')})"
    return {"start": "run started", "thinking": "thinking", "compacted": "history compacted",
            "user_steered": "steering message taken",
            "ask_user": "waiting for an answer"}.get(kind, "")  # fmt: skip


def _events(hub: Hub, run_id: str, after: str) -> AsyncGenerator[Item, None]:
    # The hub's iterator is an async generator: closed at once when a reader stops early.
    return cast("AsyncGenerator[Item, None]", run_events(hub, run_id, after))


async def follow(ctx: Ctx, c: CallEnv, start: Start) -> Result:
    """Follow ``start``'s run to its end (or its question); cancel it if the call is cancelled.

    The package's path: progress as the session's notifications (none without a token).
    """
    sent = 0
    try:
        async with aclosing(steps(c, start, partial(ask, ctx))) as items:
            async for item in items:
                if not isinstance(item, str):
                    return item
                sent += 1
                await ctx.session.report_progress(sent, None, item)
    except (Unavailable, *REDIS_DOWN) as e:  # the gateway stops, or Redis stayed away
        raise gone_error(start, e) from e
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await cancel_call(c, start)
        raise
    raise AssertionError("steps() ends with the call's result")


def gone_error(start: Start, e: Exception) -> MCPError:
    """The JSON-RPC error of a call the gateway could not follow to the end; its run goes on."""
    status, code, message = failure_of(e)
    data = {"status": status, "code": code, "run_id": start.run_id,
            "conversation": start.conversation}  # fmt: skip
    message = f"{code}: {message}; run {start.run_id} goes on: GET /v1/runs/{start.run_id}"
    return MCPError(types.INTERNAL_ERROR, message, data)


async def cancel_call(c: CallEnv, start: Start) -> None:
    """The call was cancelled (or its client left): cancel its run."""
    log.info("MCP call cancelled: cancelling run %s", start.run_id)
    try:
        await run_in_threadpool(cancel_run_id, c.r, start.run_id, c.caller)
    except Exception:  # the call ends cancelled all the same; say why the run goes on
        log.exception("run %s of a cancelled MCP call not cancelled", start.run_id)


Ask = Callable[[CallEnv, Start, str, Mapping[str, Any]], Awaitable[Result | None]]
"""How a call puts a run's question ``(env, start, entry id, ask_user event)``: None once
answered within the call, else the call's result."""


async def steps(c: CallEnv, start: Start, asker: Ask) -> AsyncGenerator[str | Result, None]:
    """What a call says while it follows ``start``'s run: progress messages, then its result.

    One place for both ways a ``tools/call`` is served: by the ``mcp`` package (:func:`follow`)
    and below it (:mod:`gateway.mcp_plain`). Raises what reading the run raises.
    """
    progress = Progress()
    if start.asked == "0-0":
        progress.say(f"run {start.run_id} accepted in conversation {start.conversation}")
    for message in progress.take():
        yield message
    text = ReplyText()
    async with aclosing(_events(c.hub, start.run_id, "0-0")) as events:
        async for entry_id, event in events:
            if event is None:
                progress.say("still running")
            else:
                text.feed(event)
                shown = start.shown(entry_id)
                if event["type"] == "end":
                    progress.flush()
                else:
                    progress.event(event, shown)
            for message in progress.take():
                yield message
            if event is None:
                continue
            if event["type"] == "end":
                yield finished(start, text.text, event)
                return
            if event["type"] == "ask_user" and event.get("kind") in ASKED:
                call_id = str(event.get("call_id", ""))
                if call_id in start.answered or (shown and call_id not in start.unanswered):
                    continue
                asked = await asker(c, start, entry_id, event)
                if asked is not None:
                    yield asked
                    return
                start.answered.add(call_id)
    gone = f"run {start.run_id} is gone: its events ended without an end"
    yield types.CallToolResult(
        content=[types.TextContent(type="text", text=gone)],
        structured_content=start.summary("failed", error=gone),
        is_error=True,
    )


def finished(start: Start, reply_text: str, end: Mapping[str, Any]) -> types.CallToolResult:
    """The result of an ended run: its reply, or (failed, cancelled) its error."""
    status = str(end.get("status"))
    if status == "succeeded":
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=reply_text)],
            structured_content=start.summary(status),
        )
    _, error = run_error(start.run_id, dict(end))
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"run {start.run_id} {status}: {error}")],
        structured_content=start.summary(status, error=error),
        is_error=True,
    )


def can_elicit(ctx: Ctx) -> bool:
    """True if the client declared the elicitation capability."""
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


async def ask(
    ctx: Ctx, c: CallEnv, start: Start, entry_id: str, event: Mapping[str, Any]
) -> Result | None:
    """Put the run's question to the client: None once answered here, else the call's result."""
    elicit = can_elicit(ctx)
    modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
    if elicit and not modern and ctx.session.can_send_request:
        form = form_of(event)
        try:
            result = await _elicit(ctx, c.hub, start.run_id, entry_id, form)
        except Exception as e:  # the client refused it, or answered what is no answer
            log.info("MCP elicitation failed (%r): the question is the result", e)
        else:
            if result is not None:
                call_id = str(event.get("call_id", ""))
                await run_in_threadpool(answer, c, start, call_id, form, result)
            return None
    return question(start, entry_id, event, elicit and modern)


def question(start: Start, entry_id: str, event: Mapping[str, Any], elicit: bool) -> Result:
    """The result of a call whose run asks ``event``'s question.

    ``elicit`` (a 2026-07-28 client that can elicit): an ``InputRequiredResult`` whose
    ``requestState`` names the run, answered by the next call; else the question as the result
    (``status: waiting``), which the next call to the conversation answers.
    """
    call_id = str(event.get("call_id", ""))
    form = form_of(event)
    if elicit:
        state = Resume(run=start.run_id, conversation=start.conversation, asked=entry_id)
        request = types.ElicitRequest(
            params=types.ElicitRequestFormParams(message=form.message, requested_schema=form.schema)
        )
        return types.InputRequiredResult(
            input_requests={call_id: request}, request_state=state.model_dump_json()
        )
    return types.CallToolResult(
        content=[
            types.TextContent(
                type="text",
                text=question_text(event, start.agent, start.conversation, start.run_id),
            )
        ],
        structured_content=start.summary(
            "waiting",
            call_id=call_id,
            kind=form.kind,
            questions=list(event.get("questions") or []),
        ),
    )


async def _elicit(
    ctx: Ctx, hub: Hub, run_id: str, entry_id: str, form: Form
) -> types.ElicitResult | None:
    """The client's answer to ``form``, or None if the run went on first.

    The run goes on without it when the question was answered from another face, timed out or
    the run was cancelled: then the elicitation request is cancelled.
    """
    answer: types.ElicitResult | None = None

    async def watch(scope: anyio.CancelScope) -> None:
        try:
            async with aclosing(_events(hub, run_id, entry_id)) as later:
                async for _, event in later:
                    if event is not None:
                        break
        except Exception:  # the main reader of the run meets the same failure, and says it
            return
        scope.cancel()

    failed: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        try:
            answer = await ctx.session.elicit_form(
                form.message, form.schema, related_request_id=ctx.request_id
            )
        except Exception as e:  # raised out of the task group it would come as a group
            failed = e
        tg.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return answer


def answer(c: CallEnv, start: Start, call_id: str, form: Form, result: types.ElicitResult) -> None:
    """Send the run the client's answer to ``form`` (blocking).

    Accepted: the form's answer; declined: a refusal (``deny`` for an approval); cancelled:
    the run is cancelled. An answer the run no longer waits for (the wait timed out, or was
    answered from another face) is dropped.
    """
    if result.action == "cancel":
        cancel_run_id(c.r, start.run_id, c.caller)
        return
    content = answer_of(form, result.content) if result.action == "accept" else declined(form)
    try:
        reply(c.r, c.config, start.agent, start.conversation, content, call_id,
              c.caller.acting(None))  # fmt: skip
    except WalrusError as e:
        log.info("MCP answer to run %s not taken: %s", start.run_id, e)
