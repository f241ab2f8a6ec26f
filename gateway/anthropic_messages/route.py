"""``POST /v1/messages``: one message to an agent, answered as Anthropic's Messages API does.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.
"""

from functools import partial
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Header

from gateway.anthropic_messages.blocks import collect, stream_error, stream_message
from gateway.anthropic_messages.wire import (
    Message,
    MessagesRequest,
    anthropic_error,
    message_id,
    turns,
    usage_of,
)
from gateway.deps import ARedis, Cfg, Redis, StreamHub, Who
from gateway.errors import error_route, responses
from gateway.hub import Hub
from gateway.oneshot import prior_history, send, then_forget
from gateway.openai_compat import known_model
from gateway.operations import forget, run_error
from gateway.plain_post import streaming_post, with_sender
from gateway.sse import face_stream
from gateway.stream_limit import hold_stream
from walrus_tasks.config import Config
from walrus_tasks.faces import Face

FACE: Face = "anthropic-messages"

AnthropicRoute = error_route(anthropic_error)
"""Anthropic-compatible routes: every failure comes out in Anthropic's error shape."""

router = APIRouter(route_class=AnthropicRoute, tags=["Anthropic-compatible"])

ERRORS = responses({400: "invalid input, or client tools", 404: "unknown model (agent)",
                    413: "body too large", 502: "the run failed or was cancelled"})  # fmt: skip

NO_RETRY = {"x-should-retry": "false"}
"""Tells the client not to retry a run's failure: a retry would run the agent again."""


@router.post(
    "/v1/messages",
    response_model=Message,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def create_message(
    body: MessagesRequest,
    r: Redis,
    aredis: ARedis,
    hub: StreamHub,
    config: Cfg,
    who: Who,
    x_walrus_sender: Annotated[str | None, Header()] = None,
) -> Any:
    """Send the conversation's last user message to agent ``model``; the agent's answer.

    Stateless, as Anthropic's API is: ``system`` and the earlier ``messages`` are the context
    (after the agent's own system prompt; ``system`` as a user message marked ``(system)``),
    in a conversation of its own that is deleted once the run has ended. With an
    ``X-Walrus-Sender`` header the conversation lives server-side instead and only the last
    user message is sent into it. Client ``tools`` are a 400; a block other than text is a
    400. ``stream: true`` answers with Anthropic's SSE events; otherwise a ``message`` once
    the run has ended (502 if it failed or was cancelled). The message id is
    ``msg_<run_id>``.
    """
    return await answer(body, r, aredis, hub, config, who, x_walrus_sender)


async def answer(
    body: MessagesRequest,
    r: Redis,
    aredis: aioredis.Redis,
    hub: Hub,
    config: Config,
    who: Who,
    x_walrus_sender: str | None,
) -> Any:
    """What :func:`create_message` answers (its plain stream route's too)."""
    agent = body.model
    known_model(config, agent)
    if body.tools:
        message = "tools: client-side tools are not supported; the agent runs its own tools"
        return anthropic_error(400, "unsupported_parameter", message)
    said = turns(body)
    content = said[-1][1]
    thinking = body.thinking is not None and body.thinking.shown
    if body.stream:
        hold_stream()  # before the run is submitted: a refused stream starts nothing
    earlier = partial(prior_history, said[:-1])
    oneshot, submitted = await send(
        aredis, r, config, agent, content, x_walrus_sender, earlier, who, FACE
    )
    run_id = submitted.run_id
    if body.stream:
        frames = stream_message(hub, run_id, agent, thinking)
        if oneshot:
            frames = then_forget(frames, aredis, hub, run_id, agent, oneshot)
        return face_stream(hub, frames, stream_error(run_id))
    blocks, end = await collect(hub, run_id, thinking)
    if oneshot:
        await forget(aredis, agent, oneshot)
    if end is None or end.get("status") != "succeeded":
        code, message = run_error(run_id, end)
        response = anthropic_error(502, code, message, run_id=run_id)
        response.headers.update(NO_RETRY)
        return response
    return Message(id=message_id(run_id), content=blocks, model=agent, usage=usage_of(end))


PLAIN_MESSAGE = streaming_post(
    router, "/v1/messages", MessagesRequest, with_sender(answer), anthropic_error
)
"""``POST /v1/messages`` with ``"stream": true``, below FastAPI (``gateway.plain_post``)."""
