"""Executing runs: one LLM step per task, each tool call its own task.

::

    drain --> step n --(no tool calls)----------------------> end --> next queued run
                |                                                   (in place in the same
                |                                                   task while its slice
                |                                                   lasts: worker.in_place)
                |
                `--(tool calls)--> tool call x k (in parallel, on walrus.tools)
                                      `-- the last to finish --> step n+1

Every write is a fenced transition of ``walrus_tasks.runs`` (the run state machine), and every
step and tool call is claimed before it runs, so a redelivered or duplicated message does no
double work.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from walrus_tasks import (
    event_types,
    fair,
    ids,
    keys,
    reads,
    runs,
    subscriptions,
    tenancy,
    tracing,
    waits,
)
from walrus_tasks import metrics as shared_metrics
from walrus_tasks.celery_app import send_step, send_tool_call, send_webhook
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.connection import get_redis
from walrus_tasks.errors import Cancelled, LeaseLost, NotFound, WalrusError
from walrus_tasks.lease import Fence, LeaseKeeper, renew
from walrus_tasks.log import bound
from walrus_tasks.runs import acquire
from walrus_tasks.settings import get_settings
from worker import compaction, history_cache, in_place, llm_call, metrics, spans
from worker.chunks import ChunkWriter
from worker.config_cache import agent_for_run, current_config, pinned_json
from worker.context import build_request
from worker.providers import provider_for
from worker.providers.base import StepUsage, TextDelta, ThinkingDelta, ToolCallRequest
from worker.tools import ToolContext, WaitFor, Wake, call_tool, client
from worker.tools.paths import working_directory

log = logging.getLogger("walrus.run")


def _queue_grace(fence: Fence) -> None:
    # Nobody renews the lease while the run's next task waits in its queue: give it the
    # dispatch grace, so a busy queue is not mistaken for a dead worker. The task's keeper
    # shortens it back to the lease TTL as soon as the task begins.
    renew(get_redis(), fence, ttl=get_settings().dispatch_grace)


def dispatch_step(fence: Fence, step: int) -> None:
    """Enqueue step ``step`` of the fenced run."""
    _queue_grace(fence)
    send_step(fence, step)


def redispatch_step(r: redis.Redis, fence: Fence, step: int, claim_id: str, wait: float) -> None:
    """Put step ``step`` back in the queue for ``wait`` seconds, its claim freed.

    One hop of at most ``llm_call.MAX_HOP``; the lease is kept for the wait.
    """
    countdown = llm_call.hop(wait)
    task_id = ids.hex_id()
    if runs.defer(r, fence, step, claim_id, countdown, task_id) == "ok":
        send_step(fence, step, countdown=countdown, task_id=task_id)


def dispatch_tool_call(fence: Fence, step: int, index: int) -> None:
    """Enqueue tool call ``index`` of step ``step``."""
    _queue_grace(fence)
    send_tool_call(fence, step, index)


@dataclass(frozen=True)
class Attempt:
    """One delivery's attempt at an LLM step: what it takes before it claims the step."""

    claim_id: str
    span_id: str
    """Its trace span's id, stored with the claim ('' with tracing off)."""
    started_ns: int
    renewed: float
    """``time.monotonic()`` before the claim renews the lease: its expiry is never earlier."""

    @classmethod
    def new(cls) -> Attempt:
        """An attempt starting now."""
        return cls(ids.hex_id(), tracing.new_span_id(), spans.now_ns(), time.monotonic())


@dataclass(frozen=True)
class Drained:
    """What a drain took (``runs.Acquired``), and the attempt at the step 0 it may have claimed."""

    acquired: runs.Acquired
    attempt: Attempt


def drain(agent: str, sender: str) -> Drained | None:
    """Start the next conversation the fair dispatcher picks (maybe not ``agent``/``sender``).

    Takes the picked conversation's lease and its next queued run; the caller runs its first
    step (``start``). When that is a run of the drain's own conversation, its step 0 is
    claimed in the same round trip (``runs.acquire``'s ``first``). The result also names an
    orphan of the drain's own conversation (an active run whose lease expired with its worker)
    for the caller to take over; that conversation's next message waits until the orphan has
    ended. None: nothing to do.
    """
    attempt, first = _step_0_claim(agent, keys.cid(agent, sender))
    acquired = acquire(get_redis(), agent, sender, fair.shares(current_config()), first=first)
    return None if acquired is None else Drained(acquired, attempt)


