"""Agent cards: each agent's at ``/a2a/{agent}/.well-known/agent-card.json``, and the gateway's.

An agent's card names it, says what it does (its description; one skill for the agent, whose
tags are its tools, and one for each of its walrus skills), and lists two interfaces at the
same URL, ``/a2a/{agent}``: JSON-RPC first, then HTTP+JSON, both A2A 1.0. It streams; it has
no push notifications and no extended card. With tokens configured its security scheme is
``bearer`` (the gateway's tokens), and the card itself needs one (``gateway.auth``).

The gateway's card, at ``/.well-known/agent-card.json``, is a catalog, not an agent: it has
no interface of its own, one skill per agent (the skill id is the agent's name, so its card is
at ``/a2a/{id}/.well-known/agent-card.json``), and the extension :data:`CATALOG` whose params
list each agent's endpoint and card URL. A token limited to some agents sees only those.
URLs are absolute, built from the request's base URL (the ``Host`` the origin guard let in).
"""

from __future__ import annotations

from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import PROTOCOL_VERSION_1_0, TransportProtocol
from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.a2a.errors import unknown_agent
from gateway.a2a.tasks import struct
from gateway.auth import GRANT_KEY
from walrus_tasks.config import AgentConfig, Config

CARD_PATH = "/.well-known/agent-card.json"
"""Where a card is, under the gateway's root and under each agent's endpoint."""
CATALOG = "urn:walrus-tasks:a2a:agent-catalog"
"""The gateway card's extension whose params list ``{agents: [{name, description, url, card}]}``."""
BINDINGS = (TransportProtocol.JSONRPC, TransportProtocol.HTTP_JSON)
"""The interfaces of every agent, in the order of preference."""
INPUT_MODES = ["text/plain", "application/json"]
"""What a message may carry: text parts, and data parts (sent to the agent as JSON text)."""
OUTPUT_MODES = ["text/plain"]


def endpoint(base: str, agent: str) -> str:
    """The URL of ``agent``'s A2A endpoint (both bindings)."""
    return f"{base}/a2a/{agent}"


def description_of(a: AgentConfig) -> str:
    """What the agent says it does (a card's description may not be empty)."""
    return a.description or f"The walrus agent {a.name}."


def skills_of(config: Config, a: AgentConfig) -> list[AgentSkill]:
    """The agent itself (tagged with its tools), then each of its walrus skills."""
    own = AgentSkill(
        id=a.name, name=a.name, description=description_of(a), tags=["walrus-agent", *a.tools],
        input_modes=INPUT_MODES, output_modes=OUTPUT_MODES,
    )  # fmt: skip
    skills = [own]
    for name in a.skills:
        if (skill := config.skills.get(name)) is not None:
            tags = ["walrus-skill", *skill.allowed_tools]
            skills.append(
                AgentSkill(
                    id=f"{a.name}/{name}", name=name, description=skill.description, tags=tags
                )
            )
    return skills


def security(config: Config) -> dict[str, Any]:
    """The card fields that say a bearer token is needed (none on an open gateway)."""
    if not config.gateway.tokens:
        return {}
    bearer = HTTPAuthSecurityScheme(
        scheme="bearer", description="a gateway token: 'Authorization: Bearer <token>'"
    )
    return {
        "security_schemes": {"bearer": SecurityScheme(http_auth_security_scheme=bearer)},
        "security_requirements": [SecurityRequirement(schemes={"bearer": StringList()})],
    }


def agent_card(config: Config, a: AgentConfig, base: str, version: str) -> AgentCard:
    """The card of agent ``a``, served at ``base``."""
    url = endpoint(base, a.name)
    interfaces = [
        AgentInterface(url=url, protocol_binding=b, protocol_version=PROTOCOL_VERSION_1_0)
        for b in BINDINGS
    ]
    return AgentCard(
        name=a.name, description=description_of(a), supported_interfaces=interfaces,
        version=version, capabilities=AgentCapabilities(streaming=True),
        default_input_modes=INPUT_MODES, default_output_modes=OUTPUT_MODES,
        skills=skills_of(config, a), **security(config),
    )  # fmt: skip


def catalog_card(config: Config, names: list[str], base: str, version: str) -> AgentCard:
    """The gateway's card: agents ``names`` as skills, and their URLs in :data:`CATALOG`."""
    agents = [config.agents[n] for n in names]
    listed = [
        {"name": a.name, "description": description_of(a), "url": endpoint(base, a.name),
         "card": endpoint(base, a.name) + CARD_PATH}
        for a in agents
    ]  # fmt: skip
    catalog = AgentExtension(
        uri=CATALOG, description="the agents of this gateway, each an A2A agent of its own",
        required=False, params=struct({"agents": listed}),
    )  # fmt: skip
    return AgentCard(
        name="walrus_tasks gateway",
        description=(
            f"A catalog of {len(agents)} agents, not an agent: each skill is one agent, whose "
            "A2A endpoint is /a2a/{id} and whose card is /a2a/{id}" + CARD_PATH
        ),
        version=version,
        capabilities=AgentCapabilities(streaming=True, extensions=[catalog]),
        default_input_modes=INPUT_MODES, default_output_modes=OUTPUT_MODES,
        skills=[skills_of(config, a)[0] for a in agents], **security(config),
    )  # fmt: skip


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def agent_card_route(request: Request) -> Response:
    """An agent's card (404 for an agent that is not configured)."""
    config: Config = request.app.state.config
    name = request.path_params["agent"]
    if name not in config.agents:  # a dict lookup: the name touches no key or path
        return unknown_agent(name, jsonrpc=False)
    card = agent_card(config, config.agents[name], _base(request), request.app.version)
    return JSONResponse(agent_card_to_dict(card))


async def gateway_card_route(request: Request) -> Response:
    """The gateway's card: the catalog of the agents the caller's token may use."""
    config: Config = request.app.state.config
    grant = request.scope.get(GRANT_KEY)
    names = [n for n in sorted(config.agents) if grant is None or grant.permits(n)]
    card = catalog_card(config, names, _base(request), request.app.version)
    return JSONResponse(MessageToDict(card))
