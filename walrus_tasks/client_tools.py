"""Client-side tools: functions a client offers with one message and runs itself.

A send's ``client_tools`` (:class:`walrus_tasks.models.ClientTool`) are stored on the run, as
the JSON run field ``client_tools`` (:func:`run_field`, checked first: a name that is one of the
agent's own tools is refused). The worker offers them to the model beside the agent's tools,
and a call to one parks the run as a wait of kind ``client`` (``WAIT_KIND``) with the event
``ask_user {kind: "client_tool"}`` (``EVENT_KIND``), holding no worker, until the client's
reply gives the function's output (``walrus_tasks.waits.reply``), the wait times out
(``ask_timeout``) or the run is cancelled: the same wait as ``ask_user`` (docs/waits.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

from pydantic import TypeAdapter

from walrus_tasks.config import AgentConfig
from walrus_tasks.errors import InvalidInput
from walrus_tasks.models import ClientTool
from walrus_tasks.tool_names import MCP_SEPARATOR

RUN_FIELD = "client_tools"
"""The run record's field holding the run's client tools (a JSON list)."""

WAIT_KIND: Final = "client"
"""The kind of a parked call to a client tool (``runs.WaitKind``)."""

EVENT_KIND: Final = "client_tool"
"""The ``kind`` of the ``ask_user`` event a call to a client tool emits."""

_TOOLS: TypeAdapter[list[ClientTool]] = TypeAdapter(list[ClientTool])


def owned_by(agent: AgentConfig, name: str) -> bool:
    """Whether ``name`` is, or may be, one of ``agent``'s own tools.

    A built-in it lists, ``delegate`` (with ``members``), ``skill`` (with ``skills``), or a tool
    of one of its MCP servers (``<server>__…``: the server's list is not known here).
    """
    if name in agent.tools:
        return True
    if (name == "delegate" and agent.members) or (name == "skill" and agent.skills):
        return True
    return any(name.startswith(f"{server}{MCP_SEPARATOR}") for server in agent.mcps)


def run_field(agent: AgentConfig, tools: Sequence[ClientTool]) -> str:
    """The run field of ``tools`` offered to ``agent``; InvalidInput when a name clashes.

    A name given twice, or one of the agent's own tools (``owned_by``), is refused: the model
    could not tell which one it calls.
    """
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise InvalidInput(f"client_tools: {tool.name!r} is given twice")
        if owned_by(agent, tool.name):
            raise InvalidInput(
                f"client_tools: {tool.name!r} is one of agent {agent.name!r}'s own tools; "
                "give the function another name"
            )
        seen.add(tool.name)
    return json.dumps([t.model_dump() for t in tools], separators=(",", ":"))


def of_run(agent: AgentConfig, record: Mapping[str, str]) -> dict[str, ClientTool]:
    """The client tools of run ``record``, by name, that ``agent`` does not own.

    (The gateway refused a clash; one the agent's config brought in since is the agent's.)
    """
    raw = record.get(RUN_FIELD)
    if not raw:
        return {}
    return {t.name: t for t in _TOOLS.validate_json(raw) if not owned_by(agent, t.name)}
