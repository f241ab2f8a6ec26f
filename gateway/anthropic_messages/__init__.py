"""An Anthropic-compatible face of the gateway: ``POST /v1/messages`` (the Messages API).

``model`` names an agent. The request is stateless, as Anthropic's API is: ``messages`` (and
``system``) are the whole context, sent whole each time, in a one-shot conversation of its own
(:mod:`gateway.oneshot`); an ``X-Walrus-Sender`` header keeps the conversation server-side
instead. The answer is a ``message`` whose ``id`` is ``msg_<run_id>``, streamed as Anthropic's
SSE events with ``stream: true``. ``metadata.user_id``, ``max_tokens`` and the sampling
parameters are accepted and not applied; client ``tools`` and non-text blocks are refused
(400). Errors are ``{"type": "error", "error": {"type", "message", "code"}}``: Anthropic's
shape with our code. The token may come as ``x-api-key`` (what the ``anthropic`` package
sends) or as a bearer token (``gateway.auth``). ``GET /v1/models`` stays the OpenAI face's.

- :mod:`.wire`: the request and answer models, the error shape;
- :mod:`.blocks`: a run's events as content blocks, whole or streamed;
- :mod:`.route`: the endpoint.
"""

from gateway.anthropic_messages.route import router
from gateway.anthropic_messages.wire import anthropic_error

__all__ = ["anthropic_error", "router"]
