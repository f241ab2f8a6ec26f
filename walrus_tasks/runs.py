"""The run state machine: every transition of a run, each one atomic Lua script, typed here.

A run is the agent's turn answering one message. Its ``status`` and ``phase`` move like this
(each arrow names the function below that makes the move, and the script that does it)::

                enqueue (submit.lua)
                       |
                       v
                   [queued] --- acquire (acquire.lua) / takeover, finish: the next message
                       |
                       v
   +---------- [running, llm] <------------------------------------------+
   |                   |  begin_step (begin_step.lua): claim step n, read  |
   |                   |    what it needs (record, history tail, flags)    |
   |                   |    and, if a lost attempt of step n had streamed  |
   |                   |    output, appends ``restart`` first              |
   |                   |  inject_steering (steer_inject.lua)               |
   |                   |  compact (compact.lua)                            |
   |                   |  emit (emit.lua): chunks, thinking ...            |
   |                   |  retry (retry.lua), defer (defer.lua): the call   |
   |                   |  failed or found no capacity; step n again later  |
   |                   v                                                  |
   |   commit (commit.lua) ---> [running, tools] --- record_tool_result ---+
   |          |                   |      ^         (tool_result.lua): the
   |          |                   |      |         last call moves to step n+1
   |          |      wait_begin   |      |  wake (wake.lua: reply, kill),
   |          |  (wait_begin.lua) v      |  finish.lua (last child), takeover
   |          |               [waiting] -+  (takeover.lua: deadline)
   |          v
   |   [running, final | cancelled]
   |          |
   +----------+--> finish (finish.lua) --> [succeeded | failed | cancelled, done]
                        atomically: the ``end`` event, a ``rollback``'s messages out of
                        history, the webhook into its outbox, then the conversation's next run;
                        a run's last step goes from [running, llm] to its end in one step,
                        its commit first (finish with a ``FinalStep``, commit_final.lua)

   rollback (rollback.lua; or submit.lua for on_busy=rollback): mark a live run, whose end
   then removes its messages; an ended run's messages go at once

Every fenced transition checks the conversation lease's token first (``lua/lib/fence.lua``):
a worker that lost the lease changes nothing. A step transition opens with ``guard``
(``lua/lib/runs.lua``), which checks the token and then the run's step. Each script's
arguments are named in ``walrus_tasks.script_args`` and passed by name; its reply comes back
typed. A run's ``phase`` says what its next task does (``llm``: an LLM step; ``tools``: its
tool calls; ``final`` / ``cancelled``: finish), so a recovered run resumes from its last
persisted step (``worker/recovery.py``). Invariant 3: no
transition starts a conversation's next message while its active run has not ended
(``live_active`` in ``lua/lib/runs.lua``).

Reads of what the transitions wrote (history, archives, run records, conversations) are in
``walrus_tasks.reads``; the run events in ``walrus_tasks.event_types``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, NamedTuple

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from walrus_tasks import durable, fair, indexes, keys, limits, scripts, tenancy, topology
from walrus_tasks import script_args as S
from walrus_tasks.event_types import (
    STEP_BOUNDARY,
    STEP_OUTPUT,
    WORKER_LOST,
    AskUser,
    Compacted,
    End,
    EndStatus,
    RunEvent,
    ToolCall,
    event_json,
)
from walrus_tasks.event_types import restart as restart_event
from walrus_tasks.lease import Fence, now_ms, ttl_ms
from walrus_tasks.settings import get_settings
from walrus_tasks.usage import step_write

Phase = Literal["llm", "tools", "final", "cancelled", "done"]
"""What a running run does next: an LLM step, its tool calls, finish (``final`` succeeded,
``cancelled``), or nothing (``done``: it has ended)."""

CommitPhase = Literal["tools", "final", "cancelled"]
"""The phases a committed LLM step can move the run to."""

WaitKind = Literal["ask", "approval", "client", "delegate"]
"""What a parked tool call waits for: a client's answer, an approval, a client tool's output
(``walrus_tasks.client_tools``), delegated children."""

# The scripts' reply types (``walrus_tasks.script_args``, where their parsers check them).
Begin = S.Begin
Commit = S.Commit
ToolRecord = S.ToolRecord
Wait = S.Wait


def _fenced(fence: Fence) -> dict[str, Any]:
    """The first arguments of every fenced script: the lease token and TTL (``S.FENCED``)."""
    return {"token": fence.token, "ttl_ms": ttl_ms()}


# --- queued: a message accepted, and a conversation's next run started ------------------------


@dataclass(frozen=True)
class Enqueued:
    """What ``enqueue`` did, and the run an ``on_busy=interrupt`` cancelled.

    ``ok``; ``exists`` (the run was submitted before); ``other`` (its id is another message's);
    ``busy`` (``on_busy=reject`` on a busy
    conversation; ``active`` is its run); ``guarded`` (its ``Along.guard`` did not hold: nothing
    written). ``drain``: the conversation was idle, so a drain task
    must start it; a busy one's holder starts the message as its run ends (finish.lua), so a
    message to a busy conversation costs no Celery message of its own.
    """

    state: Literal["ok", "exists", "other", "busy", "guarded"]
    active: str | None = None
    interrupted: str | None = None
    drain: bool = False


def enqueue(
    r: redis.Redis,
    run_id: str,
    agent: str,
    sender: str,
    content: str,
    on_busy: str,
    meta: dict[str, str],
    cancel_queued: bool = False,
    drain: Mapping[str, str] = S.NO_TASK,
) -> Enqueued:
    """Record the run as ``queued`` and append it to its conversation's inbox (submit.lua).

    With ``cancel_queued``, ``interrupt`` and ``rollback`` also cancel (and roll back) the runs
    still waiting in the inbox, in the same step. ``drain``: the drain's task message
    (``script_args.TASK_PUSH``, ``walrus_tasks.task_push``), pushed in the same step when the
    conversation was idle; else the caller sends the drain when ``Enqueued.drain`` says so.

    The record always names the run's ``tenant`` (``meta``'s, else the sender's default), the
    one the fair dispatcher (``walrus_tasks.fair``) and the limits count it under.
    """
    on_cluster = topology.is_cluster(r)
    keys_, args, tenant = _submit_call(
        r, run_id, agent, sender, content, on_busy, meta, cancel_queued, drain
    )
    # Acknowledged by a replica before the 202 when the master has one (no loss on failover).
    done = _enqueued(durable.call_acknowledged(r, S.SUBMIT, keys_, args))
    if done.drain and on_cluster:  # the dispatcher's half, in its own slot (lost: the reaper's)
        fair.mark(r, [(keys.cid(agent, sender), agent, tenant)])
    return done


class Guard(NamedTuple):
    """A submit written only while hash ``key``'s ``field`` holds ``value`` (submit.lua)."""

    key: str
    field: str
    value: str


@dataclass(frozen=True)
class Along:
    """Commands sent in the round trip that carries a run's submit, after submit.lua.

    ``queue(pipe, run_id)`` queues them; they run whether or not the submit wrote the run (a
    refused one, ``busy``; a ``guard`` that did not hold), so theirs must be reads, or writes
    conditional on the run and idempotent, in ``scripts`` (``lua/ap_record.lua``: the Agent
    Protocol's record of a run it creates). ``before``: scripts sent ahead of the submit,
    ``(script, keys, args)``, writes conditional and idempotent too, whose replies are not read:
    what they did, the ``guard`` finds (``lua/ap_bind.lua``: a thread bound to the assistant of
    its first run).
    """

    scripts: tuple[S.Script[Any], ...]
    queue: Callable[[aioredis.client.Pipeline, str], None]
    guard: Guard | None = None
    before: tuple[tuple[S.Script[Any], Sequence[str], Mapping[str, Any]], ...] = ()


async def enqueue_async(
    aredis: aioredis.Redis,
    run_id: str,
    agent: str,
    sender: str,
    content: str,
    on_busy: str,
    meta: dict[str, str],
    cancel_queued: bool = False,
    drain: Mapping[str, str] = S.NO_TASK,
    along: Along | None = None,
) -> tuple[Enqueued, list[Any] | None]:
    """:func:`enqueue` on an asyncio client of one Redis whose writes no replica acknowledges.

    The caller checks that (``durable.unreplicated_async``): this is submit.lua's one step, with
    neither ``WAIT`` nor the cluster's second half. With ``along``, its commands go in the
    same round trip: their replies are the answer's second half (None without). A server that
    lost a script (``NOSCRIPT``: a restart, a failover) is then given it and sent what did not
    run again (a write conditional on the run is safe twice).
    """
    guard = along.guard if along else None
    keys_, args, _ = _submit_call(
        aredis, run_id, agent, sender, content, on_busy, meta, cancel_queued, drain, guard
    )
    if along is None:
        return _enqueued(await scripts.call_async(aredis, S.SUBMIT, keys_, args)), None

    def send(submit: bool) -> Awaitable[list[Any]]:
        pipe = aredis.pipeline(transaction=False)
        if submit:
            for ahead_ in along.before:
                scripts.queue_async(pipe, *ahead_)
            scripts.queue_async(pipe, S.SUBMIT, keys_, args)
        along.queue(pipe, run_id)
        return pipe.execute(raise_on_error=False)

    ahead = len(along.before)
    replies = await send(True)
    lost = [isinstance(reply, NoScriptError) for reply in replies]
    if any(lost):
        ahead_scripts = (script for script, _, _ in along.before)
        await scripts.load_async(aredis, S.SUBMIT, *along.scripts, *ahead_scripts)
        submitted = replies[ahead]
        refused = (
            not isinstance(submitted, Exception)
            and _enqueued(S.SUBMIT.reply(submitted)).state == "guarded"
        )
        if lost[ahead] or (any(lost[:ahead]) and refused):
            # Nothing was submitted, or it was refused by a guard that what goes before would
            # have made hold: all of it again.
            replies = await send(True)
        elif any(lost[ahead + 1 :]):
            replies = [*replies[: ahead + 1], *await send(False)]
    submitted, theirs = replies[ahead], replies[ahead + 1 :]
    for reply in (submitted, *theirs):  # what went before is not read: the guard found it
        if isinstance(reply, Exception):
            raise reply
    return _enqueued(S.SUBMIT.reply(submitted)), theirs


def _submit_call(
    r: redis.Redis | aioredis.Redis,
    run_id: str,
    agent: str,
    sender: str,
    content: str,
    on_busy: str,
    meta: dict[str, str],
    cancel_queued: bool,
    drain: Mapping[str, str],
    guard: Guard | None = None,
) -> tuple[list[str], dict[str, Any], str]:
    """submit.lua's keys and arguments, and the run's tenant."""
    conversation = keys.cid(agent, sender)
    meta = {**meta, "tenant": meta.get("tenant") or limits.tenant_of(sender)}
    if topology.is_cluster(r) and keys.run_bucket(run_id) != keys.bucket_of(conversation):
        # One Redis takes any id (runs of earlier releases have such ids); a cluster cannot
        # write a run and its conversation in one step unless they share a slot.
        raise ValueError(f"run id {run_id!r} is not of {conversation}'s bucket (submit.new_run_id)")
    keys_ = [
        keys.conv(conversation, "lease"),
        keys.conv(conversation, "fence"),
        keys.conv(conversation, "inbox"),
        keys.run(run_id),
        keys.conv(conversation, "active"),
        *([guard.key] if guard else []),
    ]
    args = {
        "run_id": run_id, "agent": agent, "sender": sender, "content": content,
        "on_busy": on_busy, "now_ms": now_ms(), "cid": conversation,
        "meta_json": json.dumps(meta), "queued": "1" if cancel_queued else "0",
        "one_redis": topology.one_redis(r), **drain,
        "guard_field": guard.field if guard else "", "guard_value": guard.value if guard else "",
    }  # fmt: skip
    return keys_, args, meta["tenant"]


def _enqueued(res: list[Any]) -> Enqueued:
    """``Enqueued`` from submit.lua's reply."""
    if res[0] == "busy":
        return Enqueued("busy", active=res[1] or None)
    if res[0] in ("exists", "other", "guarded"):
        return Enqueued(res[0])
    return Enqueued("ok", interrupted=res[1] or None, drain=bool(res[2]))


@dataclass(frozen=True)
class Acquired:
    """What a drain took: the lease of the conversation the fair dispatcher picked, its run.

    ``token`` is the lease of ``agent``/``sender``, the conversation picked, and ``run_id`` the
    run it started; or there is only an ``orphan``.

    ``orphan`` names a run of the drain's own conversation that is still active though its
    lease expired (its worker died): the caller should take that conversation over; its next
    message waits. ``run_id`` is None when nothing was started.
    """

    token: str
    run_id: str | None
    agent: str = ""
    sender: str = ""
    orphan: str | None = None
    begun: StepStart | None = None
    """Step 0 of the run started, claimed in the same round trip (``first`` of ``acquire``)."""


def acquire(
    r: redis.Redis,
    agent: str,
    sender: str,
    shares: fair.Shares = fair.EVEN,
    *,
    first: StepClaim | None = None,
) -> Acquired | None:
    """A drain's move: start the conversation that is due, taking its lease.

    That is the one the fair dispatcher picks (``walrus_tasks.fair``), else the drain's own
    conversation when nothing is ready there (or picking is off).

    With ``first``, a run started in the drain's own conversation on one Redis has its step 0
    claimed in the same script, as ``begin_step`` claims it (``Acquired.begun``): the drain
    runs that step at once, one round trip sooner. Otherwise (another conversation picked, a
    cluster) the caller begins the step itself.

    None when it started nothing and found no orphan (the conversations are busy: their lease
    holders go on with their inboxes).
    """
    conversation = keys.cid(agent, sender)
    settings = get_settings()
    on_cluster = topology.is_cluster(r)
    picked = _pick_and_start(r, shares) if on_cluster and settings.fair_dispatch else None
    step_keys, claim = _claim_on_start(first, on_cluster, agent, sender)
    res = scripts.call(
        r,
        S.ACQUIRE,
        [keys.conv(conversation, "lease"), keys.conv(conversation, "fence"), *step_keys],
        {
            "cid": conversation, "now_ms": now_ms(), "ttl_ms": ttl_ms(),
            "maxlen": settings.events_maxlen,
            "fair": "1" if settings.fair_dispatch and not on_cluster else "0",
            "weights_json": shares.weights, "default_weight": shares.default_weight,
            "priorities_json": shares.priorities, "start_own": "0" if picked else "1",
            "one_redis": topology.one_redis(r), **claim,
        },
    )  # fmt: skip
    token, run_id, started, orphan, unmark, begun = res or ("", None, None, None, None, None)
    if unmark:  # a cluster: the own conversation started here leaves the dispatcher too
        fair.unmark(r, conversation, *unmark)
    if picked:
        started, token, run_id = picked
    if not started and not orphan:
        return None
    picked_agent, picked_sender = keys.split_cid(started) if started else ("", "")
    return Acquired(
        token=token,
        run_id=run_id or None,
        agent=picked_agent,
        sender=picked_sender,
        orphan=orphan or None,
        begun=_step_start(begun, None) if begun else None,
    )


PICKS = 8
"""On a cluster, how many picks one drain tries before it looks only at its own conversation
(a pick that can no longer start, because its own drain or a takeover started it first, is
dropped and the next one tried)."""


def _pick_and_start(r: redis.Redis, shares: fair.Shares) -> tuple[str, str, str] | None:
    """On a cluster, the fair pick in two steps: ``(cid, token, run_id)`` started, or None.

    The pick takes the conversation out of the dispatcher with a claim (its slot), then the
    conversation is started on its own slot if it still can; the claim goes either way.
    """
    settings = get_settings()
    for _ in range(PICKS):
        cid = fair.pick(r, shares)
        if cid is None:
            return None
        started = scripts.call(
            r,
            S.START_PICKED,
            [keys.conv(cid, "lease"), keys.conv(cid, "fence")],
            {"cid": cid, "now_ms": now_ms(), "ttl_ms": ttl_ms(), "maxlen": settings.events_maxlen},
        )
        fair.release(r, cid)
        if started:
            token, run_id = started
            return cid, token, run_id
    return None


@dataclass(frozen=True)
class Takeover:
    """A recovered lease: the run to resume, or the run started from the inbox."""

    token: str
    resume: str | None
    started: str | None


def takeover(r: redis.Redis, conversation: str) -> Takeover | None:
    """Take an expired lease over (the reaper's move); None while the lease is alive."""
    res = scripts.call(
        r,
        S.TAKEOVER,
        [keys.conv(conversation, "lease"), keys.conv(conversation, "fence")],
        {
            "cid": conversation,
            "now_ms": now_ms(),
            "ttl_ms": ttl_ms(),
            "maxlen": get_settings().events_maxlen,
        },
    )
    if not res:
        return None
    return Takeover(token=res[0], resume=res[1] or None, started=res[2] or None)


# --- running: a step claimed, streamed, committed; tool results recorded ------------------------


def emit(r: redis.Redis, fence: Fence, event: RunEvent, *more: RunEvent) -> str | None:
    """Append ``event`` (then ``more``, one round trip) if ``fence`` still holds.

    Returns the last one's entry id, or None.
    """
    return scripts.call(
        r,
        S.EMIT,
        fence.lease_keys,
        {
            **_fenced(fence),
            "run_id": fence.run_id,
            "maxlen": get_settings().events_maxlen,
            "events": [event_json(e) for e in (event, *more)],
        },
    )


def begin(
    r: redis.Redis,
    fence: Fence,
    step: int,
    phase: str,
    claim_id: str,
    call_id: str = "",
    task_id: str = "",
) -> Begin:
    """Claim the execution of ``step`` (``call_id`` of it, for a tool call).

    ``task_id``: the delivering message's id; a re-queued step's other messages are ``stale``.
    """
    claim = (
        keys.run_call(fence.run_id, "claim", call_id)
        if call_id
        else keys.run_part(fence.run_id, "claim")
    )
    return scripts.call(
        r,
        S.BEGIN,
        [*fence.lease_keys, keys.run(fence.run_id), claim, keys.run_part(fence.run_id, "results")],
        {
            **_fenced(fence),
            "step": step,
            "phase": phase,
            "claim_id": claim_id,
            "call_id": call_id,
            "task_id": task_id,
        },
    )


@dataclass(frozen=True)
class HeldHistory:
    """The part of a conversation's history a worker holds.

    Its length, the SHA-1 of its first and last messages (as stored) and the conversation's
    epoch when it was read, which ``begin_step`` checks before it sends only what follows.
    """

    length: int = 0
    first_sha: str = ""
    last_sha: str = ""
    epoch: str = ""


@dataclass(frozen=True)
class StepStart:
    """What ``begin_step`` claimed and read.

    The claim's state and, when ``ok``, the run record, the kill flag, the steering messages
    queued, whether the agent has memories, and the history: its length, and its messages from
    index ``history_from`` (0, or the held length when the held prefix is unchanged) as stored
    (JSON text).
    """

    state: Begin
    record: dict[str, str]
    cancelled: bool = False
    steering: int = 0
    memories: bool = False
    history_len: int = 0
    history_from: int = 0
    history_tail: list[str] | None = None
    epoch: str = ""
    """The conversation's epoch (``keys.CONV_PARTS``), "" before its first rewrite."""


@dataclass(frozen=True)
class StepClaim:
    """What a delivery brings to the claim of an LLM step, besides the run and the step.

    ``claim_id`` names the delivery; ``agent_config`` (JSON, '' for none) is pinned on the run
    unless one is pinned already; ``held`` is the history the worker holds; ``step_span`` the
    attempt's span id (``walrus_tasks.tracing``, '' for none).
    """

    claim_id: str
    agent_config: str = ""
    held: HeldHistory = HeldHistory()
    step_span: str = ""


_OUTPUT_TYPES = " ".join(sorted(STEP_OUTPUT))
_BOUNDARY_TYPES = " ".join(sorted(STEP_BOUNDARY))


def _claim_args(step: int, claim: StepClaim) -> dict[str, Any]:
    """The arguments ``S.STEP_CLAIM`` of the claim of step ``step`` (``lua/lib/step.lua``)."""
    held = claim.held
    return {
        "agent_config_json": claim.agent_config,
        "held_len": held.length,
        "held_first_sha": held.first_sha,
        "held_last_sha": held.last_sha,
        "held_epoch": held.epoch,
        "restart_json": _restart_json(step),
        "output_types": _OUTPUT_TYPES,
        "boundary_types": _BOUNDARY_TYPES,
        "step_span": f"{step}:{claim.step_span}" if claim.step_span else "",
    }


@cache
def _restart_json(step: int) -> str:
    """The ``restart`` event a claim of step ``step`` writes first if its output was cut."""
    return event_json(restart_event(step, WORKER_LOST))


def _claim_on_start(
    first: StepClaim | None, on_cluster: bool, agent: str, sender: str
) -> tuple[list[str], Mapping[str, Any]]:
    """The keys and arguments with which the script that starts a run claims its step 0.

    ``acquire.lua``, ``finish.lua`` and ``commit_final.lua`` take them last. None without
    ``first``, and none on a cluster: the step's keys (the agent's memory) are in another slot.
    """
    if first is None or on_cluster:
        return [], S.NO_CLAIM
    memory = keys.memory(agent, tenancy.tenant_of(sender))
    claim = {"claim_id": first.claim_id, **_claim_args(0, first)}
    return [*_history_keys(keys.cid(agent, sender)), memory], claim


def _history_keys(conversation: str) -> list[str]:
    """The conversation's history and epoch, as the claim of a step reads them."""
    return [keys.conv(conversation, "history"), keys.conv(conversation, "epoch")]


def _step_start(res: list[Any], memories: bool | None) -> StepStart:
    """``StepStart`` from the claim's reply; ``memories`` if asked apart (None: in the reply)."""
    if res[0] != "ok":
        return StepStart(state=S.parse_literal(S.Begin, res[0]), record={})
    flat = res[1]
    return StepStart(
        state="ok",
        record=dict(zip(flat[::2], flat[1::2], strict=True)),
        cancelled=bool(res[2]),
        steering=int(res[3]),
        memories=bool(res[4]) if memories is None else memories,
        history_len=int(res[5]),
        history_from=int(res[6]),
        history_tail=list(res[7]),
        epoch=str(res[8]),
    )


def begin_step(
    r: redis.Redis,
    fence: Fence,
    step: int,
    claim_id: str,
    agent_config: str,
    held: HeldHistory,
    task_id: str = "",
    step_span: str = "",
) -> StepStart:
    """Claim LLM step ``step`` (as ``begin``) and read what it needs, in one round trip.

    A step claimed again after its worker was lost, which had streamed output, gets its
    ``restart`` event first (``event_types``). Also renews the lease to its TTL, and pins
    ``agent_config`` (JSON, '' for none) on the run unless a config is pinned already (the
    record returned has the one that holds). ``task_id``: the delivering message's id (as
    ``begin``). ``step_span``: the span id of this attempt (``walrus_tasks.tracing``, '' for
    none), stored as the run's ``step_span`` (``<step>:<span id>``) once claimed; the record
    returned has the previous attempt's.
    """
    memory = keys.memory(fence.agent, tenancy.tenant_of(fence.sender))
    on_cluster = topology.is_cluster(r)
    res = scripts.call(
        r,
        S.BEGIN_STEP,
        [
            *fence.lease_keys,
            keys.run(fence.run_id),
            keys.run_part(fence.run_id, "claim"),
            *_history_keys(fence.cid),
            *([] if on_cluster else [memory]),  # on a cluster in another slot: asked below
        ],
        {
            **_fenced(fence),
            "step": step,
            "claim_id": claim_id,
            "now_ms": now_ms(),
            "cid": fence.cid,
            "run_id": fence.run_id,
            "task_id": task_id,
            "maxlen": get_settings().events_maxlen,
            **_claim_args(step, StepClaim(claim_id, agent_config, held, step_span)),
        },
    )
    asked = bool(r.exists(memory)) if on_cluster and res[0] == "ok" else None
    return _step_start(res, asked)


def pin_agent_config(r: redis.Redis, run_id: str, agent_config: str) -> bool:
    """Pin ``agent_config`` (JSON) on the run unless one is pinned already (pin_config.lua).

    True when pinned now; False when another step pinned one first (read that one) or the
    run's record is gone. ``begin_step`` pins the same way on a run's first step.
    """
    return scripts.call(r, S.PIN_CONFIG, [keys.run(run_id)], {"agent_config_json": agent_config})


def retry(
    r: redis.Redis,
    fence: Fence,
    step: int,
    attempts: int,
    tries: int,
    fallback: int,
    not_before_ms: int,
    event: RunEvent,
    restart: RunEvent | None = None,
) -> Commit:
    """Record a failed LLM call of ``step`` that is made again.

    Persists ``attempts`` (retries of the step so far), ``tries`` (of them, on the model in
    use), ``fallback`` (the model's index: 0 the agent's, n its n-th fallback) and
    ``not_before_ms``; emits ``restart`` (if the call had streamed output), then ``event``.
    """
    return scripts.call(
        r,
        S.RETRY,
        [*fence.lease_keys, keys.run(fence.run_id)],
        {
            **_fenced(fence),
            "step": step,
            "attempts": attempts,
            "fallback": fallback,
            "run_id": fence.run_id,
            "maxlen": get_settings().events_maxlen,
            "restart_json": event_json(restart) if restart else "",
            "retry_json": event_json(event),
            "tries": tries,
            "not_before_ms": not_before_ms,
        },
    )


def defer(
    r: redis.Redis, fence: Fence, step: int, claim_id: str, delay: float, task_id: str
) -> Commit:
    """Free ``step``'s claim and keep the lease ``delay`` seconds plus the dispatch grace.

    The step goes back to the queue with that countdown in message ``task_id``
    (``runtime.redispatch_step``), the one delivery of the step the run now expects.
    """
    hold_ms = int((delay + get_settings().dispatch_grace) * 1000)
    return scripts.call(
        r,
        S.DEFER,
        [*fence.lease_keys, keys.run(fence.run_id), keys.run_part(fence.run_id, "claim")],
        {
            **_fenced(fence),
            "step": step,
            "claim_id": claim_id,
            "hold_ms": hold_ms,
            "now_ms": now_ms(),
            "cid": fence.cid,
            "task_id": task_id,
        },
    )


def commit(
    r: redis.Redis,
    fence: Fence,
    step: int,
    message: dict[str, Any] | None,
    next_phase: CommitPhase,
    calls: list[ToolCall],
    usage: tuple[int, int],
    model: str,
    events: list[RunEvent] | None = None,
) -> Commit:
    """Persist one LLM step: the assistant message (if any) and what the run does next.

    ``events`` (what closes the step's output: its last chunk, ``text_end``) are appended to
    the run's stream first, in the same round trip. The call's ``usage`` under ``model`` (the
    model that answered) is counted in the hour's usage bucket (``walrus_tasks.usage``), unless
    the step was cancelled before the model said anything. A run's last step is committed by
    ``finish`` as the run ends (``FinalStep``).
    """
    counted = next_phase != "cancelled" or any(usage)
    keys_, args = _step_commit(fence, step, message, usage, model, counted)
    return scripts.call(
        r,
        S.COMMIT,
        keys_,
        {
            **args,
            "next_phase": next_phase,
            "calls_json": json.dumps(calls, ensure_ascii=False),
            "events": [event_json(e) for e in events or []],
        },
    )


def _step_commit(
    fence: Fence,
    step: int,
    message: dict[str, Any] | None,
    usage: tuple[int, int],
    model: str,
    counted: bool,
) -> tuple[list[str], dict[str, Any]]:
    """An LLM step's commit: the keys and arguments ``commit.lua`` and ``commit_final.lua`` share.

    All of ``commit.lua``'s but its next phase, calls and closing events.
    """
    tenant = tenancy.tenant_of(fence.sender)
    use = step_write(fence.run_id, tenant, fence.agent, model, counted, now_ms() / 1000)
    keys_ = [
        *fence.lease_keys,
        keys.run(fence.run_id),
        keys.conv(fence.cid, "history"),
        keys.run_part(fence.run_id, "claim"),
        *use.keys,
    ]
    return keys_, {
        **_fenced(fence),
        "step": step,
        "message_json": json.dumps(message, ensure_ascii=False) if message else "",
        "input_tokens": usage[0],
        "output_tokens": usage[1],
        "model": model,
        "run_id": fence.run_id,
        "maxlen": get_settings().events_maxlen,
        "usage_field": use.field,
        "usage_expire_at": use.expire_at,
    }


def record_tool_result(
    r: redis.Redis, fence: Fence, step: int, call_id: str, message: dict[str, Any]
) -> ToolRecord:
    """Store one tool call's result; ``complete`` for the call that finishes the step."""
    return scripts.call(
        r,
        S.TOOL_RESULT,
        [
            *fence.lease_keys,
            keys.run(fence.run_id),
            keys.conv(fence.cid, "history"),
            keys.run_part(fence.run_id, "results"),
            keys.run_call(fence.run_id, "claim", call_id),
        ],
        {
            **_fenced(fence),
            "step": step,
            "call_id": call_id,
            "message_json": json.dumps(message, ensure_ascii=False),
        },
    )


def inject_steering(r: redis.Redis, fence: Fence) -> int:
    """Move queued steering messages into history (``user_steered``); -1 when fenced."""
    return scripts.call(
        r,
        S.STEER_INJECT,
        [*fence.lease_keys, keys.run(fence.run_id), keys.conv(fence.cid, "history")],
        {**_fenced(fence), "run_id": fence.run_id, "maxlen": get_settings().events_maxlen},
    )


def compact(
    r: redis.Redis,
    fence: Fence,
    summary: dict[str, Any],
    keep: int,
    expected_len: int,
    event: Compacted,
) -> tuple[str, int]:
    """Replace history by ``summary`` (+ its last ``keep`` messages), archiving the rest.

    Returns ``("ok", archived count)``, or ``("fenced" | "stale", 0)``.
    """
    res = scripts.call(
        r,
        S.COMPACT,
        [
            *fence.lease_keys,
            keys.conv(fence.cid, "history"),
            keys.conv(fence.cid, "archive"),
            keys.conv(fence.cid, "epoch"),
        ],
        {
            **_fenced(fence),
            "run_id": fence.run_id,
            "keep": keep,
            "summary_json": json.dumps(summary, ensure_ascii=False),
            "event_json": event_json(event),
            "maxlen": get_settings().events_maxlen,
            "now_ms": now_ms(),
            "expected_len": expected_len,
        },
    )
    return str(res[0]), int(res[1]) if len(res) > 1 else 0


# --- waiting: a tool call parked, and what ends the wait ---------------------------------------


def wait_begin(
    r: redis.Redis,
    fence: Fence,
    step: int,
    call_id: str,
    kind: WaitKind,
    timeout: float,
    event: AskUser | None,
    data: dict[str, Any],
) -> Wait:
    """Park tool call ``call_id`` until a wake (see ``walrus_tasks.waits``), or ``timeout``."""
    return scripts.call(
        r,
        S.WAIT_BEGIN,
        [
            *fence.lease_keys,
            keys.run(fence.run_id),
            keys.run_call(fence.run_id, "claim", call_id),
        ],
        {
            **_fenced(fence),
            "step": step,
            "call_id": call_id,
            "kind": kind,
            "deadline_ms": now_ms() + int(timeout * 1000),
            "event_json": event_json(event) if event else "",
            "data_json": json.dumps(data),
            "now_ms": now_ms(),
            "maxlen": get_settings().events_maxlen,
            "cid": fence.cid,
        },
    )


def wake_of(r: redis.Redis, run_id: str, call_id: str) -> dict[str, Any] | None:
    """The stored wake of a call that waited, or None."""
    raw: str | None = r.hget(keys.run_part(run_id, "wakes"), call_id)  # type: ignore[assignment]
    return json.loads(raw) if raw else None


@dataclass(frozen=True)
class Woken:
    """A call whose wait ended, to dispatch again under the lease ``token``."""

    token: str
    step: int
    index: int
    call_id: str

    @classmethod
    def from_lua(cls, reply: list[Any]) -> Woken:
        """From ``wake_call``'s ``{token, step, index, call_id}`` (``lua/lib/runs.lua``)."""
        return cls(str(reply[0]), int(reply[1]), int(reply[2]), str(reply[3]))


@dataclass(frozen=True)
class ParentWake:
    """The parent's ``delegate`` call that the last of its children woke as it ended."""

    agent: str
    sender: str
    run_id: str
    woken: Woken


def release_calls(r: redis.Redis, fence: Fence) -> list[int] | None:
    """Release the claims of the run's calls that have no result (release_calls.lua).

    For recovery in the tool phase: the indexes of the calls to dispatch again, in call order;
    None when ``fence`` no longer holds the lease (then nothing was released).
    """
    res = scripts.call(
        r, S.RELEASE_CALLS, fence.lease_keys, {**_fenced(fence), "run_id": fence.run_id}
    )
    return None if res is None else [int(i) for i in res]


CHILDREN_TTL = 7 * 86_400
"""Seconds the record of a delegate call's children lives (far beyond any wait)."""


def spawn_children(
    r: redis.Redis, run_id: str, call_id: str, ids: list[str], foreground: bool
) -> list[str]:
    """Record the children that tool call ``call_id`` delegates to, once (spawn_children.lua).

    ``ids``: the run ids this delivery chose; a redelivered call gets the first delivery's ids
    back, and submits those (``submit`` is idempotent by run id). A ``foreground`` call waits
    for its children: each is entered in its children hash, where ``finish`` records its
    result and wakes the call with the last one.
    """
    return scripts.call(
        r,
        S.SPAWN_CHILDREN,
        [keys.run_call(run_id, "spawned", call_id), keys.run_call(run_id, "children", call_id)],
        {
            "ids_json": json.dumps(ids),
            "foreground": "1" if foreground else "0",
            "ttl_s": CHILDREN_TTL,
        },
    )


CANCEL_TTL = 86_400
"""Seconds a run's cancel flag lives (the run clears it when it ends)."""


def cancel(r: redis.Redis, run_id: str) -> list[ParentWake]:
    """Cancel ``run_id`` and the foreground children it waits on, in one step (cancel.lua).

    Each gets its cancel flag and has its waits ended. Returns the woken calls to dispatch,
    each naming the run (the parent or a child) whose call woke.
    """
    grace = int(get_settings().dispatch_grace * 1000)
    res = scripts.call(
        r,
        S.CANCEL,
        [keys.run(run_id)],
        {"cancel_ttl": CANCEL_TTL, "now_ms": now_ms(), "grace_ms": grace},
    )
    return [
        ParentWake(
            agent=str(res[i + 1]),
            sender=str(res[i + 2]),
            run_id=str(res[i]),
            woken=Woken.from_lua(res[i + 3 : i + 7]),
        )
        for i in range(0, len(res), 7)
    ]


def wake(
    r: redis.Redis,
    run_id: str,
    conversation: str,
    call_id: str,
    kinds: str,
    wake_kind: Literal["reply", "cancelled"],
    content: str,
) -> Woken | Literal["queued"] | None:
    """End a wait from outside the run (wake.lua): a reply or approval, or a kill.

    ``call_id`` "" means the waiting call of one of ``kinds`` (comma-separated) with the
    earliest deadline. ``queued``: a reply for a running run with no question yet, kept for
    its next one. None: nothing waits for this.
    """
    res = scripts.call(
        r,
        S.WAKE,
        [keys.conv(conversation, "lease"), keys.conv(conversation, "fence"), keys.run(run_id)],
        {
            "call_id": call_id,
            "kinds": kinds,
            "wake_kind": wake_kind,
            "content": content,
            "now_ms": now_ms(),
            "grace_ms": int(get_settings().dispatch_grace * 1000),
            "cid": conversation,
        },
    )
    if res == "queued":
        return "queued"
    return Woken.from_lua(res) if isinstance(res, list) else None


def queue_steering(r: redis.Redis, agent: str, sender: str, content: str) -> str | None:
    """Queue ``content`` for the active run's next LLM step (steer.lua); its run id or None."""
    active = keys.conv(keys.cid(agent, sender), "active")
    return scripts.call(r, S.STEER, [active], {"content": content})


def set_webhook(r: redis.Redis, run_id: str, url: str) -> bool:
    """Report the end of run ``run_id`` to ``url`` (set_webhook.lua); False if it has ended.

    True when set: the run is queued, running or waiting, so ``finish`` puts it in the webhook
    outbox as it ends (``walrus_tasks.webhooks``). False when the run is missing or has ended
    already: nothing is written, since a URL set after its end would never be sent.
    """
    return scripts.call(r, S.SET_WEBHOOK, [keys.run(run_id)], {"url": url})


# --- ended: succeeded, failed or cancelled -------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """How ``finish`` went: ``ended``, or ``fenced`` / ``stale`` (nothing changed).

    Also the conversation's next run (started under the same token), and the parent call
    that this run, the last of its delegated children, woke.
    """

    state: Literal["ended", "fenced", "stale"]
    next_run: str | None = None
    parent_wake: ParentWake | None = None
    done_subscriptions: int = 0
    """How many subscriptions the ``subscriptions`` index given to ``finish`` held."""
    begun: StepStart | None = None
    """The next run's step 0, claimed in the same step (``finish``'s ``first``)."""


@dataclass(frozen=True)
class FinalStep:
    """A run's last LLM step, committed as the run ends, in the same step (``finish``).

    What ``commit`` is given for a step whose next phase is ``final``: one round trip at the
    end of a run instead of two (``lua/commit_final.lua``).
    """

    step: int
    message: dict[str, Any]
    usage: tuple[int, int]
    model: str
    events: list[RunEvent]
    """What closes the step's output (its last chunk, ``text_end``), appended first."""


