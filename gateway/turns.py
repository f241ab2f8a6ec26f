"""Acting on a conversation's turn in flight: reply to a question, steer, compact, archives.

No ``from __future__ import annotations``: FastAPI resolves the ``Annotated`` aliases at runtime.
"""

from collections.abc import Callable
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI

from walrus_tasks import store, waits
from walrus_tasks.config import Config
from walrus_tasks.connection import get_redis
from walrus_tasks.models import Accepted, Replied, Reply, Steer, Steered
from walrus_tasks.names import agent_name, sender_name
from walrus_tasks.submit import Submitted, submit

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d, "content": {"application/json": {}}}
    for s, d in [(404, "unknown agent"), (409, "no active run / nothing waits"),
                 (422, "invalid input")]
}  # fmt: skip

COMPACT_REQUEST = "(compact the conversation)"
"""The content recorded for a compaction run (it never enters history)."""


def request_compaction(r: redis.Redis, agent: str, sender: str) -> Submitted:
    """Queue a compaction of the conversation: a run of its own, in order, under the lease."""
    return submit(r, agent, sender, COMPACT_REQUEST, meta={"kind": "compact"})


def register(app: FastAPI, cfg: Callable[[], Config]) -> None:
    """Add the reply, steer, compact and archive routes."""

    def known_agent(agent: str) -> str:
        cfg().agent(agent_name(agent))
        return agent

    Agent = Annotated[str, Depends(known_agent)]
    Redis = Annotated[redis.Redis, Depends(get_redis)]
    base = "/v1/agents/{agent}/conversations/{sender}"

    @app.post(f"{base}/reply", response_model=Replied, responses=ERRORS)
    def reply(agent: Agent, sender: str, body: Reply, r: Redis) -> Replied:
        """Answer the pending ``ask_user`` (or approval); resumes the run on any worker."""
        done = waits.reply(r, agent, sender_name(sender), body.content, body.call_id or "")
        return done

    @app.post(f"{base}/steer", status_code=202, response_model=Steered, responses=ERRORS)
    def steer(agent: Agent, sender: str, body: Steer, r: Redis) -> Steered:
        """Inject a message before the active run's next LLM call; 409 when none is active."""
        return Steered(run_id=waits.steer(r, agent, sender_name(sender), body.content))

    @app.post(f"{base}/compact", status_code=202, response_model=Accepted, responses=ERRORS)
    def compact(agent: Agent, sender: str, r: Redis) -> Accepted:
        """Summarise the history into one message; the old history goes to the archive."""
        run_id = request_compaction(r, agent, sender_name(sender)).run_id
        return Accepted(run_id=run_id, events_url=f"/v1/runs/{run_id}/events")

    @app.get(f"{base}/archive", responses=ERRORS)
    def archive(agent: Agent, sender: str, r: Redis) -> dict[str, list[dict[str, Any]]]:
        """The histories compaction replaced, oldest first (``{archived_at, run_id, messages}``)."""
        return {"archives": store.archives(r, agent, sender_name(sender))}
