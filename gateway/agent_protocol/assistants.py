"""Assistants (one per walrus agent, also its graph), ``/info`` and ``/ok``.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.
The routes are ``async def``: they read only the config, and FastAPI would run a plain ``def``
on a thread of its pool (a hop per request, for a dict read).
"""

from typing import Any

from fastapi import APIRouter

from gateway import operations as ops
from gateway.agent_protocol.errors import AgentProtocolRoute
from gateway.agent_protocol.models import Search
from gateway.deps import Cfg
from walrus_tasks.config import Config

router = APIRouter(route_class=AgentProtocolRoute, tags=["Agent Protocol"])
EPOCH = "1970-01-01T00:00:00+00:00"
MESSAGES_SCHEMA = {
    "type": "object",
    "properties": {"messages": {"type": "array", "items": {"type": "object"}}},
    "required": ["messages"],
}


def assistant(config: Config, name: str) -> dict[str, Any]:
    """Agent ``name`` as an assistant of the graph of the same name."""
    info = ops.agent_info(config, name)
    return {
        "assistant_id": info.name,
        "graph_id": info.name,
        "name": info.name,
        "description": info.description or None,
        "config": {},
        "context": {},
        "metadata": {"description": info.description, "model": info.model, "tools": info.tools},
        "version": 1,
        "created_at": EPOCH,
        "updated_at": EPOCH,
    }


@router.get("/ok")
async def ok() -> dict[str, bool]:
    """Liveness, as LangGraph Server answers it."""
    return {"ok": True}


@router.get("/info")
async def info() -> dict[str, Any]:
    """What this server is and which optional parts of the protocol it has."""
    return {"version": "walrus", "flags": {"assistants": True, "crons": True, "langsmith": False}}


@router.post("/assistants/search")
async def search_assistants(body: Search, config: Cfg) -> list[dict[str, Any]]:
    """The agents as assistants (filters: ``graph_id``, ``name``, ``metadata``)."""
    return _search(body, config)


@router.post("/assistants/count")
async def count_assistants(body: Search, config: Cfg) -> int:
    """How many assistants match."""
    return len(_search(body.model_copy(update={"limit": 1000, "offset": 0}), config))


def _search(body: Search, config: Config) -> list[dict[str, Any]]:
    found = [assistant(config, n) for n in sorted(config.agents)]
    found = [
        a
        for a in found
        if (body.graph_id is None or a["graph_id"] == body.graph_id)
        and (body.name is None or body.name in a["name"])
        and all(a["metadata"].get(k) == v for k, v in (body.metadata or {}).items())
    ]
    return found[body.offset : body.offset + body.limit]


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, config: Cfg) -> dict[str, Any]:
    """One assistant (404 for an unknown agent)."""
    return assistant(config, assistant_id)


@router.get("/assistants/{assistant_id}/schemas")
async def get_schemas(assistant_id: str, config: Cfg) -> dict[str, Any]:
    """The graph's schemas: its state is a list of messages."""
    name = ops.known_agent(config, assistant_id)
    return {"graph_id": name, "input_schema": MESSAGES_SCHEMA, "output_schema": MESSAGES_SCHEMA,
            "state_schema": MESSAGES_SCHEMA, "config_schema": None,
            "context_schema": None}  # fmt: skip


@router.get("/assistants/{assistant_id}/graph")
async def get_graph(assistant_id: str, config: Cfg) -> dict[str, Any]:
    """The agent loop as a graph: the model, its tools, and back."""
    ops.known_agent(config, assistant_id)
    nodes = [{"id": n, "type": "runnable", "data": n} for n in ("__start__", "agent", "tools")]
    nodes.append({"id": "__end__", "type": "runnable", "data": "__end__"})
    edges = [("__start__", "agent", False), ("agent", "tools", True), ("tools", "agent", False),
             ("agent", "__end__", True)]  # fmt: skip
    return {
        "nodes": nodes,
        "edges": [{"source": s, "target": t, "conditional": c} for s, t, c in edges],
    }


@router.get("/assistants/{assistant_id}/subgraphs")
async def get_subgraphs(assistant_id: str, config: Cfg) -> dict[str, Any]:
    """No subgraphs."""
    ops.known_agent(config, assistant_id)
    return {}
