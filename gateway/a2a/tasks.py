"""A walrus run as an A2A task: its state, its messages, its reply artifact, its stream.

The task id is the run id and the context id is the conversation's sender (docs/a2a.md). A
run's status gives the task's state; a run waiting on a question (``ask_user``, or a tool
approval) is ``input-required`` with the question as the status message. The reply is one
artifact, ``reply``, whose text is the run's reply as :class:`~walrus_tasks.reply_text.ReplyText`
reads it (a restarted step's text once). The history is the task's user message, then each
question the run asked and each answer it got.

:class:`TaskStream` turns the run's events into the events of an A2A stream: status updates
(``working``, the tools called, ``input-required``, the end) and artifact updates of the reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from a2a.types import (
    Artifact,
    ContentTypeNotSupportedError,
    InvalidParamsError,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.struct_pb2 import Struct, Value

from gateway.a2a_operations import Event, TaskRecord
from walrus_tasks.models import RunStatus
from walrus_tasks.reply_text import ReplyText

StreamEvent = Task | Message | TaskStatusUpdateEvent | TaskArtifactUpdateEvent
"""What an A2A stream carries."""

STATE_OF: dict[RunStatus, TaskState] = {
    RunStatus.queued: TaskState.TASK_STATE_SUBMITTED,
    RunStatus.running: TaskState.TASK_STATE_WORKING,
    RunStatus.waiting: TaskState.TASK_STATE_WORKING,  # on a delegate; a question: input-required
    RunStatus.succeeded: TaskState.TASK_STATE_COMPLETED,
    RunStatus.failed: TaskState.TASK_STATE_FAILED,
    RunStatus.cancelled: TaskState.TASK_STATE_CANCELED,
}
"""The task state of each run status."""

RUN_STATUSES: dict[TaskState, tuple[RunStatus, ...]] = {
    TaskState.TASK_STATE_SUBMITTED: (RunStatus.queued,),
    TaskState.TASK_STATE_WORKING: (RunStatus.running, RunStatus.waiting),
    TaskState.TASK_STATE_INPUT_REQUIRED: (RunStatus.waiting,),
    TaskState.TASK_STATE_COMPLETED: (RunStatus.succeeded,),
    TaskState.TASK_STATE_FAILED: (RunStatus.failed,),
    TaskState.TASK_STATE_CANCELED: (RunStatus.cancelled,),
    TaskState.TASK_STATE_REJECTED: (),
    TaskState.TASK_STATE_AUTH_REQUIRED: (),
}
"""The run statuses a task of each state may have (a filter of ListTasks)."""

TERMINAL = frozenset(
    {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED}
)
REPLY = "reply"
"""The id (and name) of the artifact that holds the run's reply."""


def state_name(state: TaskState) -> str:
    """``input-required`` for ``TASK_STATE_INPUT_REQUIRED``: how messages name a state."""
    return str(TaskState.Name(state)).removeprefix("TASK_STATE_").lower().replace("_", "-")


def struct(value: dict[str, Any]) -> Struct:
    """A protobuf ``Struct`` of a JSON object."""
    return ParseDict(value, Struct())


def message_text(message: Message) -> str:
    """The text a message sends to the agent: its text parts, and its data parts as JSON.

    A file (``raw`` or ``url``) part is refused: walrus agents read text.
    """
    texts = []
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            texts.append(json.dumps(MessageToDict(part.data), ensure_ascii=False))
        else:
            raise ContentTypeNotSupportedError(
                f"a {kind or 'empty'} part: walrus agents read text and data parts only"
            )
    text = "\n".join(t for t in texts if t)
    if not text.strip():
        raise InvalidParamsError("the message has no text: send a text (or data) part")
    return text


def text_message(
    role: Role, text: str, message_id: str, task_id: str, context_id: str, data: Any = None
) -> Message:
    """A message of one text part (and a data part when ``data`` is given)."""
    parts = [Part(text=text)]
    if data is not None:
        parts.append(Part(data=ParseDict(data, Value())))
    return Message(
        message_id=message_id, role=role, parts=parts, task_id=task_id, context_id=context_id
    )


def question_text(event: dict[str, Any]) -> str:
    """An ``ask_user`` event as text: each question (its header, its options) on a line.

    A client tool call (a run sent with client tools by another face) asks for its output.
    """
    if event.get("kind") == "client_tool":
        tool = event.get("tool") or {}
        arguments = json.dumps(tool.get("arguments", {}), ensure_ascii=False)
        return f"run the client tool {tool.get('name')}({arguments}) and answer with its output"
    lines = []
    for q in event.get("questions") or []:
        line = str(q.get("question", ""))
        if q.get("header"):
            line = f"{q['header']}: {line}"
        options = [str(o.get("label")) for o in q.get("options") or [] if isinstance(o, dict)]
        if options:
            line += f" ({' / '.join(options)})"
        lines.append(line)
    return "\n".join(lines) or "the agent asks for your input"


def question_message(task_id: str, context_id: str, asked: Event) -> Message:
    """The agent's question: its text, and the ``ask_user`` event as a data part."""
    entry_id, event = asked
    data = {k: v for k, v in event.items() if k != "type"}
    return text_message(
        Role.ROLE_AGENT, question_text(event), f"{task_id}:{entry_id}", task_id, context_id, data
    )


def reply_artifact(text: str) -> Artifact:
    """The artifact that holds the reply text."""
    return Artifact(artifact_id=REPLY, name=REPLY, parts=[Part(text=text)])


