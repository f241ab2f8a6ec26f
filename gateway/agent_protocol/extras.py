"""Crons (on walrus crons) and the store (on Redis) of the Agent Protocol.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

A cron on a thread sends to the thread's conversation; a stateless one to ``cron:<id>`` as a
walrus cron does. The store keeps each namespace in one hash (``operations.store_*``); a search
filters on equal values and, given ``query``, on the words of the JSON value (no embeddings).

Both are the caller's tenant's (``tenant.Space``): a cron is a walrus cron of the tenant (it
fires into the tenant's conversation; another tenant's is a 404 and left out of searches), and
each tenant has a store of its own.
"""

import json
from typing import Any

from fastapi import APIRouter, Response

from gateway import operations as ops
from gateway import thread_operations as thread_ops
from gateway.agent_protocol import messages, state
from gateway.agent_protocol.errors import AgentProtocolRoute
from gateway.agent_protocol.models import (
    CronCreate,
    NamespaceSearch,
    Search,
    StoreItem,
    StoreKey,
    StoreSearch,
)
from gateway.agent_protocol.tenant import Space
from gateway.deps import Cfg, Redis
from walrus_tasks.errors import InvalidInput, NotFound
from walrus_tasks.json_depth import loads_stored
from walrus_tasks.models import CronEntry, CronSpec
from walrus_tasks.tenancy import Caller

router = APIRouter(route_class=AgentProtocolRoute, tags=["Agent Protocol"])
THREAD_PREFIX = "thread:"


def cron_view(e: CronEntry) -> dict[str, Any]:
    """A walrus cron entry as an Agent Protocol cron."""
    thread = e.sender[len(THREAD_PREFIX) :] if e.sender.startswith(THREAD_PREFIX) else None
    return {
        "cron_id": e.id,
        "assistant_id": e.agent,
        "thread_id": thread,
        "schedule": e.schedule,
        "timezone": e.timezone,
        "created_at": state.iso(e.created_at * 1000),
        "updated_at": state.iso(e.created_at * 1000),
        "next_run_date": state.iso(e.next_fire_at * 1000),
        "end_time": None,
        "user_id": None,
        "on_run_completed": None,
        "webhook": e.webhook,
        "payload": {"input": {"messages": [{"type": "human", "content": e.message}]}},
        "metadata": {"last_run_id": e.last_run_id, "fires": e.fires},
        "enabled": True,
    }


def _cron(
    r: Any, config: Any, tenant: str | None, body: CronCreate, sender: str | None
) -> dict[str, Any]:
    spec = CronSpec(
        schedule=body.schedule,
        agent=body.assistant_id,
        sender=sender,
        message=messages.input_text(body.input),
        timezone=body.timezone,
        webhook=body.webhook,
        tenant=tenant,
    )
    return cron_view(ops.create_cron(r, config, spec))  # ``tenant`` is already the acting one


@router.post("/runs/crons")
def create_cron(body: CronCreate, r: Redis, config: Cfg, tenant: Space) -> dict[str, Any]:
    """A cron that sends ``input`` to the assistant on ``schedule`` (its own conversation)."""
    return _cron(r, config, tenant, body, None)


@router.post("/threads/{thread_id}/runs/crons")
def create_thread_cron(
    thread_id: str, body: CronCreate, r: Redis, config: Cfg, tenant: Space
) -> dict[str, Any]:
    """A cron that sends ``input`` into the thread on ``schedule``."""
    h = thread_ops.get_thread(r, tenant, thread_id)
    thread_ops.bind_thread(r, h, ops.known_agent(config, body.assistant_id))
    # The entry keeps the client's sender; beat scopes it to the entry's tenant as it fires.
    return _cron(r, config, tenant, body, thread_ops.thread_sender(thread_id))