def finish(
    r: redis.Redis,
    fence: Fence,
    status: EndStatus,
    end_event: End,
    error: str = "",
    result: dict[str, Any] | None = None,
    *,
    figure: list[str] | None = None,
    subscriptions: str = "",
    final: FinalStep | None = None,
    first: StepClaim | None = None,
) -> Finished:
    """End the run with ``end_event`` and start the next queued run of the conversation.

    ``result`` is what a delegating parent's call reports for this run (if it has a parent).
    ``figure`` (``metrics.run_figure``) is added to the cluster-wide figures as the run ends;
    ``subscriptions`` is the key of a subscription index whose size ``Finished`` reports (the
    subscriptions to the agent's ``done`` source: none, nothing to publish). ``final``: the
    run's last step, committed first in the same step; where its commit is refused
    (``fenced``, ``stale``), nothing is written. With ``first``, the next run it starts has
    its step 0 claimed in the same step on one Redis, as ``begin_step`` claims it
    (``Finished.begun``): the caller runs that step in place (``worker.in_place``).
    """
    settings = get_settings()
    on_cluster = topology.is_cluster(r)
    claim_keys, claim = _claim_on_start(first, on_cluster, fence.agent, fence.sender)
    count, seconds_field, seconds, bucket, *pairs = figure or ["", "", "", ""]
    result_json = json.dumps(result or {}, ensure_ascii=False)
    end_keys = [
        keys.metrics_runs(keys.run_bucket(fence.run_id)),
        # On a cluster the subscriptions live in their own slot: counted below.
        *([] if on_cluster else [subscriptions or keys.subs_source("")]),
    ]
    end_args = {
        "cid": fence.cid,
        "status": status,
        "error": error,
        "end_json": event_json(end_event),
        "now_ms": now_ms(),
        "events_ttl": settings.events_ttl,
        "result_json": result_json,
        "grace_ms": int(settings.dispatch_grace * 1000),
        "one_redis": topology.one_redis(r),
        "count_field": count,
        "seconds_field": seconds_field,
        "seconds": seconds,
        "bucket_field": bucket,
        "increments": [
            {"field": f, "by": by} for f, by in zip(pairs[::2], pairs[1::2], strict=True)
        ],
    }
    if final is None:
        res = scripts.call(
            r,
            S.FINISH,
            [*fence.lease_keys, keys.run(fence.run_id), *end_keys, *claim_keys],
            {**_fenced(fence), "run_id": fence.run_id, "maxlen": settings.events_maxlen,
             **end_args, **claim},
        )  # fmt: skip
    else:
        step_keys, step_args = _step_commit(
            fence, final.step, final.message, final.usage, final.model, counted=True
        )
        closing = json.dumps([event_json(e) for e in final.events], ensure_ascii=False)
        res = scripts.call(
            r,
            S.COMMIT_FINAL,
            [*step_keys, *end_keys, *claim_keys],
            {**step_args, "events_json": closing, **end_args, **claim},
        )
    if res[0] != "ended":
        return Finished(state=S.parse_literal(S.Ended, res[0]))
    wake, done_subscriptions = res[2], int(res[3])
    if res[4]:  # a cluster: the parent, in another slot, hears in a step of its own
        wake = tell_parent(r, fence.run_id, res[4][0], res[4][1], result_json)
    if done_subscriptions < 0:
        done_subscriptions = int(r.scard(subscriptions)) if subscriptions else 0
    return Finished(
        state="ended",
        next_run=res[1] or None,
        parent_wake=_parent_wake(wake),
        done_subscriptions=done_subscriptions,
        begun=_step_start(res[5], None) if res[5] else None,
    )