def reply_text(events: Iterable[Event]) -> str:
    """The run's reply so far (a restarted step's text once)."""
    reply = ReplyText()
    for _, event in events:
        reply.feed(event)
    return reply.text


def history_of(record: TaskRecord) -> list[Message]:
    """The task's messages: the user's, then each question and each answer, in order."""
    task_id, context_id = record.run.run_id, record.run.sender
    out = [text_message(Role.ROLE_USER, record.content, f"{task_id}:user", task_id, context_id)]
    questions: set[str] = set()
    for entry_id, event in record.events:
        if event["type"] == "ask_user" and event.get("kind") == "question":
            questions.add(str(event.get("call_id")))
            out.append(question_message(task_id, context_id, (entry_id, event)))
        elif (
            event["type"] == "tool_result"
            and event.get("call_id") in questions
            and not event.get("is_error")
        ):
            answer = str(event.get("output", ""))
            out.append(
                text_message(Role.ROLE_USER, answer, f"{task_id}:{entry_id}", task_id, context_id)
            )
    return out


def status_of(record: TaskRecord) -> TaskStatus:
    """The task's status: its state, the question or the error as its message, and when."""
    run, task_id = record.run, record.run.run_id
    status = TaskStatus(state=STATE_OF[run.status])
    if record.question is not None:
        status.state = TaskState.TASK_STATE_INPUT_REQUIRED
        status.message.CopyFrom(question_message(task_id, run.sender, record.question))
    elif run.status == RunStatus.failed:
        error = run.error or "the run failed"
        status.message.CopyFrom(
            text_message(Role.ROLE_AGENT, error, f"{task_id}:error", task_id, run.sender)
        )
    when = run.finished_at or run.started_at or run.created_at
    status.timestamp.FromMilliseconds(int(when * 1000))
    return status


def task_of(record: TaskRecord, artifacts: bool = True) -> Task:
    """The A2A task of a run (its reply artifact read from the events, if ``artifacts``)."""
    run = record.run
    task = Task(id=run.run_id, context_id=run.sender, status=status_of(record))
    text = reply_text(record.events) if artifacts else ""
    if text:
        task.artifacts.append(reply_artifact(text))
    task.history.extend(history_of(record))
    meta = {"agent": run.agent, "run_status": run.status.value, "face": run.face or ""}
    task.metadata.CopyFrom(struct(meta))
    return task


class TaskStream:
    """The A2A stream events of a run's events, fed in order (``feed``).

    The reply streams as updates of the ``reply`` artifact: the first of a stream, and the first
    after a ``restart`` (the step's text so far is void), carry the whole text so far with
    ``append`` false, which replaces the artifact; the others append a chunk. The last, as the
    run ends, carries the whole reply with ``lastChunk``. The stream is ``done`` at the run's
    end or at a question (``input-required``), as an A2A stream ends at a terminal or an
    interrupted state.
    """

    def __init__(self, task_id: str, context_id: str, before: Iterable[Event] = ()) -> None:
        self.task_id, self.context_id = task_id, context_id
        self.reply = ReplyText()
        for _, event in before:  # a stream that goes on after them (a task answered)
            self.reply.feed(event)
        self.whole = True
        """The next artifact update carries the whole text (none sent yet, or a restart)."""
        self.done = False

    def status(self, state: TaskState, message: Message | None = None) -> TaskStatusUpdateEvent:
        """A status update of the task."""
        status = TaskStatus(state=state, message=message)
        status.timestamp.GetCurrentTime()
        return TaskStatusUpdateEvent(
            task_id=self.task_id, context_id=self.context_id, status=status
        )

    def artifact(self, text: str, append: bool, last: bool = False) -> TaskArtifactUpdateEvent:
        """An update of the reply artifact."""
        return TaskArtifactUpdateEvent(
            task_id=self.task_id, context_id=self.context_id, artifact=reply_artifact(text),
            append=append, last_chunk=last,
        )  # fmt: skip

    def feed(self, entry_id: str, event: dict[str, Any]) -> list[StreamEvent]:
        """The A2A events of one run event."""
        kind = event["type"]
        self.reply.feed(event)
        if kind == "start":
            return [self.status(TaskState.TASK_STATE_WORKING)]
        if kind == "chunk" and event.get("content"):
            whole, self.whole = self.whole, False
            return [self.artifact(self.reply.text if whole else event["content"], not whole)]
        if kind == "restart":
            self.whole = True
            return []
        if kind == "tool_start":
            names = ", ".join(str(c.get("name")) for c in event.get("calls") or [])
            mid = f"{self.task_id}:{entry_id}"
            note = text_message(Role.ROLE_AGENT, f"calling {names}", mid, *self._ids())
            return [self.status(TaskState.TASK_STATE_WORKING, note)]
        if kind == "ask_user":
            self.done = True
            asked = question_message(self.task_id, self.context_id, (entry_id, event))
            return [self.status(TaskState.TASK_STATE_INPUT_REQUIRED, asked)]
        if kind == "end":
            self.done = True
            return self._end(entry_id, event)
        return []

    def _ids(self) -> tuple[str, str]:
        return self.task_id, self.context_id

    def _end(self, entry_id: str, event: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self.reply.text:
            out.append(self.artifact(self.reply.text, append=False, last=True))
        status = RunStatus(event.get("status", "failed"))
        message = None
        if status == RunStatus.failed:
            error = str(event.get("error") or "the run failed")
            message = text_message(Role.ROLE_AGENT, error, f"{self.task_id}:error", *self._ids())
        out.append(self.status(STATE_OF[status], message))
        return out