@router.post("/runs/crons/search")
def search_crons(body: Search, r: Redis, tenant: Space) -> list[dict[str, Any]]:
    """Crons of the caller's tenant, of one assistant or thread if given."""
    views = [cron_view(e) for e in ops.list_crons(r, Caller(tenant)) if e.tenant == tenant]
    views = [
        v
        for v in views
        if (body.assistant_id is None or v["assistant_id"] == body.assistant_id)
        and (body.thread_id is None or v["thread_id"] == body.thread_id)
    ]
    return views[body.offset : body.offset + body.limit]


@router.delete("/runs/crons/{cron_id}", status_code=204)
def delete_cron(cron_id: str, r: Redis, tenant: Space) -> Response:
    """Delete a cron of the caller's tenant (404 if there is none, or it is another's)."""
    if ops.get_cron(r, cron_id).tenant != tenant:
        raise NotFound(f"unknown cron {cron_id!r}")
    ops.delete_cron(r, cron_id)
    return Response(status_code=204)


# --- the store ---------------------------------------------------------------------------------


def _namespace(labels: list[str]) -> str:
    if not labels or any(not label or "." in label for label in labels):
        raise InvalidInput("namespace: non-empty labels without '.'")
    return ".".join(labels)


def _item(ns: str, key: str, raw: str) -> dict[str, Any]:
    stored = loads_stored(raw)  # a value stored before the depth bound is cut, not a 500
    return {"namespace": ns.split("."), "key": key, "value": stored["value"],
            "created_at": stored["created_at"], "updated_at": stored["updated_at"]}  # fmt: skip


@router.put("/store/items", status_code=204)
def put_item(body: StoreItem, r: Redis, tenant: Space) -> Response:
    """Store ``value`` under ``(namespace, key)``."""
    thread_ops.store_put(r, tenant, _namespace(body.namespace), body.key, body.value)
    return Response(status_code=204)


@router.get("/store/items")
def get_item(namespace: str, key: str, r: Redis, tenant: Space) -> dict[str, Any]:
    """One item (``namespace`` dotted), or 404."""
    ns = _namespace(namespace.split("."))
    raw = thread_ops.store_get(r, tenant, ns, key)
    if raw is None:
        raise NotFound(f"no item {key!r} in namespace {namespace!r}")
    return _item(ns, key, raw)


@router.delete("/store/items", status_code=204)
def delete_item(body: StoreKey, r: Redis, tenant: Space) -> Response:
    """Delete one item."""
    thread_ops.store_delete(r, tenant, _namespace(body.namespace), body.key)
    return Response(status_code=204)


@router.post("/store/items/search")
def search_items(body: StoreSearch, r: Redis, tenant: Space) -> dict[str, list[dict[str, Any]]]:
    """Items under ``namespace_prefix`` whose value has every ``filter`` pair (and ``query``)."""
    prefix = body.namespace_prefix
    found = []
    for ns in thread_ops.store_namespaces(r, tenant):
        if ns.split(".")[: len(prefix)] != prefix:
            continue
        for key, raw in sorted(thread_ops.store_items(r, tenant, ns).items()):
            item = _item(ns, key, raw)
            value = item["value"]
            if any(value.get(k) != v for k, v in (body.filter or {}).items()):
                continue
            text = json.dumps(value, ensure_ascii=False).lower()
            if body.query and not all(w in text for w in body.query.lower().split()):
                continue
            found.append({**item, "score": None})
    return {"items": found[body.offset : body.offset + body.limit]}


@router.post("/store/namespaces")
def list_namespaces(body: NamespaceSearch, r: Redis, tenant: Space) -> dict[str, list[list[str]]]:
    """The namespaces (by ``prefix``, ``suffix``, cut at ``max_depth``)."""
    out: list[list[str]] = []
    for ns in thread_ops.store_namespaces(r, tenant):
        labels = ns.split(".")
        if body.prefix and labels[: len(body.prefix)] != body.prefix:
            continue
        if body.suffix and labels[-len(body.suffix) :] != body.suffix:
            continue
        labels = labels[: body.max_depth] if body.max_depth else labels
        if labels not in out:
            out.append(labels)
    return {"namespaces": out[body.offset : body.offset + body.limit]}
