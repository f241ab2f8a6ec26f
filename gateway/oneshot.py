"""One-shot conversations: a stateless request's whole context, in a conversation of its own.

A stateless face (the OpenAI chat face without a sender, the Anthropic Messages face) takes
the whole context with each request. :func:`send` (``operations.send_with_context_async``)
seeds a new conversation with the turns before the last user message (:func:`prior_history`)
and sends that message, so parallel requests neither queue behind each other nor see each
other's messages.
The conversation is deleted once its run has ended: ``operations.forget`` after an answer that
waited for the end, :func:`then_forget` after a stream (which may end first). All of it on the
event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from gateway.hub import Hub
from gateway.operations import Submitted, forget, run_end, send_async, send_with_context_async
from walrus_tasks.config import Config
from walrus_tasks.errors import InvalidInput
from walrus_tasks.faces import Face
from walrus_tasks.models import SendMessage
from walrus_tasks.tenancy import Caller

log = logging.getLogger("walrus.gateway")


def prior_history(turns: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """History entries of a client's earlier ``(role, text)`` turns.

    ``user`` and ``assistant`` turns enter as they are; a client's ``system`` (or
    ``developer``) prompt enters as a user message marked ``(system)``, since the agent keeps
    its own system prompt. Any other role is InvalidInput.
    """
    out = []
    for role, text in turns:
        if role in ("user", "assistant"):
            out.append({"role": role, "content": text})
        elif role in ("system", "developer"):
            out.append({"role": "user", "content": f"(system) {text}"})
        else:
            raise InvalidInput(f"messages: role {role!r} is not supported")
    return out


async def send(
    aredis: aioredis.Redis,
    r: redis.Redis,
    config: Config,
    agent: str,
    content: str,
    key: str | None,
    earlier: Callable[[], list[dict[str, Any]]],
    who: Caller,
    face: Face,
) -> tuple[str | None, Submitted]:
    """A chat face's send of ``content``: ``(the one-shot conversation's sender, the run)``.

    Into conversation ``key`` of the caller's tenant (an admin's: the default one) when the
    client named one (no one-shot: None); else into a one-shot conversation seeded with the
    client's ``earlier()`` turns (read only then, so a keyed request's are never checked).
    """
    if key:
        asked = SendMessage(content=content, sender=key)
        return None, await send_async(aredis, r, config, agent, asked, None, who, face)
    return await send_with_context_async(
        aredis, r, config, agent, earlier(), content, who.tenant, face
    )


_forgetting: set[asyncio.Task[None]] = set()
"""One-shot conversations waiting for their run's end to be deleted (a reference each)."""


async def then_forget(
    frames: AsyncIterator[str],
    aredis: aioredis.Redis,
    hub: Hub,
    run_id: str,
    agent: str,
    sender: str,
) -> AsyncGenerator[str, None]:
    """``frames``, then the one-shot conversation is deleted once its run has ended.

    Also when the stream ended first (the client left, or a restarted reply diverged): a task
    waits for the run's end, since a conversation is not deleted while its run is active.
    """
    try:
        async for f in frames:
            yield f
    finally:
        task = asyncio.get_running_loop().create_task(
            _forget_after_end(aredis, hub, run_id, agent, sender)
        )
        _forgetting.add(task)
        task.add_done_callback(_forgetting.discard)


async def _forget_after_end(
    aredis: aioredis.Redis, hub: Hub, run_id: str, agent: str, sender: str
) -> None:
    try:
        await run_end(hub, run_id)
        await forget(aredis, agent, sender)
    except Exception:  # no one awaits this task: say why the conversation stays
        log.exception("one-shot conversation %s/%s not deleted", agent, sender)
