"""The conversation store in Redis: fenced writes of a run's progress, and the reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import redis

from walrus_tasks import keys, scripts
from walrus_tasks.errors import NotFound
from walrus_tasks.lease import Fence, now_ms, ttl_ms
from walrus_tasks.models import Conversation, RunInfo, event_json
from walrus_tasks.run_events import AskUser, Compacted, End, RunEvent, ToolCall
from walrus_tasks.settings import get_settings

Begin = Literal["ok", "fenced", "stale", "busy"]
Commit = Literal["ok", "fenced", "stale"]
ToolRecord = Literal["complete", "pending", "fenced", "stale"]


def emit(r: redis.Redis, fence: Fence, event: RunEvent) -> str | None:
    """Append ``event`` to the run's stream if ``fence`` still holds; its entry id, or None."""
    return scripts.call(  # type: ignore[no-any-return]
        r,
        "emit",
        fence.lease_keys,
        [fence.token, ttl_ms(), fence.run_id, get_settings().events_maxlen, event_json(event)],
    )


def begin(
    r: redis.Redis, fence: Fence, step: int, phase: str, claim_id: str, call_id: str = ""
) -> Begin:
    """Claim the execution of ``step`` (``call_id`` of it, for a tool call)."""
    claim = (
        keys.run_call(fence.run_id, "claim", call_id)
        if call_id
        else keys.run_part(fence.run_id, "claim")
    )
    return scripts.call(  # type: ignore[no-any-return]
        r,
        "begin",
        [*fence.lease_keys, keys.run(fence.run_id), claim, keys.run_part(fence.run_id, "results")],
        [fence.token, ttl_ms(), step, phase, claim_id, call_id],
    )


def commit(
    r: redis.Redis,
    fence: Fence,
    step: int,
    message: dict[str, Any] | None,
    next_phase: Literal["tools", "final", "cancelled"],
    calls: list[ToolCall],
    usage: tuple[int, int],
    model: str,
) -> Commit:
    """Persist one LLM step: the assistant message (if any) and what the run does next."""
    return scripts.call(  # type: ignore[no-any-return]
        r,
        "commit",
        [
            *fence.lease_keys,
            keys.run(fence.run_id),
            keys.conv(fence.cid, "history"),
            keys.run_part(fence.run_id, "claim"),
        ],
        [
            fence.token,
            ttl_ms(),
            step,
            json.dumps(message, ensure_ascii=False) if message else "",
            next_phase,
            json.dumps(calls, ensure_ascii=False),
            usage[0],
            usage[1],
            model,
        ],
    )


def record_tool_result(
    r: redis.Redis, fence: Fence, step: int, call_id: str, message: dict[str, Any]
) -> ToolRecord:
    """Store one tool call's result; ``complete`` for the call that finishes the step."""
    return scripts.call(  # type: ignore[no-any-return]
        r,
        "tool_result",
        [
            *fence.lease_keys,
            keys.run(fence.run_id),
            keys.conv(fence.cid, "history"),
            keys.run_part(fence.run_id, "results"),
            keys.run_call(fence.run_id, "claim", call_id),
        ],
        [fence.token, ttl_ms(), step, call_id, json.dumps(message, ensure_ascii=False)],
    )


@dataclass(frozen=True)
class Finished:
    """How ``finish`` went.

    ``ended`` (or ``fenced`` / ``stale``), the conversation's next run, and, for the last
    delegated child to end, the parent call to dispatch again
    (``[token, step, index, call_id, agent, sender, run_id]``).
    """

    state: str
    next_run: str | None = None
    parent_wake: list[Any] | None = None


def finish(
    r: redis.Redis,
    fence: Fence,
    status: str,
    end_event: End,
    error: str = "",
    result: dict[str, Any] | None = None,
) -> Finished:
    """End the run with ``end_event`` and start the next queued run of the conversation.

    ``result`` is what a delegating parent's call reports for this run (if it has a parent).
    """
    settings = get_settings()
    res = scripts.call(
        r,
        "finish",
        [*fence.lease_keys, keys.run(fence.run_id)],
        [
            fence.token,
            ttl_ms(),
            fence.run_id,
            fence.cid,
            status,
            error,
            event_json(end_event),
            now_ms(),
            settings.events_maxlen,
            settings.events_ttl,
            json.dumps(result or {}, ensure_ascii=False),
            int(settings.dispatch_grace * 1000),
        ],
    )
    if res[0] != "ended":
        return Finished(state=res[0])
    return Finished(state="ended", next_run=res[1] or None, parent_wake=res[2] or None)


