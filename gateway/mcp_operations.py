"""What the MCP face reads beyond the shared operations: the questions a run waits on, its owner.

The MCP face (:mod:`gateway.mcp_face`) answers a conversation's pending question with the next
``tools/call`` to it, and takes a client's answer to an elicitation only for the caller's own
run; these are typed functions over Redis raising :mod:`walrus_tasks.errors`, so the face
touches no key itself. The operations every face
shares are in :mod:`gateway.operations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from gateway.operations import known_agent, run_info, sender_in
from gateway.run_interrupts import last_question, pending_interrupts
from walrus_tasks import keys
from walrus_tasks.config import Config
from walrus_tasks.errors import NotFound
from walrus_tasks.models import RunInfo
from walrus_tasks.tenancy import Caller


@dataclass(frozen=True)
class Pending:
    """The questions a run waits on.

    ``questions``: each pending ``ask_user`` question or approval by call id, oldest first (the
    event's fields but ``type`` and ``call_id``); ``asked``: the stream entry id of the run's
    latest ``ask_user`` event (up to there a client was shown the run).
    """

    run_id: str
    questions: dict[str, dict[str, Any]]
    asked: str


def pending(
    r: redis.Redis, config: Config, agent: str, conversation: str, caller: Caller
) -> Pending | None:
    """The questions the conversation's active run waits on; None if it waits on none."""
    agent = known_agent(config, agent)
    sender = sender_in(caller.acting(None), conversation)
    active: str | None = r.get(keys.conv(keys.cid(agent, sender), "active"))  # type: ignore[assignment]
    if active is None:
        return None
    return questions_of(r, active)


def questions_of(r: redis.Redis, run_id: str) -> Pending | None:
    """The questions run ``run_id`` waits on; None if it waits on none."""
    questions = {str(i["id"]): dict(i["value"]) for i in pending_interrupts(r, run_id)}
    return Pending(run_id, questions, last_question(r, run_id)) if questions else None


def own_run(r: redis.Redis, run_id: str, agent: str, conversation: str, caller: Caller) -> RunInfo:
    """Run ``run_id`` if it is of ``agent``'s ``conversation`` in the caller's tenant.

    NotFound otherwise, as for a run that does not exist: what a client sends back (an
    elicitation's request state) names the run, and is checked against Redis here.
    """
    info = run_info(r, run_id, caller)
    theirs = (info.agent, info.sender, info.tenant) != (agent, conversation, caller.acting(None))
    if theirs:
        raise NotFound(f"unknown run {run_id!r} of {agent}/{conversation}")
    return info
