"""A walrus run's events as an Agent Protocol stream (``metadata``, ``values``, ``messages``, …).

Each walrus event may become several SSE events; the n-th of entry ``E`` has the id ``E:n``, so
a client that comes back with ``Last-Event-ID`` gets exactly the events it has not seen, even
when it left in the middle of one entry's events (``-1`` replays from the start). The stream
ends with the run's ``end``, or at a question or approval (an interrupt), as a LangGraph run
does; answering it (``command: {resume}``) streams the rest of the same walrus run.

Message chunks cannot be taken back: a step that restarted (its worker was lost) sends no word
twice (``walrus_tasks.reply_text.ForwardOnce``), and where its new text differs from what went
out the stream ends with an ``error`` event (``reply_restarted``).

The run is translated once for every client that follows it with the same modes from the same
point (``gateway.relay``), and written as every event stream of the gateway is
(``gateway.sse.face_stream``):
Redis away longer than ``WALRUS_SSE_REDIS_GRACE`` ends it with ``event: error`` ``{"error":
"unavailable", "message"}`` (:func:`stream_error`), after which the client rejoins the run's
stream with ``Last-Event-ID``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import redis.asyncio as aioredis

from gateway import operations as ops
from gateway import thread_operations as thread_ops
from gateway.agent_protocol import messages
from gateway.hub import Head, Hub
from gateway.relay import Cursor
from gateway.shared_reads import SharedReads
from gateway.sse import ErrorRender
from walrus_tasks.errors import InvalidInput
from walrus_tasks.reply_text import REPLY_RESTARTED, ForwardOnce, ReplyDiverged

MESSAGE_MODES = ("messages-tuple", "messages")
VALUES: SharedReads[dict[str, Any]] = SharedReads()
"""The thread values being read, by ``(run id, event entry id)``: one read per event however
many streams follow the run."""


def resume_point(last_event_id: str | None) -> tuple[str, int]:
    """``(XREAD cursor, sub-events of the cursor's next entry to skip)`` of a Last-Event-ID."""
    if not last_event_id or last_event_id == "-1":
        return "0-0", 0
    entry, _, n = last_event_id.partition(":")
    ms, _, seq = entry.partition("-")
    if not (ms.isdigit() and seq.isdigit() and (n == "" or n.isdigit())):
        raise InvalidInput(f"invalid Last-Event-ID {last_event_id!r}")
    if n == "":
        return entry, 0  # a whole entry: read after it
    # Read the entry itself again (its predecessor is the cursor), skipping what was sent.
    before = f"{ms}-{int(seq) - 1}" if int(seq) > 0 else f"{int(ms) - 1}-18446744073709551615"
    return before, int(n) + 1


class Translator:
    """Turns one run's walrus events into Agent Protocol events, for the given modes."""

    def __init__(self, r: aioredis.Redis, run_id: str, thread: dict[str, str], modes: list[str]):
        self.r, self.run_id, self.modes = r, run_id, set(modes)
        self.thread = thread  # its conversation is the thread's, in its tenant
        self.agent, self.thread_id = thread["agent"], thread["thread_id"]
        self.step = 0
        self.seen = 0
        self.interrupted = False
        self.once = ForwardOnce()
        self.diverged: ReplyDiverged | None = None
        """Set once a restarted step's text differed from what went out: the stream ends."""
        self.history: list[dict[str, Any]] | None = None
        """The thread's history read after the run's end, for the next checkpoint to use."""

    async def catch_up(self, cursor: str) -> None:
        """Count the steps and messages before ``cursor`` (a stream resumed mid-run)."""
        if cursor == "0-0":
            return
        events = await thread_ops.events_through(self.r, self.run_id, cursor)
        self.step = sum(e["type"] == "tools_complete" for e in events)
        self.seen = len((await self._values())["messages"])
        for event in events:  # the text the client has of the current step
            self._forward(event)

    async def _values(self, at: str | None = None) -> dict[str, Any]:
        """The thread's values (as of event entry ``at``, or later).

        With ``at``, read once for every stream of the run that reads them at that event
        (``gateway.shared_reads``).
        """

        async def fetch() -> dict[str, Any]:
            history = await thread_ops.thread_history_async(self.r, self.thread)
            return {"messages": messages.to_langchain(history)}

        if self.history is not None:
            history, self.history = self.history, None
            return {"messages": messages.to_langchain(history)}
        if at is None:
            return await fetch()
        return await VALUES.read((self.run_id, at), fetch)

    def _meta(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "thread_id": self.thread_id, "assistant_id": self.agent,
                "graph_id": self.agent, "langgraph_node": "agent",
                "langgraph_step": self.step}  # fmt: skip

    async def _checkpoint(
        self, at: str | None, extra: dict[str, Any] | None = None
    ) -> list[tuple[str, Any]]:
        """``values`` (the whole state) and ``updates`` (the messages new since the last)."""
        out: list[tuple[str, Any]] = []
        state = await self._values(at)
        new = state["messages"][self.seen :]
        self.seen = len(state["messages"])
        if "values" in self.modes:
            out.append(("values", {**state, **(extra or {})}))
        if "updates" in self.modes and (new or extra):
            for m in new:
                node = "tools" if m["type"] == "tool" else "agent"
                out.append(("updates", {node: {"messages": [m]}}))
            if extra:
                out.append(("updates", extra))
        return out

    def _forward(self, event: dict[str, Any]) -> str:
        """The text of ``event`` new to the client (``ForwardOnce``); notes a divergence."""
        if self.diverged is not None or not self.modes.intersection(MESSAGE_MODES):
            return ""
        try:
            return self.once.feed(event)
        except ReplyDiverged as e:
            self.diverged = e
            return ""

    async def translate(
        self, event: dict[str, Any], at: str | None = None
    ) -> list[tuple[str, Any]]:
        """The Agent Protocol events of one walrus event (``at``: its entry id)."""
        kind = event["type"]
        out: list[tuple[str, Any]] = []
        text = self._forward(event)
        if self.diverged is not None:
            return [self.restarted()]
        if kind == "start":
            out += await self._checkpoint(at)
        elif kind == "chunk" and text:
            chunk = messages.ai_message(text, messages.ai_id(self.run_id, self.step), [])
            chunk["type"] = "AIMessageChunk"
            chunk["tool_call_chunks"] = []
            out.append(("messages", [chunk, self._meta()]))
        elif kind == "tool_result" and self.modes.intersection(MESSAGE_MODES):
            tool = messages.tool_message(
                event["output"], event["call_id"], event["name"], event["is_error"]
            )
            out.append(("messages", [tool, {**self._meta(), "langgraph_node": "tools"}]))
        elif kind == "tools_complete":
            out += await self._checkpoint(at)
            self.step += 1
        elif kind == "ask_user":
            value = {k: v for k, v in event.items() if k not in ("type", "call_id")}
            interrupt = [{"value": value, "id": event.get("call_id", "")}]
            out += await self._checkpoint(at, {"__interrupt__": interrupt})
            self.interrupted = True
        elif kind == "end":
            out += await self._checkpoint(at)
            if event["status"] != "succeeded":
                message = event.get("error") or f"run {event['status']}"
                out.append(("error", {"error": f"run_{event['status']}", "message": message}))
        if "custom" in self.modes and kind not in ("chunk",):
            out.append(("custom", event))
        return out

    def restarted(self) -> tuple[str, Any]:
        """The ``error`` event that ends a stream whose restarted reply diverged."""
        message = self.diverged.message if self.diverged else "the reply restarted"
        return ("error", {"error": REPLY_RESTARTED, "message": message})


FINAL_EVENTS = frozenset({"ask_user", "end"})
"""The events whose checkpoint ``final_values`` answers with: with ``values`` the only mode,
every other event translates to a checkpoint read and dropped, or to nothing."""


def frame(event: str, data: Any, event_id: str | None = None) -> str:
    """One SSE frame."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream_error(thread: dict[str, str], run_id: str) -> ErrorRender:
    """How run ``run_id``'s stream ends when Redis stays away: ``event: error`` with no ``id``.

    ``{"error": code, "message"}``, as a run's own errors, saying how to rejoin it.
    """
    rejoin = (
        f"; rejoin GET /threads/{thread['thread_id']}/runs/{run_id}/stream with Last-Event-ID "
        "set to the id of the last event received"
    )

    def render(code: str, message: str) -> str:
        return frame("error", {"error": code, "message": message + rejoin})

    return render


class _Frames:
    """The Agent Protocol's :class:`gateway.relay.Translation` of one run, for one set of modes.

    From entry ``cursor`` on, the first ``skip`` frames of its next entry left out (a client
    back in the middle of one entry's events); ``metadata`` first unless the client resumes.
    """

    def __init__(self, t: Translator, cursor: str, skip: int, metadata: bool) -> None:
        self.t, self.cursor, self.skip, self.metadata = t, cursor, skip, metadata

    async def opening(self) -> list[str]:
        await self.t.catch_up(self.cursor)
        out = [frame("metadata", {"run_id": self.t.run_id, "attempt": 1})] if self.metadata else []
        if self.t.diverged is not None:  # a client back after the stream ended on it: that end
            out.append(frame(*self.t.restarted()))
        return out

    async def feed(self, entry_id: str, event: dict[str, Any]) -> list[str]:
        out = [
            frame(name, data, f"{entry_id}:{n}")
            for n, (name, data) in enumerate(await self.t.translate(event, entry_id))
            if n >= self.skip
        ]
        self.skip = 0
        return out

    def over(self) -> bool:
        return self.t.interrupted or self.t.diverged is not None

    async def closing(self) -> list[str]:
        return []


def frames(
    hub: Hub,
    r: aioredis.Redis,
    run_id: str,
    thread: dict[str, str],
    modes: list[str],
    last_event_id: str | None = None,
    after: str | None = None,
) -> AsyncGenerator[str, None]:
    """The run's Agent Protocol SSE frames; from ``after`` (an entry id) or ``last_event_id``.

    Read through ``hub`` and translated once for every client that asked the same
    (``gateway.relay``); ``r`` reads the thread's history for its checkpoints. Raises
    :class:`InvalidInput` for a malformed ``last_event_id``.
    """
    cursor, skip = (after, 0) if after else resume_point(last_event_id)
    metadata = not last_event_id or last_event_id == "-1"
    return hub.relays.follow(
        ("agent-protocol", run_id, frozenset(modes), cursor, skip, metadata),
        lambda: ops.run_events(hub, run_id, cursor),
        lambda: _Frames(Translator(r, run_id, thread, modes), cursor, skip, metadata),
        Cursor(),
    )


async def final_values(
    hub: Hub,
    r: aioredis.Redis,
    run_id: str,
    thread: dict[str, str],
    after: str = "0-0",
    *,
    ended: bool = False,
    head: Head | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The thread's values once the run has ended or been interrupted (``runs.wait``, ``join``).

    Only the run's last checkpoint is answered: the thread's history is read at its end (or
    question), not at every ``start`` and ``tools_complete`` the stream passes on the way.
    ``ended``: the run's record was read ended (a join after the run), so its stream is read
    without a subscription, and not read again where ``head`` holds it (``Hub.run_items``).
    ``history``: the thread's, read after the run ended (``thread_joins.join_read``), what
    its checkpoint answers with no read of its own.
    """
    t = Translator(r, run_id, thread, ["values"])
    t.history = history
    await t.catch_up(after)
    result: dict[str, Any] = {}
    async for entry_id, event in ops.run_events(hub, run_id, after, ended=ended, head=head):
        if event is None or event["type"] not in FINAL_EVENTS:
            continue
        for name, data in await t.translate(event, entry_id):
            if name == "values":
                result = data
            elif name == "error":
                result = {**result, "__error__": data}
        if t.interrupted:
            break
    return result or await t._values()