Wait = Literal["waiting", "woken", "fenced", "stale"]


def wait_begin(
    r: redis.Redis,
    fence: Fence,
    step: int,
    call_id: str,
    kind: str,
    timeout: float,
    event: AskUser | None,
    data: dict[str, Any],
) -> Wait:
    """Park tool call ``call_id`` until a wake (see ``walrus_tasks.waits``), or ``timeout``."""
    return scripts.call(  # type: ignore[no-any-return]
        r,
        "wait_begin",
        [
            *fence.lease_keys,
            keys.run(fence.run_id),
            keys.run_call(fence.run_id, "claim", call_id),
        ],
        [
            fence.token,
            ttl_ms(),
            step,
            call_id,
            kind,
            now_ms() + int(timeout * 1000),
            event_json(event) if event else "",
            json.dumps(data),
            now_ms(),
            get_settings().events_maxlen,
            fence.cid,
        ],
    )


def wake_of(r: redis.Redis, run_id: str, call_id: str) -> dict[str, Any] | None:
    """The stored wake of a call that waited, or None."""
    raw: str | None = r.hget(keys.run_part(run_id, "wakes"), call_id)  # type: ignore[assignment]
    return json.loads(raw) if raw else None


def inject_steering(r: redis.Redis, fence: Fence) -> int:
    """Move queued steering messages into history (``user_steered``); -1 when fenced."""
    return int(
        scripts.call(
            r,
            "steer_inject",
            [*fence.lease_keys, keys.run(fence.run_id), keys.conv(fence.cid, "history")],
            [fence.token, ttl_ms(), fence.run_id, get_settings().events_maxlen],
        )
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
        "compact",
        [*fence.lease_keys, keys.conv(fence.cid, "history"), keys.conv(fence.cid, "archive")],
        [
            fence.token,
            ttl_ms(),
            fence.run_id,
            keep,
            json.dumps(summary, ensure_ascii=False),
            event_json(event),
            get_settings().events_maxlen,
            now_ms(),
            expected_len,
        ],
    )
    return res[0], int(res[1]) if len(res) > 1 else 0


def archives(r: redis.Redis, agent: str, sender: str) -> list[dict[str, Any]]:
    """The conversation's compacted-away histories, oldest first."""
    raw: list[str] = r.lrange(keys.conv(keys.cid(agent, sender), "archive"), 0, -1)  # type: ignore[assignment]
    return [json.loads(a) for a in raw]


def run_record(r: redis.Redis, run_id: str) -> dict[str, str]:
    """The run's raw hash, or NotFound."""
    h: dict[str, str] = r.hgetall(keys.run(run_id))  # type: ignore[assignment]
    if not h:
        raise NotFound(f"unknown run {run_id!r}")
    return h


def get_run(r: redis.Redis, run_id: str) -> RunInfo:
    """The public view of a run."""
    return RunInfo.from_hash(run_record(r, run_id))


def history(r: redis.Redis, agent: str, sender: str) -> list[dict[str, Any]]:
    """The conversation's messages, in order."""
    raw: list[str] = r.lrange(keys.conv(keys.cid(agent, sender), "history"), 0, -1)  # type: ignore[assignment]
    return [json.loads(m) for m in raw]


def conversations(r: redis.Redis, agent: str | None = None) -> list[Conversation]:
    """Every conversation (optionally of one agent), most recently active first."""
    rows: list[tuple[str, float]] = r.zrevrange(keys.CONVERSATIONS, 0, -1, withscores=True)  # type: ignore[assignment]
    if agent is not None:
        rows = [(c, s) for c, s in rows if c.startswith(agent + ":")]
    pipe = r.pipeline(transaction=False)
    for c, _ in rows:
        pipe.get(keys.conv(c, "active"))
        pipe.llen(keys.conv(c, "inbox"))
    replies = pipe.execute()
    out = []
    for i, (c, score) in enumerate(rows):
        a, s = keys.split_cid(c)
        out.append(
            Conversation(
                agent=a,
                sender=s,
                last_active=score / 1000,
                active_run=replies[2 * i],
                queued=replies[2 * i + 1],
            )
        )
    return out
