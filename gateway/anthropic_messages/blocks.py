"""A run's events as Anthropic content blocks: whole (:class:`Blocks`) or streamed.

The answer's ``content`` is the run's output in order: its text, and its thinking when the
request asked to see it, consecutive output of one kind in one block (``thinking`` then
``text`` for a step that thinks first; the text of every step in one block, as the chat face
joins it). A restarted step's output counts once (docs/design.md, invariant 19): the whole
answer drops what a ``restart`` voids, as ``ReplyText`` does; the stream, whose client cannot
take text back, forwards only what is new (``ForwardOnce``, one for the text and one for the
thinking) and ends with an ``error`` event where a restarted step says something else.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from gateway.anthropic_messages.wire import (
    ContentBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    Usage,
    message_id,
    usage_of,
)
from gateway.hub import Hub
from gateway.operations import run_end, run_error, run_events
from gateway.sse import ErrorRender, typed_frame
from walrus_tasks.reply_text import REPLY_RESTARTED, ForwardOnce, Kind, ReplyDiverged, ReplyText


class Blocks(ReplyText):
    """The content of a run's answer, fed its events in order (``feed``); ``content`` at the end.

    ``Blocks(thinking)``: the reply as :class:`ReplyText` keeps it, thinking too if the request
    asked to see it.
    """

    @property
    def content(self) -> list[ContentBlock]:
        """The blocks: consecutive output of one kind joined into one."""
        merged: list[tuple[Kind, str]] = []
        for kind, text in self.parts:
            if merged and merged[-1][0] == kind:
                merged[-1] = (kind, merged[-1][1] + text)
            else:
                merged.append((kind, text))
        return [
            TextBlock(text=text) if kind == "text" else ThinkingBlock(thinking=text)
            for kind, text in merged
        ]


class Forward:
    """What of each event goes out to a stream's client: ``(kind, text)``, or None."""

    def __init__(self, thinking: bool) -> None:
        self.text = ForwardOnce()
        self.thought = ForwardOnce("thinking") if thinking else None

    def feed(self, event: Mapping[str, Any]) -> tuple[Kind, str] | None:
        """The output of ``event`` not yet sent; ReplyDiverged where a restart changed it."""
        kind = event.get("type")
        if kind == "chunk":
            return "text", self.text.feed(event)
        if kind == "thinking":
            if self.thought is None:
                return None
            return "thinking", self.thought.feed(event)
        self.text.feed(event)  # boundaries, restarts and the end: they may end a repeat
        if self.thought is not None:
            self.thought.feed(event)
        return None


def sse_event(kind: str, **fields: Any) -> str:
    """One Anthropic SSE event: ``event: <type>`` and its JSON data."""
    return typed_frame({"type": kind, **fields})


PING = sse_event("ping")
"""The keep-alive sent while a stream is idle: the client skips ``ping`` events."""

_STARTS: dict[Kind, dict[str, str]] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}


def _delta(kind: Kind, text: str) -> dict[str, str]:
    if kind == "text":
        return {"type": "text_delta", "text": text}
    return {"type": "thinking_delta", "thinking": text}


def stream_error(run_id: str) -> ErrorRender:
    """How run ``run_id``'s stream ends with an error: an ``event: error`` the client raises.

    ``{"type": "error", "error": {"type", "message", "code", "run_id"}}``: the client raises
    ``APIStatusError`` with the message. ``overloaded_error`` when Redis stayed away (try
    again), ``api_error`` otherwise.
    """

    def render(code: str, message: str) -> str:
        kind = "overloaded_error" if code == "unavailable" else "api_error"
        error = {"type": kind, "message": message, "code": code, "run_id": run_id}
        return sse_event("error", error=error)

    return render


def message_start(run_id: str, agent: str) -> str:
    """The stream's first event: the message, with no content yet.

    Built here, not in :func:`stream_message`, whose frame lives as long as its stream does
    and would keep the ``Message`` (~1.3 KB a stream, docs/benchmarks.md, issue 25, fifth round).
    """
    head = Message(
        id=message_id(run_id),
        content=[],
        model=agent,
        stop_reason=None,
        usage=Usage(input_tokens=0, output_tokens=0),
    )
    return sse_event("message_start", message=head.model_dump())


async def stream_message(
    hub: Hub, run_id: str, agent: str, thinking: bool
) -> AsyncGenerator[str, None]:
    """The run as Anthropic's stream: ``message_start``, the blocks, ``message_delta``, the stop.

    A block opens (``content_block_start``) where the output's kind changes, and closes before
    the next one or at the end; idle waits send ``ping``. A run that fails or is cancelled
    ends with an ``error`` event instead of ``message_delta`` (Redis away too long too: see
    :func:`gateway.sse.guarded`).
    """
    yield message_start(run_id, agent)
    error = stream_error(run_id)
    forward = Forward(thinking)
    open_kind: Kind | None = None
    index = -1
    end: dict[str, Any] | None = None
    async for _, event in run_events(hub, run_id, "0-0"):
        if event is None:
            yield PING
            continue
        try:
            out = forward.feed(event)
        except ReplyDiverged as e:
            yield error(REPLY_RESTARTED, e.message)
            return
        if out is not None and out[1]:
            kind, text = out
            if kind != open_kind:
                if open_kind is not None:
                    yield sse_event("content_block_stop", index=index)
                index, open_kind = index + 1, kind
                yield sse_event("content_block_start", index=index, content_block=_STARTS[kind])
            yield sse_event("content_block_delta", index=index, delta=_delta(kind, text))
        if event["type"] == "end":
            end = event
    if end is None or end.get("status") != "succeeded":
        yield error(*run_error(run_id, end))
        return
    if open_kind is not None:
        yield sse_event("content_block_stop", index=index)
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    yield sse_event("message_delta", delta=stop, usage=usage_of(end).model_dump())
    yield sse_event("message_stop")


async def collect(
    hub: Hub, run_id: str, thinking: bool
) -> tuple[list[ContentBlock], dict[str, Any] | None]:
    """The run's answer blocks once it has ended, and its ``end`` (None: the run vanished)."""
    blocks = Blocks(thinking)
    end = await run_end(hub, run_id, blocks.feed)
    return blocks.content, end