def _step_0_claim(agent: str, cid: str) -> tuple[Attempt, runs.StepClaim]:
    """An attempt at a run's step 0 claimed by the script that starts the run: what it brings."""
    attempt = Attempt.new()
    held = history_cache.held(cid)
    return attempt, runs.StepClaim(attempt.claim_id, pinned_json(agent), held, attempt.span_id)


def start(drained: Drained) -> None:
    """Run the first step of the run a drain started, here in the drain's task."""
    acquired = drained.acquired
    if acquired.run_id is None:
        return
    fence = Fence(acquired.agent, acquired.sender, acquired.run_id, acquired.token)
    begun = None if acquired.begun is None else (drained.attempt, acquired.begun)
    with bound(agent=acquired.agent, sender=acquired.sender, run_id=acquired.run_id):
        run_step(fence, 0, begun=begun)


def must_emit(
    r: redis.Redis, fence: Fence, event: event_types.RunEvent, *more: event_types.RunEvent
) -> str:
    """Append fenced events; LeaseLost if another holder took the conversation over.

    (``runs.emit`` returns None instead, for callers that have nothing left to abandon.)
    """
    entry = runs.emit(r, fence, event, *more)
    if entry is None:
        raise LeaseLost(f"run {fence.run_id}: lease lost while emitting {event['type']}")
    return entry


@dataclass
class StepOutput:
    """What one LLM call produced so far (kept when the call is interrupted)."""

    text: list[str] = field(default_factory=list)
    calls: list[ToolCallRequest] = field(default_factory=list)
    usage: tuple[int, int] = (0, 0)
    text_open: bool = False
    start_held: bool = False
    """``text_start`` is due, written with the text's first chunk (``_chunk_events``)."""
    closing: list[event_types.RunEvent] = field(default_factory=list)
    """What closes a finished call's text (its last chunk, ``text_end``): written by the
    step's commit, in the same round trip (``_close_text`` writes it on any other way out)."""
    streamed: bool = False
    """Whether the call emitted any output (text or thinking) so far."""
    writer: ChunkWriter | None = None
    """Writes the text as ``chunk`` events, coalesced (:mod:`worker.chunks`)."""

    def clear(self) -> None:
        """Forget a failed call's output (it is made again)."""
        self.text, self.calls, self.usage, self.streamed = [], [], (0, 0), False


@metrics.timed_step
def run_step(
    fence: Fence,
    step: int,
    task_id: str = "",
    begun: tuple[Attempt, runs.StepStart] | None = None,
) -> runs.Begin:
    """Execute step ``step`` of a run: stream the LLM call, then finish or dispatch tools.

    ``task_id``: the step message's id ('' for the drain's step 0). ``begun``: the step's
    claim, already made (the drain's, ``drain``); else it is claimed here. Returns how the
    claim went: ``busy`` means another delivery holds the step's claim (alive, or dead and not
    yet expired); the task retries after a lease TTL.
    """
    r = get_redis()
    if begun is None:
        attempt = Attempt.new()
        claimed = runs.begin_step(
            r, fence, step, attempt.claim_id, pinned_json(fence.agent) if step == 0 else "",
            history_cache.held(fence.cid), task_id, attempt.span_id,
        )  # fmt: skip
    else:
        attempt, claimed = begun
    state = claimed.state
    if state != "ok":
        log.info("step %d not executed: %s", step, state)
        return state
    with spans.invoke_agent(fence, step, claimed.record, attempt.span_id, attempt.started_ns):
        _execute_step(r, fence, step, claimed, attempt.claim_id, attempt.renewed)
    return state


