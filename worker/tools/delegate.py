"""``delegate``: hand tasks to member agents, as runs of their own on any worker.

Each task is a run of the member in conversation ``(member, "delegate:<caller>")``. In the
foreground the call parks its run (no worker held) until every child has ended, then reports
``[{agent, result, error}]`` in task order; in the background it returns the run ids at once.
"""

from __future__ import annotations

import json
from typing import Any

from walrus_tasks import keys, runs, submit, tenancy, waits
from walrus_tasks.config import AgentConfig
from worker.providers.base import ToolSpec
from worker.tools.base import ToolContext, ToolFailed, WaitFor, arg, register, schema

MAX_TASKS = 16
"""Tasks one delegate call may start."""


def _tasks(args: dict[str, Any], agent: AgentConfig) -> list[tuple[str, str]]:
    tasks = arg(args, "tasks", list)
    if not tasks or len(tasks) > MAX_TASKS:
        raise ToolFailed(f"tasks must list 1 to {MAX_TASKS} tasks")
    out = []
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or not isinstance(t.get("agent"), str):
            raise ToolFailed(f"tasks[{i}] must be {{agent, message}}")
        if not isinstance(t.get("message"), str) or not t["message"].strip():
            raise ToolFailed(f"tasks[{i}].message must be a non-empty string")
        if t["agent"] not in agent.members:
            members = ", ".join(agent.members) or "none"
            raise ToolFailed(f"agent {t['agent']!r} is not a member of {agent.name} ({members})")
        out.append((t["agent"], t["message"]))
    return out


def _spawn(ctx: ToolContext, tasks: list[tuple[str, str]], foreground: bool) -> list[str]:
    """Submit the children once: a redelivered call finds the ids of the first delivery."""
    r = ctx.redis
    # The children live in the parent's tenant: its conversations, its share of the cluster.
    sender = tenancy.scoped(tenancy.tenant_of(ctx.sender), f"delegate:{ctx.agent.name}")
    chosen = [submit.new_run_id(agent, sender) for agent, _ in tasks]
    ids = runs.spawn_children(r, ctx.run_id, ctx.call_id, chosen, foreground)
    for run_id, (agent, message) in zip(ids, tasks, strict=True):
        meta = {"parent_run": ctx.run_id, "parent_call": ctx.call_id} if foreground else {}
        submit.submit(r, agent, sender, message, run_id=run_id, meta=meta)
    return ids


def _results(ctx: ToolContext, tasks: list[tuple[str, str]]) -> str:
    r = ctx.redis
    spawned = keys.run_call(ctx.run_id, "spawned", ctx.call_id)
    ids = json.loads(r.get(spawned) or "[]")
    done: dict[str, str] = r.hgetall(keys.run_call(ctx.run_id, "children", ctx.call_id))  # type: ignore[assignment]
    out = []
    for run_id, (agent, _) in zip(ids, tasks, strict=True):
        if done.get(run_id):
            child = json.loads(done[run_id])
            out.append({"agent": agent, "result": child.get("result"), "error": child.get("error")})
            continue
        waits.cancel(r, run_id)  # timed out or cancelled: the child must not run on
        reason = "cancelled" if ctx.wake and ctx.wake.kind == "cancelled" else "timed out"
        out.append({"agent": agent, "result": None, "error": f"{reason} (run {run_id})"})
    return json.dumps(out, ensure_ascii=False)


@register(
    ToolSpec(
        name="delegate",
        description=(
            "Give tasks to member agents; they run in parallel. In the foreground (default) you "
            "get [{agent, result, error}] when all are done; with background=true you get their "
            "run ids at once."
        ),
        parameters=schema(
            {
                "tasks": {
                    "type": "array",
                    "items": schema(
                        {"agent": {"type": "string"}, "message": {"type": "string"}},
                        required=["agent", "message"],
                    ),
                    "minItems": 1,
                },
                "background": {"type": "boolean"},
            },
            required=["tasks"],
        ),
    )
)
def delegate(args: dict[str, Any], ctx: ToolContext) -> str:
    """Start the children; wait for them in the foreground."""
    tasks = _tasks(args, ctx.agent)
    background = arg(args, "background", bool, False)
    if background:
        ids = _spawn(ctx, tasks, foreground=False)
        return json.dumps([{"agent": a, "run_id": i} for (a, _), i in zip(tasks, ids, strict=True)])
    if ctx.wake is None:
        ids = _spawn(ctx, tasks, foreground=True)
        raise WaitFor("delegate", ctx.agent.delegate_timeout, data={"children": ids})
    return _results(ctx, tasks)
