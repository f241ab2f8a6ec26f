"""Threads: ``/threads`` create, read, patch, delete, search, state and history.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

Each route acts in the caller's tenant (``tenant.Space``): another tenant's thread is a 404 and
never in a search, whatever its id.
"""

from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Response

from gateway import thread_operations as thread_ops
from gateway import thread_state
from gateway.agent_protocol import state
from gateway.agent_protocol.errors import AgentProtocolRoute
from gateway.agent_protocol.models import Search, ThreadCreate, ThreadPatch
from gateway.agent_protocol.tenant import Space
from gateway.deps import ARedis

router = APIRouter(route_class=AgentProtocolRoute, tags=["Agent Protocol"])


@router.post("/threads")
async def create_thread(body: ThreadCreate, aredis: ARedis, tenant: Space) -> dict[str, Any]:
    """Create a thread (``if_exists``: ``raise`` -> 409, ``do_nothing``).

    On the event loop; a bare thread (made now, no assistant, no runs) is shown with no read of
    a conversation, since it has none (docs/benchmarks.md, issue 25, twentieth and
    twenty-second rounds).
    """
    h, bare = await thread_ops.create_thread_async(
        aredis, tenant, body.thread_id, body.metadata, body.if_exists
    )
    return state.new_thread_view(h) if bare else await state.thread_view_async(aredis, h)


def _matches(view: dict[str, Any], body: Search) -> bool:
    meta = view["metadata"]
    return (
        all(meta.get(k) == v for k, v in (body.metadata or {}).items())
        and (body.status is None or view["status"] == body.status)
        and (body.ids is None or view["thread_id"] in body.ids)
    )


async def _search(aredis: aioredis.Redis, tenant: str | None, body: Search) -> list[dict[str, Any]]:
    """The views of ``tenant``'s threads that match ``body``, sorted.

    A few round trips on the event loop whatever their number (``state.thread_views``), not
    several a thread on a thread of the pool.
    """
    views = await state.thread_views(aredis, await thread_state.threads(aredis, tenant))
    views = [v for v in views if _matches(v, body)]
    key = body.sort_by or "created_at"
    views.sort(key=lambda v: str(v.get(key) or ""), reverse=(body.sort_order or "desc") == "desc")
    return views


@router.post("/threads/search")
async def search_threads(body: Search, aredis: ARedis, tenant: Space) -> list[dict[str, Any]]:
    """Threads whose metadata has every given pair (``graph_id`` too), of ``status``, by page."""
    return (await _search(aredis, tenant, body))[body.offset : body.offset + body.limit]


@router.post("/threads/count")
async def count_threads(body: Search, aredis: ARedis, tenant: Space) -> int:
    """How many threads match."""
    return len(await _search(aredis, tenant, body))


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: str, aredis: ARedis, tenant: Space) -> dict[str, Any]:
    """One thread, with its values, status and interrupts."""
    h = await thread_ops.get_thread_async(aredis, tenant, thread_id)
    return await state.thread_view_async(aredis, h)


@router.patch("/threads/{thread_id}")
async def patch_thread(
    thread_id: str, body: ThreadPatch, aredis: ARedis, tenant: Space
) -> dict[str, Any]:
    """Merge ``metadata`` into the thread's."""
    h = await thread_ops.patch_thread_async(aredis, tenant, thread_id, body.metadata)
    return await state.thread_view_async(aredis, h)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, aredis: ARedis, tenant: Space) -> Response:
    """Delete the thread and its conversation (409 while a run is active)."""
    await thread_ops.delete_thread_async(aredis, tenant, thread_id)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/state")
async def get_state(thread_id: str, aredis: ARedis, tenant: Space) -> dict[str, Any]:
    """The thread's current state: values, next, tasks, interrupts."""
    h = await thread_ops.get_thread_async(aredis, tenant, thread_id)
    return await state.state_view(aredis, h)


@router.post("/threads/{thread_id}/history")
async def get_history(
    thread_id: str, aredis: ARedis, tenant: Space, body: dict[str, Any] | None = None
) -> list[Any]:
    """The thread's states, newest first: walrus keeps the current one only."""
    h = await thread_ops.get_thread_async(aredis, tenant, thread_id)
    view = await state.state_view(aredis, h)
    wanted = (body or {}).get("metadata") or {}
    if any(view["metadata"].get(k) != v for k, v in wanted.items()):
        return []
    return [view][: int((body or {}).get("limit", 10))]