def _execute_step(
    r: redis.Redis, fence: Fence, step: int, begun: runs.StepStart, claim_id: str, renewed: float
) -> None:
    """The claimed step's LLM call, then its end or its tool calls (``run_step``)."""
    out = StepOutput()
    model = "unknown"
    deferred: llm_call.Deferred | None = None
    record = begun.record
    with LeaseKeeper(
        r, fence, keys.run_part(fence.run_id, "claim"), claim_id,
        renewed_at=renewed, cancelled=begun.cancelled,
    ) as keeper:  # fmt: skip
        try:
            agent = agent_for_run(r, fence.agent, fence.run_id, record)
            config = current_config()
            model = agent.model
            keeper.check()
            if record.get("kind") == "compact":
                history_cache.forget(fence.cid)
                compaction.compact(r, fence, agent, config, keeper)
                finish(r, fence, "succeeded")
                return
            if step >= agent.max_iterations:
                budget = f"{event_types.STEP_BUDGET}: max_iterations={agent.max_iterations}"
                finish(r, fence, "failed", budget)
                return
            history, tokens = history_cache.history(
                fence.cid, begun.history_len, begun.history_from, begun.history_tail or [],
                begun.epoch,
            )  # fmt: skip
            if begun.steering:  # queued by a client since the last step: into history first
                if runs.inject_steering(r, fence) < 0:
                    raise LeaseLost(f"run {fence.run_id}: lease lost while steering")
                history, tokens = history_cache.reread(r, fence.cid)
            if step == 0 and tokens > agent.compact_threshold:
                compaction.compact(r, fence, agent, config, keeper, keep=1)
                history, tokens = history_cache.reread(r, fence.cid)
            cwd = run_cwd(agent, config, record)
            model = _call_llm(
                r, fence, step, agent, config, record, (history, tokens, begun.memories), cwd,
                keeper, out,
            )  # fmt: skip
        except llm_call.Deferred as d:
            log.info("step %d deferred %.2f s: %s", step, d.delay, d.why)
            tracing.event("deferred", {"walrus.delay_s": d.delay, "walrus.reason": d.why})
            deferred = d
        except LeaseLost as e:
            log.warning("%s; leaving the run to the new holder", e.message)
            return
        except Cancelled:
            _close_text(r, fence, out)
            partial = "".join(out.text)
            message = _assistant(fence, partial, []) if partial else None
            _commit(r, fence, out, step, message, "cancelled", [], out.usage, model)
            finish(r, fence, "cancelled")
            return
        except NotFound as e:
            finish(r, fence, "failed", e.message)
            return
        except redis.RedisError:
            raise  # transient: the task retries; the persisted state is intact
        except Exception as e:
            # A pipeline never dies of a failed step: the run fails, the worker carries on.
            log.exception("step %d failed", step)
            error = e.message if isinstance(e, WalrusError) else f"{type(e).__name__}: {e}"
            tracing.set_error(error, type(e).__name__)
            _close_text(r, fence, out)
            finish(r, fence, "failed", error)
            return
    if deferred is not None:  # after the keeper stopped: nothing renews the lease over the wait
        redispatch_step(r, fence, step, claim_id, deferred.delay)
        return
    text = "".join(out.text)
    calls: list[event_types.ToolCall] = [
        {"id": c.id, "name": c.name, "arguments": c.arguments} for c in out.calls
    ]
    if calls:
        if _commit(
            r, fence, out, step, _assistant(fence, text, calls), "tools", calls, out.usage, model
        ):
            must_emit(r, fence, event_types.tool_start(calls))
            _queue_grace(fence)  # once for all the calls
            for i in range(len(calls)):
                send_tool_call(fence, step, i)
    else:  # the last step: committed as the run ends, in the same round trip
        final = runs.FinalStep(step, _assistant(fence, text, []), out.usage, model, out.closing)
        finish(r, fence, "succeeded", record=committed(record, out.usage, model), final=final)


def committed(record: dict[str, str], usage: tuple[int, int], model: str) -> dict[str, str]:
    """The run record as ``commit.lua`` leaves it, from the one read when the step began.

    Nothing else writes these fields of a run while its step holds the claim.
    """
    return record | {
        "input_tokens": str(int(record.get("input_tokens", 0)) + usage[0]),
        "output_tokens": str(int(record.get("output_tokens", 0)) + usage[1]),
        "model": model,
    }


