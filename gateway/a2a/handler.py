"""The A2A request handler: every A2A method as walrus operations on one agent's runs.

The SDK's routes (JSON-RPC and HTTP+JSON) parse a request, check its ``A2A-Version`` and call
this handler; it answers from Redis through :mod:`gateway.operations` and
:mod:`gateway.a2a_operations`, so a task is a durable walrus run, not an object in this
process: any gateway process answers for any task, and a task outlives the process that took
it. The task id is the run id; the context id is the conversation's sender (a message without
one starts a conversation of its own, ``a2a-<uuid>``); see docs/a2a.md.

- ``SendMessage`` sends the message (``operations.send``, face ``a2a``) and, unless the
  request says ``returnImmediately``, answers once the task is completed, failed, canceled or
  ``input-required``. A message naming the ``taskId`` of a task that is ``input-required``
  answers its question (``operations.reply``): the same run goes on.
- ``SendStreamingMessage`` and ``SubscribeToTask`` stream the task (:class:`TaskStream`) from
  the run's events, read through the hub; the stream holds one of the client's stream slots.
- ``GetTask``, ``ListTasks`` (``operations.list_runs``) and ``CancelTask`` read and cancel runs.
- Push notifications and the extended card are not supported.

Every failure leaves as an A2A error (:mod:`gateway.a2a.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import redis
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler, validate_request_params
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    InvalidParamsError,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    PushNotificationNotSupportedError,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskPushNotificationConfig,
    UnsupportedOperationError,
)
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.task import apply_history_length, validate_history_length, validate_page_size
from starlette.concurrency import run_in_threadpool

from gateway import a2a_operations as a2a_ops
from gateway import operations as ops
from gateway.a2a.errors import stream_ended, translated, translating
from gateway.a2a.tasks import (
    RUN_STATUSES,
    STATE_OF,
    TERMINAL,
    StreamEvent,
    TaskStream,
    message_text,
    state_name,
    task_of,
)
from gateway.a2a_operations import Event, TaskRecord
from gateway.hub import Hub
from gateway.sse import guarded
from gateway.stream_limit import hold_stream
from walrus_tasks import ids
from walrus_tasks.config import Config
from walrus_tasks.errors import NotFound
from walrus_tasks.models import RunInfo, SendMessage
from walrus_tasks.names import SENDER_RE
from walrus_tasks.tenancy import Caller

CONTEXT_PREFIX = "a2a-"
"""A conversation started by a message without a context id is ``a2a-<uuid hex>``."""
CANCEL_WAIT = 10.0
"""Seconds ``CancelTask`` waits for the run to end (it checks its flag between chunks and tool
calls), before answering with the task as it is then."""
NO_PUSH = (
    "push notifications are not supported: stream the task (SendStreamingMessage, "
    "SubscribeToTask) or poll it (GetTask)"
)
CALL = "walrus"
"""The key of the :class:`AgentCall` in a ``ServerCallContext``'s state."""


@dataclass(frozen=True)
class AgentCall:
    """What one A2A request acts with: the app's Redis, config and hub, its caller, its agent."""

    r: redis.Redis
    config: Config
    hub: Hub
    caller: Caller
    agent: str


def call_of(context: ServerCallContext) -> AgentCall:
    """The :class:`AgentCall` the context builder put in ``context``."""
    call = context.state[CALL]
    assert isinstance(call, AgentCall)
    return call


@dataclass(frozen=True)
class Started:
    """A message a task took: the task then, and the run events its client already has."""

    record: TaskRecord
    before: list[Event]
    """The run's events before the message (a question's answer goes on after them)."""

    @property
    def after(self) -> str:
        """The entry id the task's stream goes on after."""
        return self.before[-1][0] if self.before else "0-0"


def record_of(call: AgentCall, task_id: str, events: bool = True) -> TaskRecord:
    """Task ``task_id`` of the call's agent, as the caller sees it (NotFound otherwise)."""
    return a2a_ops.task_record(call.r, task_id, call.agent, call.caller, events)


def new_context_id(message: Message) -> str:
    """The message's context id (checked: it names a conversation), or a new one."""
    context_id = message.context_id or f"{CONTEXT_PREFIX}{ids.hex_id()}"
    if not SENDER_RE.fullmatch(context_id):
        raise InvalidParamsError(
            f"invalid contextId {context_id!r}: it names a walrus conversation, so it must "
            f"match {SENDER_RE.pattern} (or leave it out to start a new one)"
        )
    return context_id


