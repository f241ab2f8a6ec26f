"""A2A 1.0 at ``/a2a/{agent}``: each agent an A2A agent, for the official ``a2a-sdk`` clients.

Both bindings at one URL per agent (JSON-RPC, and HTTP+JSON under it), the agent's card at
``/a2a/{agent}/.well-known/agent-card.json`` and the gateway's catalog card at
``/.well-known/agent-card.json``. A task is a walrus run (its id is the run id), a context is
a conversation (its id is the sender): :mod:`gateway.a2a.handler` implements the SDK's request
handler over :mod:`gateway.operations`, and the SDK's routes speak the protocol, but for a
``SubscribeToTask`` over JSON-RPC, served as a plain stream (:mod:`gateway.a2a.subscribe`).
See docs/a2a.md.
"""

from gateway.a2a.routes import install

__all__ = ["install"]