def _call_llm(
    r: redis.Redis,
    fence: Fence,
    step: int,
    agent: AgentConfig,
    config: Config,
    record: dict[str, str],
    context: tuple[list[dict[str, Any]], int, bool],
    cwd: Path,
    keeper: LeaseKeeper,
    out: StepOutput,
) -> str:
    """Stream the step's answer into ``out`` (retried, limited: ``llm_call``); the model.

    ``context``: the history, its estimated tokens, and whether the agent has memories.
    """
    history, estimate, memories = context
    offered = [t.spec for t in client.of_run(agent, record).values()]

    def stream(member: AgentConfig) -> tuple[int, int]:
        tenant = tenancy.tenant_of(fence.sender)
        request = build_request(r, member, config, history, cwd, memories, tenant, offered)
        for item in provider_for(member, config).stream(request, keeper.wait):
            keeper.check()
            if isinstance(item, TextDelta):
                if not item.text:
                    continue
                if not out.text_open:
                    out.text_open = out.streamed = out.start_held = True
                if out.writer is None:
                    out.writer = ChunkWriter(
                        lambda text: must_emit(r, fence, *_chunk_events(out, text)),
                        get_settings().chunk_flush_ms,
                    )
                out.writer.add(item.text)
                out.text.append(item.text)
            elif isinstance(item, ThinkingDelta):
                if out.writer is not None:
                    out.writer.flush()
                out.streamed = True
                must_emit(r, fence, event_types.thinking(item.text))
            elif isinstance(item, ToolCallRequest):
                out.calls.append(item)
            elif isinstance(item, StepUsage):
                out.usage = (item.input_tokens, item.output_tokens)
        out.closing = _closing_events(out)  # written by the commit
        return out.usage

    def traced(member: AgentConfig) -> tuple[int, int]:
        with spans.chat(member, config, history):
            usage = stream(member)
            spans.answered(usage, out.text, out.calls)
            return usage

    def reset() -> None:
        _close_text(r, fence, out)
        out.clear()

    # Tracing off: the bare stream, so a call pays nothing for spans (walrus_tasks.tracing).
    return llm_call.call(
        r, fence, step, agent, config, record, keeper, estimate,
        traced if tracing.enabled() else stream, lambda: out.streamed, reset,
    )  # fmt: skip


def _chunk_events(out: StepOutput, text: str) -> list[event_types.RunEvent]:
    # ``text_start`` waits for the text's first chunk, so both take one round trip.
    events: list[event_types.RunEvent] = []
    if out.start_held:
        out.start_held = False
        events.append(event_types.text_start())
    events.append(event_types.chunk(text))
    return events


def _closing_events(out: StepOutput) -> list[event_types.RunEvent]:
    # The held text and ``text_end``, to go out in one round trip.
    held = out.writer.take() if out.writer is not None else ""
    events = [*out.closing, *(_chunk_events(out, held) if held else [])]
    out.closing = []
    if out.text_open:
        out.text_open = False
        events.append(event_types.text_end())
    return events


def _close_text(r: redis.Redis, fence: Fence, out: StepOutput) -> None:
    events = _closing_events(out)
    if any(e["type"] == "chunk" for e in events):
        must_emit(r, fence, *events)
    elif events:
        runs.emit(r, fence, *events)