async def settled(hub: Hub, run_id: str, after: str, questions: bool = True) -> str:
    """The entry id of the run's ``end``, or of its first question after entry ``after``.

    ``after`` itself if the run's events end without either (the run is gone).
    """
    async for entry_id, event in ops.run_events(hub, run_id, after):
        if event is not None and (
            event["type"] == "end" or (questions and event["type"] == "ask_user")
        ):
            return entry_id
    return after


def unsettled(record: TaskRecord) -> bool:
    """True while the task neither has ended nor waits for the client's answer."""
    return record.question is None and STATE_OF[record.run.status] not in TERMINAL


class WalrusRequestHandler(RequestHandler):
    """The A2A methods over walrus runs (see the module's docstring)."""

    async def _start(self, call: AgentCall, message: Message, stream: bool) -> Started:
        """Send ``message``: a new task, or the answer to the question of its ``taskId``.

        A streaming call holds its stream slot before anything is written.
        """
        text = message_text(message)
        if not message.task_id:
            context_id = new_context_id(message)
            if stream:
                hold_stream()
            body = SendMessage(content=text, sender=context_id)
            submitted = await run_in_threadpool(
                ops.send, call.r, call.config, call.agent, body, None, call.caller, "a2a"
            )
            record = await run_in_threadpool(record_of, call, submitted.run_id, False)
            return Started(record=record, before=[])
        asked = await run_in_threadpool(record_of, call, message.task_id)
        run = asked.run
        if message.context_id and message.context_id != run.sender:
            raise InvalidParamsError(
                f"contextId {message.context_id!r} is not the context of task {run.run_id} "
                f"({run.sender!r})"
            )
        if asked.question is None:
            raise UnsupportedOperationError(not_waiting(run))
        if stream:
            hold_stream()
        call_id = str(asked.question[1].get("call_id", ""))
        await run_in_threadpool(
            ops.reply, call.r, call.config, call.agent, run.sender, text, call_id, run.tenant
        )
        return Started(
            record=await run_in_threadpool(record_of, call, run.run_id), before=asked.events
        )

    def _follow(self, call: AgentCall, started: Started) -> AsyncGenerator[StreamEvent, None]:
        """The task's stream events after ``started.after``, until it ends or asks."""
        grace = call.hub.settings.sse_redis_grace
        return translating(guarded(self._events(call, started), stream_ended, grace))

    async def _events(self, call: AgentCall, started: Started) -> AsyncGenerator[StreamEvent, None]:
        run = started.record.run
        stream = TaskStream(run.run_id, run.sender, started.before)
        async for entry_id, event in ops.run_events(call.hub, run.run_id, started.after):
            if event is None:
                continue  # idle: sse-starlette sends its own keep-alive comments
            for out in stream.feed(entry_id, event):
                yield out
            if stream.done:
                return
        raise TaskNotFoundError(f"task {run.run_id} no longer exists (its run expired)")

    @validate_request_params
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task:
        """Send the message; the task once it has ended or asks (at once if asked to)."""
        call = call_of(context)
        validate_history_length(params.configuration)
        with translated():
            started = await self._start(call, params.message, stream=False)
            record, after = started.record, started.after
            while unsettled(record) and not params.configuration.return_immediately:
                # Read again at each question: another client may have answered it already.
                after = await settled(call.hub, record.run.run_id, after)
                record = await run_in_threadpool(record_of, call, record.run.run_id)
        return apply_history_length(task_of(record), params.configuration)

    @validate_request_params
    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[StreamEvent, None]:
        """Send the message; the task, then its status and artifact updates until it settles."""
        call = call_of(context)
        validate_history_length(params.configuration)
        with translated():
            started = await self._start(call, params.message, stream=True)
        yield apply_history_length(task_of(started.record), params.configuration)
        if started.record.question is None:
            async for event in self._follow(call, started):
                yield event

    @validate_request_params
    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[StreamEvent, None]:
        """The task as it is, then its updates until it ends or asks (not for an ended task)."""
        call = call_of(context)
        with translated():
            record = await run_in_threadpool(record_of, call, params.id)
            task = task_of(record)
            if task.status.state in TERMINAL:
                raise UnsupportedOperationError(
                    f"task {params.id} is {state_name(task.status.state)}: nothing more will "
                    "happen to it (GetTask reads it)"
                )
            hold_stream()
        yield task
        if record.question is None:
            async for event in self._follow(call, Started(record=record, before=record.events)):
                yield event

    @validate_request_params
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task:
        """The task: its state, its history and its reply artifact."""
        call = call_of(context)
        validate_history_length(params)
        with translated():
            record = await run_in_threadpool(record_of, call, params.id)
        return apply_history_length(task_of(record), params)

    @validate_request_params
    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        """The agent's tasks the caller sees, newest first, a page at a time.

        ``contextId`` filters by conversation and ``status`` by state; the page token is the
        runs list's cursor. ``totalSize`` counts the tasks of this page (the runs index is
        read a page at a time, never counted whole).
        """
        call = call_of(context)
        validate_history_length(params)
        size = DEFAULT_LIST_TASKS_PAGE_SIZE
        if params.HasField("page_size"):
            validate_page_size(params.page_size)
            size = params.page_size
        statuses = RUN_STATUSES[params.status] if params.status else ()
        if params.status and not statuses:  # a state no walrus run is ever in
            return ListTasksResponse(page_size=size)
        with translated():
            page = await run_in_threadpool(
                ops.list_runs, call.r, call.agent, params.context_id or None, statuses, size,
                params.page_token or None, call.caller.tenant,
            )  # fmt: skip
            records = await run_in_threadpool(
                list_records, call, page.runs, params.include_artifacts
            )
        tasks = [task_of(record, params.include_artifacts) for record in records]
        if params.status:
            tasks = [t for t in tasks if t.status.state == params.status]
        if params.HasField("status_timestamp_after"):
            after = params.status_timestamp_after.ToMilliseconds()
            tasks = [t for t in tasks if t.status.timestamp.ToMilliseconds() > after]
        return ListTasksResponse(
            tasks=[apply_history_length(t, params) for t in tasks],
            next_page_token=page.next_cursor or "",
            page_size=size,
            total_size=len(tasks),
        )

    @validate_request_params
    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        """Cancel the task's run; the task once it has ended (``CANCEL_WAIT`` at most)."""
        call = call_of(context)
        with translated():
            record = await run_in_threadpool(record_of, call, params.id, False)
            state = STATE_OF[record.run.status]
            if state in TERMINAL:
                raise TaskNotCancelableError(
                    f"task {params.id} is {state_name(state)} already: only a task that has "
                    "not ended can be canceled"
                )
            await run_in_threadpool(ops.cancel_run_id, call.r, params.id, call.caller)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CANCEL_WAIT):
                    await settled(call.hub, params.id, "0-0", questions=False)
            record = await run_in_threadpool(record_of, call, params.id)
        return task_of(record)

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        """Not supported."""
        raise PushNotificationNotSupportedError(NO_PUSH)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        """Not supported."""
        raise PushNotificationNotSupportedError(NO_PUSH)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        """Not supported."""
        raise PushNotificationNotSupportedError(NO_PUSH)

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        """Not supported."""
        raise PushNotificationNotSupportedError(NO_PUSH)

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        """Not supported: the agent's card is its public one."""
        raise UnsupportedOperationError(
            "this agent has no extended card: its card is at .well-known/agent-card.json"
        )


def not_waiting(run: RunInfo) -> str:
    """Why a message naming task ``run`` is refused: the task does not wait for input."""
    state = STATE_OF[run.status]
    if state in TERMINAL:
        return (
            f"task {run.run_id} is {state_name(state)}: it takes no more messages; send one "
            f"with contextId {run.sender!r} and no taskId to go on in its conversation"
        )
    return (
        f"task {run.run_id} is {state_name(state)}, not input-required: a message names a "
        "task only to answer its question"
    )


def list_records(call: AgentCall, runs: list[RunInfo], artifacts: bool) -> list[TaskRecord]:
    """The records of a page of runs (a run gone meanwhile is left out)."""
    out = []
    for run in runs:
        with contextlib.suppress(NotFound):
            out.append(record_of(call, run.run_id, artifacts))
    return out
