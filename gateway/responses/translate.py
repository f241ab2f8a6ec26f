"""One response, read from its run's events: the numbered stream events, and the object.

:class:`Translator` is fed the run's events after the response's starting point, in order, and
turns them into Responses stream events, each with the next ``sequence_number`` (0 is
``response.created``). It reads nothing else, so the events and their numbers are a function
of the run's events alone: a client that comes back with ``starting_after=N`` is given the
same events from ``N + 1`` on, with no gap and no duplicate. What maps to what:

- ``start``: ``response.in_progress`` (a new run's response is ``queued`` until then);
- ``chunk``: a ``message`` item (``output_item.added``, ``content_part.added``, then one
  ``output_text.delta`` each), closed by ``text_end`` or by the next event of another kind
  (``output_text.done``, ``content_part.done``, ``output_item.done``);
- ``thinking``: a ``reasoning`` item the same way (``reasoning_text.delta``/``.done``);
- ``tool_start``: per call, a ``function_call`` item when the call is of a client function tool
  (added and done at once, its arguments in one ``function_call_arguments.delta``), else an
  ``mcp_call`` item (``server_label: "walrus"``, ``mcp_call.in_progress``) that its
  ``tool_result`` completes (``mcp_call.completed`` or ``.failed``, then ``output_item.done``);
- ``ask_user`` of kind ``client_tool``: once every client call of the step has one and the
  step's own calls have their results, the response is ``completed`` and stops there (its
  ``stop`` entry id is where the next response of the run starts);
- ``end``: ``response.completed`` (succeeded), ``response.incomplete`` (failed on the step
  budget), ``response.failed`` (failed; and cancelled, with status ``cancelled``).

A step that restarted sends no word twice (``walrus_tasks.reply_text.ForwardOnce``, for the
text and the thinking apart); where its new text differs from what went out the response
fails with ``reply_restarted`` (the run goes on, its reply in the conversation's history), and
where its new thinking differs the rest of that attempt's thinking is left out.
Questions and approvals (``ask_user`` of the agent's own) are not mapped: the response stays
``in_progress`` while the run waits for their answer over the native routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.operations import run_error
from gateway.response_operations import ResponseView
from gateway.responses.models import (
    TERMINAL,
    ConversationRef,
    FunctionCallItem,
    FunctionTool,
    IncompleteDetails,
    ItemStatus,
    McpCallItem,
    MessageItem,
    OutputItem,
    OutputText,
    ReasoningItem,
    ReasoningText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
    Status,
)
from walrus_tasks.event_types import STEP_BOUNDARY, STEP_BUDGET
from walrus_tasks.reply_text import REPLY_RESTARTED, ForwardOnce, ReplyDiverged

Event = dict[str, Any]
NO_NAMES: frozenset[str] = frozenset()
"""The client function names of a response that offered none (one shared empty set)."""
KEEP_OPEN = frozenset({"text_start", "restart", "retry"})
"""Events that leave an open message or reasoning item open (a restarted step goes on in it)."""


def usage_of(end: Mapping[str, Any]) -> ResponseUsage:
    """The usage of an ``end`` event."""
    usage = end.get("usage") or {}
    i, o = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return ResponseUsage(input_tokens=i, output_tokens=o, total_tokens=i + o)


class Translator:
    """The response of ``view``, fed its run's events (``feed``); ``snapshot()`` at any point."""

    def __init__(self, view: ResponseView) -> None:
        self.view = view
        self.seq = -1
        self.status: Status = "in_progress" if view.n else "queued"
        self.output: list[OutputItem] = []
        self.usage: ResponseUsage | None = None
        self.error: ResponseError | None = None
        self.incomplete: IncompleteDetails | None = None
        self.completed_at: int | None = None
        self.stop: str | None = None
        """The entry id of the event the response ended at."""
        self.pending: list[str] = []
        """The client function calls it stopped at (their call ids)."""
        self.client_names = frozenset(str(t["name"]) for t in view.tools) or NO_NAMES
        self._text, self._thinking = ForwardOnce(), ForwardOnce("thinking")
        self._mute = False
        """A restarted step's thinking differed: the rest of it is dropped."""
        self._message: MessageItem | None = None
        self._reasoning: ReasoningItem | None = None
        self._tools: dict[str, McpCallItem] = {}
        """The agent's own calls of the step waiting for their result."""
        self._client: dict[str, FunctionCallItem] = {}
        """The client calls of the step."""
        # Dicts as sets: an empty dict holds no table (64 B), an empty set 216 B, for as long
        # as the response's stream is open.
        self._asked: dict[str, None] = {}
        self._seen: dict[str, None] = {}

    @property
    def terminal(self) -> bool:
        """Whether the response has ended."""
        return self.status in TERMINAL

    # --- the object ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The response object as it stands."""
        v = self.view
        return ResponseObject(
            id=v.id, created_at=v.created_at, completed_at=self.completed_at, status=self.status,
            model=v.agent, output=[item.model_copy(deep=True) for item in self.output],
            usage=self.usage, error=self.error, incomplete_details=self.incomplete,
            instructions=v.instructions, metadata=v.metadata,
            previous_response_id=v.previous_response_id,
            conversation=ConversationRef(id=v.conversation) if v.conversation else None,
            background=v.background, store=v.store,
            tools=[FunctionTool.model_validate(t) for t in v.tools],
        ).model_dump(mode="json")  # fmt: skip

    # --- the events ---------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq, **fields}

    def _lifecycle(self, kind: str) -> Event:
        return self._event(kind, response=self.snapshot())

    def _item_event(self, kind: str, item: OutputItem) -> Event:
        index = self.output.index(item)
        return self._event(kind, output_index=index, item=item.model_dump(mode="json"))

    def _add(self, item: OutputItem) -> Event:
        self.output.append(item)
        return self._item_event("response.output_item.added", item)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self.view.tag}_{len(self.output)}"

    def opening(self) -> list[Event]:
        """The events before any of the run's: ``response.created`` (and ``in_progress``)."""
        out = [self._lifecycle("response.created")]
        if self.status == "in_progress":  # a later response of a run that is going on
            out.append(self._lifecycle("response.in_progress"))
        return out

    def feed(self, entry_id: str, event: Mapping[str, Any]) -> list[Event]:
        """The stream events of the run's next event (entry ``entry_id``)."""
        if self.terminal:
            return []
        kind = event.get("type")
        try:
            text = self._text.feed(event) if kind != "thinking" else ""
        except ReplyDiverged as e:
            error = ResponseError(code=REPLY_RESTARTED, message=e.message)
            return self._finish(entry_id, "failed", "response.failed", error=error)
        thought = self._thought(event)
        out: list[Event] = []
        if kind == "start":
            if self.status == "queued":
                self.status = "in_progress"
                out.append(self._lifecycle("response.in_progress"))
        elif kind == "chunk":
            if text:
                out += self._close_reasoning("completed") + self._say(text)
        elif kind == "thinking":
            if thought:
                out += self._close_message("completed") + self._think(thought)
        elif kind == "text_end":
            out += self._close_message("completed")
        elif kind not in KEEP_OPEN:
            cut = kind == "end" and event.get("status") != "succeeded"
            ended: ItemStatus = "incomplete" if cut else "completed"
            out += self._close_message(ended) + self._close_reasoning(ended)
            if kind == "tool_start":
                out += self._calls(event.get("calls") or [])
            elif kind == "tool_result":
                out += self._result(event)
            elif kind == "ask_user" and event.get("kind") == "client_tool":
                if event.get("call_id") in self._client:
                    self._asked[str(event["call_id"])] = None
            elif kind == "end":
                return out + self._end(entry_id, event)
        if self._client and self._asked.keys() >= self._client.keys() and not self._tools:
            self.pending = list(self._client)
            out += self._finish(entry_id, "completed", "response.completed")
        return out

    def _thought(self, event: Mapping[str, Any]) -> str:
        """The thinking of ``event`` new to the client ('' for none).

        A restarted step's thinking that differs from what went out drops the rest of that
        attempt's thinking (until the step's next boundary): thinking never fails a response.
        """
        kind = event.get("type")
        if kind in STEP_BOUNDARY or kind == "end":
            self._mute = False
        if kind == "chunk" or self._mute:
            return ""
        try:
            return self._thinking.feed(event)
        except ReplyDiverged:
            self._thinking = ForwardOnce("thinking")
            self._mute = kind == "thinking"
            return ""

    def lost(self) -> list[Event]:
        """The events that end a response whose run's events ended without its end."""
        if self.terminal:
            return []
        message = f"run {self.view.run_id} ended without an end event (its events expired?)"
        error = ResponseError(code="run_lost", message=message)
        return self._finish(None, "failed", "response.failed", error=error)

    # --- text and thinking --------------------------------------------------------------------

    def _say(self, text: str) -> list[Event]:
        out = []
        item = self._message
        if item is None:
            item = self._message = MessageItem(id=self._id("msg"))
            out.append(self._add(item))
            item.content.append(OutputText())
            out.append(self._part_event("response.content_part.added", item, OutputText()))
        item.content[0].text += text
        out.append(self._delta("response.output_text.delta", item, text, logprobs=[]))
        return out

    def _think(self, text: str) -> list[Event]:
        out = []
        item = self._reasoning
        if item is None:
            item = self._reasoning = ReasoningItem(id=self._id("rs"))
            out.append(self._add(item))
            item.content.append(ReasoningText())
            out.append(self._part_event("response.content_part.added", item, ReasoningText()))
        item.content[0].text += text
        out.append(self._delta("response.reasoning_text.delta", item, text))
        return out

    def _part_event(
        self, kind: str, item: MessageItem | ReasoningItem, part: OutputText | ReasoningText
    ) -> Event:
        index = self.output.index(item)
        return self._event(kind, item_id=item.id, output_index=index, content_index=0,
                           part=part.model_dump(mode="json"))  # fmt: skip

    def _delta(self, kind: str, item: OutputItem, delta: str, **extra: Any) -> Event:
        index = self.output.index(item)
        return self._event(kind, item_id=item.id, output_index=index, content_index=0,
                           delta=delta, **extra)  # fmt: skip

    def _close_message(self, status: ItemStatus) -> list[Event]:
        item, self._message = self._message, None
        if item is None:
            return []
        part, index = item.content[0], self.output.index(item)
        item.status = status
        return [
            self._event("response.output_text.done", item_id=item.id, output_index=index,
                        content_index=0, text=part.text, logprobs=[]),
            self._part_event("response.content_part.done", item, part),
            self._item_event("response.output_item.done", item),
        ]  # fmt: skip

    def _close_reasoning(self, status: ItemStatus) -> list[Event]:
        item, self._reasoning = self._reasoning, None
        if item is None:
            return []
        part, index = item.content[0], self.output.index(item)
        item.status = status
        return [
            self._event("response.reasoning_text.done", item_id=item.id, output_index=index,
                        content_index=0, text=part.text),
            self._part_event("response.content_part.done", item, part),
            self._item_event("response.output_item.done", item),
        ]  # fmt: skip

    # --- tool calls ---------------------------------------------------------------------------

    def _calls(self, calls: list[Mapping[str, Any]]) -> list[Event]:
        """A step's calls: client ones done at once, the agent's own open until their result."""
        self._client, self._asked = {}, {}
        out = []
        for call in calls:
            call_id, name = str(call.get("id", "")), str(call.get("name", ""))
            if call_id in self._seen:
                continue  # a tool_start seen twice (a step committed, then re-announced)
            self._seen[call_id] = None
            arguments = json.dumps(call.get("arguments") or {}, ensure_ascii=False)
            if name in self.client_names:
                fc = FunctionCallItem(id=self._id("fc"), call_id=call_id, name=name,
                                      arguments="", status="in_progress")  # fmt: skip
                out.append(self._add(fc))
                index = self.output.index(fc)
                out.append(self._event("response.function_call_arguments.delta", item_id=fc.id,
                                       output_index=index, delta=arguments))  # fmt: skip
                fc.arguments, fc.status = arguments, "completed"
                out.append(self._event("response.function_call_arguments.done", item_id=fc.id,
                                       output_index=index, arguments=arguments))  # fmt: skip
                out.append(self._item_event("response.output_item.done", fc))
                self._client[call_id] = fc
            else:
                mcp = McpCallItem(id=self._id("mcp"), name=name, arguments=arguments)
                self._tools[call_id] = mcp
                out.append(self._add(mcp))
                out.append(self._event("response.mcp_call.in_progress", item_id=mcp.id,
                                       output_index=self.output.index(mcp)))  # fmt: skip
        return out

    def _result(self, event: Mapping[str, Any]) -> list[Event]:
        """An agent call's result (a client call's, echoed after its answer, shows nothing)."""
        mcp = self._tools.pop(str(event.get("call_id", "")), None)
        if mcp is None:
            return []
        output = str(event.get("output", ""))
        if event.get("is_error"):
            mcp.status, mcp.error = (
                "failed",
                {"type": "mcp_tool_execution_error", "content": output},
            )
            kind = "response.mcp_call.failed"
        else:
            mcp.status, mcp.output = "completed", output
            kind = "response.mcp_call.completed"
        index = self.output.index(mcp)
        return [
            self._event(kind, item_id=mcp.id, output_index=index),
            self._item_event("response.output_item.done", mcp),
        ]

    # --- the end ------------------------------------------------------------------------------

    def _end(self, entry_id: str, end: Mapping[str, Any]) -> list[Event]:
        self.usage = usage_of(end)
        status = end.get("status")
        if status == "succeeded":
            return self._finish(entry_id, "completed", "response.completed")
        code, message = run_error(self.view.run_id, end)
        if status == "failed" and message.startswith(STEP_BUDGET):
            self.incomplete = IncompleteDetails(reason="max_iterations")
            return self._finish(entry_id, "incomplete", "response.incomplete")
        error = ResponseError(code=code, message=message)
        ended: Status = "cancelled" if status == "cancelled" else "failed"
        return self._finish(entry_id, ended, "response.failed", error=error)

    def _finish(
        self, entry_id: str | None, status: Status, kind: str, error: ResponseError | None = None
    ) -> list[Event]:
        """End the response at ``entry_id``: open items closed, then its ``kind`` event."""
        ended: ItemStatus = "completed" if status == "completed" else "incomplete"
        out = self._close_message(ended) + self._close_reasoning(ended)
        for mcp in self._tools.values():  # calls the run ended without (cancelled mid-tool)
            mcp.status = "incomplete"
            out.append(self._item_event("response.output_item.done", mcp))
        self._tools = {}
        self.status, self.error, self.stop = status, error, entry_id
        if entry_id is not None:
            self.completed_at = int(entry_id.partition("-")[0]) // 1000
        return [*out, self._lifecycle(kind)]