def _assistant(fence: Fence, text: str, calls: list[event_types.ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "run_id": fence.run_id}
    if calls:
        message["tool_calls"] = calls
    return message


def _commit(
    r: redis.Redis,
    fence: Fence,
    out: StepOutput,
    step: int,
    message: dict[str, Any] | None,
    next_phase: Any,
    calls: list[event_types.ToolCall],
    usage: tuple[int, int],
    model: str,
) -> bool:
    state = runs.commit(r, fence, step, message, next_phase, calls, usage, model, out.closing)
    out.closing = []
    if state != "ok":
        log.warning("step %d not committed: %s", step, state)
    return state == "ok"


def run_cwd(agent: AgentConfig, config: Config, record: dict[str, str]) -> Path:
    """The run's working directory (``cwd`` given on send, else the agent's default).

    In the run's tenant's subfolder of the agent's directory (``walrus_tasks.workspace``).
    """
    tenant = tenancy.tenant_of(record.get("sender", ""))
    return working_directory(agent, config, record.get("cwd", ""), tenant)


def finish(
    r: redis.Redis,
    fence: Fence,
    status: event_types.EndStatus,
    error: str = "",
    record: dict[str, str] | None = None,
    final: runs.FinalStep | None = None,
) -> None:
    """End the run with ``end{status}``; start the conversation's next run, if any.

    ``record``: the run record as it is now, if the caller has it (else it is read); with
    ``final`` (the run's last step, committed in the same step), as that commit leaves it.
    """
    if record is None:
        record = reads.run_record(r, fence.run_id)
    usage: event_types.Usage = {
        "input_tokens": int(record.get("input_tokens", 0)),
        "output_tokens": int(record.get("output_tokens", 0)),
    }
    end = event_types.end(status, usage, record.get("model") or None, error)
    result = None
    if record.get("parent_run"):
        # A last step committed with the end is not in history yet: its text is the run's last.
        said = final.message.get("content") if final else None
        text = said or subscriptions.final_text(r, fence.agent, fence.sender, fence.run_id)
        result = {
            "agent": fence.agent,
            "run_id": fence.run_id,
            "status": status,
            "result": text if status == "succeeded" else None,
            "error": None if status == "succeeded" else (error or status),
        }
    figure = shared_metrics.run_figure(
        fence.agent, status, shared_metrics.run_seconds(record.get("started_at"))
    ) + shared_metrics.tenant_figure(
        tenancy.tenant_of(fence.sender), status, usage["input_tokens"], usage["output_tokens"]
    )
    # The next run's step 0, if one starts, claimed for this task to run in place.
    attempt, first = _step_0_claim(fence.agent, fence.cid) if in_place.wants() else (None, None)
    done = runs.finish(
        r, fence, status, end, error, result, figure=figure,
        subscriptions=keys.subs_source(subscriptions.done_source(fence.agent)), final=final,
        first=first,
    )  # fmt: skip
    if done.state != "ended":
        if final is not None:
            log.warning("step %d not committed: %s", final.step, done.state)
        log.warning("run not ended (%s)", done.state)
        return
    log.info("run %s", status, extra={"status": status})
    if done.next_run:  # finish.lua gave the lease the dispatch grace
        next_run = Fence(fence.agent, fence.sender, done.next_run, fence.token)
        begun = None if attempt is None or done.begun is None else (attempt, done.begun)
        if not in_place.take(next_run, begun):
            send_step(next_run, 0)
    if parent := done.parent_wake:
        waits.dispatch_wake(parent.agent, parent.sender, parent.run_id, parent.woken)
    if record.get("webhook"):
        _send_webhook(fence.run_id)
    if record.get("kind") != "compact" and done.done_subscriptions:
        _publish_done(r, fence)


def run_taken(held: in_place.Slice) -> None:
    """Run the next runs the task took (``in_place``), each after the one that ended before it.

    A step that fails here (a Redis error, a time limit) is sent as a task of its own, which
    retries it or finds it done, as a redelivered step task would; so is a step 0 another
    delivery holds (``busy``), as a task would come back for it.
    """
    while held.taken is not None:
        fence, begun = held.taken
        held.taken = None
        with bound(agent=fence.agent, sender=fence.sender, run_id=fence.run_id):
            try:
                state = run_step(fence, 0, begun=begun)
            except BaseException:
                in_place.send_queued(fence)
                raise
        if state == "ok":
            held.ran.append(fence.run_id)
        elif state == "busy":
            in_place.send_queued(fence)


def _send_webhook(run_id: str) -> None:
    """Send the ended run's webhook; if that fails, the reaper sends it after its hold."""
    try:
        send_webhook(run_id)
    except Exception:  # the run has ended; its webhook waits in the outbox (webhooks.py)
        log.exception("webhook task of run %s not sent; the reaper will send it", run_id)


def _publish_done(r: redis.Redis, fence: Fence) -> None:
    """Publish ``agent:<name>:done`` with the run's final text; a failure never fails the run."""
    try:
        fired = subscriptions.publish_done(r, fence.agent, fence.sender, fence.run_id)
    except Exception:  # the run has ended: the bus is best effort from here
        log.exception("publishing %s failed", subscriptions.done_source(fence.agent))
        return
    if fired:
        log.info("%s fired %s", subscriptions.done_source(fence.agent), ", ".join(fired))


MAX_WAKES = 4
"""Waits one call may take in a row within one delivery (an approval, then its own wait)."""


def _call_with_waits(
    r: redis.Redis,
    fence: Fence,
    step: int,
    call: dict[str, Any],
    agent: AgentConfig,
    keeper: LeaseKeeper,
    record: dict[str, str],
) -> tuple[str, bool] | None:
    """Run the call; when it must wait, park the run. None once parked (the worker is free)."""
    config = current_config()
    cwd = run_cwd(agent, config, record)
    client_tools = client.of_run(agent, record)
    for _ in range(MAX_WAKES):
        stored = runs.wake_of(r, fence.run_id, call["id"])
        wake = Wake(**stored) if stored else None
        if wake is not None:
            spans.resumed(wake.wait, wake.kind, wake.since)
        ctx = ToolContext(
            agent=agent,
            config=config,
            sender=fence.sender,
            run_id=fence.run_id,
            call_id=call["id"],
            redis=r,
            cwd=cwd,
            pause=keeper.wait,
            cancelled=lambda: keeper.cancelled.is_set() or keeper.lost.is_set(),
            wake=wake,
            lost=keeper.lost.is_set,
            lease_expires=lambda: keeper.expires_at,
        )
        try:
            return call_tool(call["name"], call["arguments"], ctx, client=client_tools)
        except WaitFor as w:
            keeper.check()
            event: event_types.AskUser | None = None
            if w.event:
                event = {**w.event, "call_id": call["id"]}
            parked = runs.wait_begin(r, fence, step, call["id"], w.kind, w.timeout, event, w.data)
            if parked == "fenced":
                raise LeaseLost(f"run {fence.run_id}: lease lost while parking") from None
            spans.waits(w.kind, w.timeout)
            if parked != "woken":
                log.info("tool %s waits (%s, %s)", call["name"], w.kind, parked)
                return None
    return f"tool {call['name']} waited {MAX_WAKES} times in a row; giving up", True


def run_tool_call(fence: Fence, step: int, index: int) -> runs.Begin:
    """Execute one tool call of a step; the last of the step's calls starts the next step.

    Returns how the claim went, as ``run_step`` does.
    """
    r = get_redis()
    try:
        record = reads.run_record(r, fence.run_id)
    except NotFound:
        return "stale"
    calls: list[dict[str, Any]] = json.loads(record.get("calls") or "[]")
    if index >= len(calls):
        return "stale"
    call = calls[index]
    claim_key = keys.run_call(fence.run_id, "claim", call["id"])
    claim_id = ids.hex_id()
    state = runs.begin(r, fence, step, "tools", claim_id, call_id=call["id"])
    if state != "ok":
        return state
    with spans.execute_tool(fence, step, record, call):
        _execute_call(r, fence, step, call, record, (claim_key, claim_id))
    return state


def _execute_call(
    r: redis.Redis,
    fence: Fence,
    step: int,
    call: dict[str, Any],
    record: dict[str, str],
    claim: tuple[str, str],
) -> None:
    """The claimed call, its result recorded; the last of the step's starts the next step."""
    claim_key, claim_id = claim
    started = time.monotonic()
    with LeaseKeeper(r, fence, claim_key, claim_id) as keeper:
        try:
            keeper.check()
            agent = agent_for_run(r, fence.agent, fence.run_id, record)
            with bound(tool=call["name"]):
                outcome = _call_with_waits(r, fence, step, call, agent, keeper, record)
            if outcome is None:
                return  # parked: the wake dispatches this call again
            output, is_error = outcome
        except Cancelled:
            output, is_error = "cancelled", True
        except LeaseLost:
            return
        except Exception as e:
            log.exception("tool %s failed", call["name"])
            output, is_error = f"{type(e).__name__}: {e}", True
    spans.tool_result(output, is_error)
    duration_ms = int((time.monotonic() - started) * 1000)
    metrics.tool_called(call["name"], time.monotonic() - started, is_error)
    result = event_types.tool_result(call["id"], call["name"], output, is_error, duration_ms)
    # The event goes out before the result is recorded, so every tool_result precedes
    # tools_complete (emitted by whichever call records last).
    if runs.emit(r, fence, result) is None:
        return
    message = {
        "role": "tool",
        "tool_call_id": call["id"],
        "name": call["name"],
        "content": output,
        "is_error": is_error,
        "run_id": fence.run_id,
    }
    recorded = runs.record_tool_result(r, fence, step, call["id"], message)
    if recorded == "pending":
        _queue_grace(fence)  # sibling calls may still be waiting in the tools queue
    elif recorded == "complete" and runs.emit(r, fence, event_types.tools_complete()) is not None:
        dispatch_step(fence, step + 1)