def _parent_wake(wake: list[Any] | None) -> ParentWake | None:
    """{token, step, index, call_id, parent agent, parent sender, parent run} read, or None."""
    if not wake:
        return None
    agent, sender, run_id = wake[4:7]
    return ParentWake(agent, sender, run_id, Woken.from_lua(wake[:4]))


def tell_parent(
    r: redis.Redis, run_id: str, parent_run: str, call_id: str, result_json: str
) -> list[Any] | None:
    """On a cluster: record ended child ``run_id``'s result with its parent's delegate call.

    In the parent's slot (child_done.lua); then the child leaves its bucket's ``parents``
    outbox. The raw parent wake (``_parent_wake``), or None. Told twice (the reaper, after a
    caller that died), the call is woken once.
    """
    wake = scripts.call(
        r,
        S.CHILD_DONE,
        [keys.run(parent_run)],
        {
            "parent_run": parent_run, "call_id": call_id, "run_id": run_id,
            "result_json": result_json, "now_ms": now_ms(),
            "grace_ms": int(get_settings().dispatch_grace * 1000),
        },
    )  # fmt: skip
    r.zrem(keys.run_index("parents", run_id), run_id)
    return wake


def parents_due(r: redis.Redis) -> list[ParentWake]:
    """On a cluster: tell again the parents of the children whose ender died before it did.

    The reaper's sweep of every bucket's ``parents`` outbox; the wakes to dispatch.
    """
    wakes = []
    for run_id, _ in indexes.scored(r, "parents", "-inf", now_ms()):
        fields = ["parent_run", "parent_call", "parent_result"]
        parent_run, call_id, result_json = (
            str(v) if v else "" for v in r.hmget(keys.run(run_id), fields)
        )
        if not (parent_run and call_id and result_json):  # the child's record expired
            r.zrem(keys.run_index("parents", run_id), run_id)
            continue
        if wake := _parent_wake(tell_parent(r, run_id, parent_run, call_id, result_json)):
            wakes.append(wake)
    return wakes


def rollback(r: redis.Redis, run_id: str, agent: str, sender: str) -> int | None:
    """Roll a run back (rollback.lua): its messages leave history.

    A run that has not ended is marked, and ``finish`` removes its messages in the same step
    that ends it, so the conversation's next run never reads them: None. For an ended run they
    go now: the number removed.
    """
    conversation = keys.cid(agent, sender)
    removed = scripts.call(
        r,
        S.ROLLBACK,
        [keys.run(run_id), keys.conv(conversation, "history"), keys.conv(conversation, "epoch")],
        {"run_id": run_id},
    )
    return None if removed < 0 else removed
