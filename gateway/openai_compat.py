"""An OpenAI-compatible face of the gateway: ``POST /v1/chat/completions`` and ``/v1/models``.

``model`` names an agent. With ``user`` (or an ``X-Walrus-Sender`` header) naming the sender, the
conversation lives server-side, addressed by ``(agent, sender)`` as everywhere else, so only the
**last** ``user`` message of the request's ``messages`` is sent. Without either the request is
stateless: its ``messages`` are the whole context, in a one-shot conversation of its own.
Sampling parameters are ignored; ``n > 1`` and client ``tools`` are refused (400). Errors are
``{"error": {"message", "type", "code"}}``, which both OpenAI clients and ours understand.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.
"""

import json
import time
from collections.abc import AsyncGenerator
from functools import partial
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import ARedis, Cfg, Redis, StreamHub, Who
from gateway.errors import error_route, responses
from gateway.hub import Hub
from gateway.oneshot import prior_history, send, then_forget
from gateway.operations import (
    forget,
    run_end,
    run_error,
    run_events,
)
from gateway.plain_post import streaming_post, with_sender
from gateway.sse import KEEP_ALIVE, ErrorRender, face_stream
from gateway.stream_limit import hold_stream
from walrus_tasks.config import Config
from walrus_tasks.errors import InvalidInput, NotFound
from walrus_tasks.faces import Face
from walrus_tasks.reply_text import REPLY_RESTARTED, ForwardOnce, ReplyDiverged, ReplyText


def openai_error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """``{"error": {"message", "type", "code"}}``: OpenAI's error shape, with our ``code``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"message": message, "type": kind, "code": code, **extra}
    return JSONResponse({"error": body}, status_code=status)


OpenAIRoute = error_route(openai_error)
"""OpenAI-compatible routes: every failure comes out in OpenAI's error shape."""


class ChatMessage(BaseModel):
    """One entry of ``messages``; only ``user`` entries are read."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a final usage chunk."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``; unknown OpenAI parameters are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the agent")
    messages: list[ChatMessage] = Field(min_length=1, description="only the last user message")
    user: str | None = Field(
        default=None,
        description="the sender: the server-side conversation to continue; without it (and "
        "without an `X-Walrus-Sender` header) the request is stateless",
    )
    n: int | None = Field(default=None, description="only 1 (a run has one answer)")
    tools: list[Any] | None = Field(default=None, description="refused: the agent's own tools run")
    functions: list[Any] | None = Field(default=None, description="refused, as `tools`")
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionUsage(BaseModel):
    """Token counts of the run, summed over its steps."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    """The agent's reply: the text of every step of the run (a restarted step's once)."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """The one choice of a completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(BaseModel):
    """A non-streamed answer; ``id`` is ``chatcmpl-<run_id>``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class ModelInfo(BaseModel):
    """One agent, as an OpenAI model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "walrus"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelInfo]


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: a string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    parts = content or []
    return "\n".join(
        p["text"] for p in parts if p.get("type") == "text" and isinstance(p.get("text"), str)
    )


def last_user_text(messages: list[ChatMessage]) -> str:
    """The text of the last ``user`` message, or InvalidInput."""
    user = next((m for m in reversed(messages) if m.role == "user"), None)
    if user is None:
        raise InvalidInput("messages: no message with role 'user'")
    text = content_text(user.content)
    if not text.strip():
        raise InvalidInput("messages: the last user message has no text")
    return text


def unsupported(body: ChatCompletionRequest) -> str | None:
    """Why the request asks for what walrus does not do (``n > 1``, client tools), or None."""
    if body.n is not None and body.n > 1:
        return "n: only n=1 is supported (a run has one answer)"
    if body.tools or body.functions:
        return "tools: client-side tools are not supported; the agent runs its own tools"
    return None


def prior_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The messages before the last ``user`` one, as history (client system prompts as user)."""
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    return prior_history((m.role, content_text(m.content)) for m in messages[:last])


def usage_of(end: dict[str, Any]) -> CompletionUsage:
    """OpenAI usage from an ``end`` event's ``usage``."""
    usage = end.get("usage") or {}
    i, o = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return CompletionUsage(prompt_tokens=i, completion_tokens=o, total_tokens=i + o)


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
"""How an OpenAI stream ends (chat completions and Responses alike)."""


def stream_error(run_id: str) -> ErrorRender:
    """How run ``run_id``'s stream ends with an error: an ``{"error"}`` chunk, then ``[DONE]``.

    The ``openai`` package raises ``APIError`` (``body`` the error object) on a ``data:`` chunk
    that carries ``error``; ``[DONE]`` ends the stream for any other reader.
    """

    def render(code: str, message: str) -> str:
        body = {"message": message, "type": "server_error", "code": code, "run_id": run_id}
        return _data({"error": body}) + DONE

    return render


async def stream_chunks(
    hub: Hub, run_id: str, agent: str, include_usage: bool
) -> AsyncGenerator[str, None]:
    """The run as ``chat.completion.chunk`` SSE frames, then ``data: [DONE]``.

    A run that fails or is cancelled ends with an ``{"error": {...}}`` frame instead of the
    ``finish_reason`` chunk; idle waits send SSE comments as keep-alives. A step that restarted
    (its worker was lost) sends no word twice: while its new text repeats what went out it
    sends nothing, and where it differs the stream ends with a ``reply_restarted`` error.
    (Redis away too long ends it with :func:`stream_error`'s ``unavailable``: see
    :func:`gateway.sse.guarded`.)
    """
    head: dict[str, Any] = {"id": f"chatcmpl-{run_id}", "object": "chat.completion.chunk",
                            "created": int(time.time()), "model": agent}  # fmt: skip

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _data({**head, "choices": [choice]})

    error = stream_error(run_id)
    yield chunk({"role": "assistant", "content": ""})
    end: dict[str, Any] | None = None
    once = ForwardOnce()
    async for _, event in run_events(hub, run_id, "0-0"):
        if event is None:
            yield KEEP_ALIVE
            continue
        try:
            text = once.feed(event)
        except ReplyDiverged as e:
            yield error(REPLY_RESTARTED, e.message)
            return
        if text:
            yield chunk({"content": text})
        if event["type"] == "end":
            end = event
    if end is not None and end.get("status") == "succeeded":
        yield chunk({}, "stop")
        if include_usage:
            yield _data({**head, "choices": [], "usage": usage_of(end).model_dump()})
    else:
        yield error(*run_error(run_id, end))
        return
    yield DONE


async def collect(hub: Hub, run_id: str) -> tuple[str, dict[str, Any] | None]:
    """The run's reply text (a restarted step's once), and its ``end`` (None: the run vanished)."""
    reply = ReplyText()
    end = await run_end(hub, run_id, reply.feed)
    return reply.text, end


ERRORS = responses({404: "unknown model (agent)", 413: "body too large", 422: "invalid input",
                    502: "the run failed or was cancelled"})  # fmt: skip


FACE: Face = "openai-chat"
router = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])


def known_model(config: Config, name: str) -> ModelInfo:
    """Agent ``name`` as a model, or NotFound pointing at ``GET /v1/models``.

    The Anthropic face's check too: its models are these (it has no list of its own).
    """
    if name not in config.agents:  # a dict lookup: the name touches no key or path
        raise NotFound(f"unknown model {name!r}: models are walrus agents (GET /v1/models)")
    return ModelInfo(id=name)


@router.get("/v1/models", response_model=ModelList)
async def list_models(config: Cfg) -> ModelList:
    """The agents, as OpenAI models."""
    return ModelList(data=[ModelInfo(id=n) for n in sorted(config.agents)])


@router.get("/v1/models/{model}", response_model=ModelInfo, responses=ERRORS)
async def get_model(model: str, config: Cfg) -> ModelInfo:
    """One agent, as an OpenAI model."""
    return known_model(config, model)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatCompletionRequest,
    r: Redis,
    aredis: ARedis,
    hub: StreamHub,
    config: Cfg,
    who: Who,
    x_walrus_sender: Annotated[str | None, Header()] = None,
) -> Any:
    """Send the last user message to agent ``model``; the reply.

    With a conversation key (``user``, or the ``X-Walrus-Sender`` header) only the last user
    message is sent, into that server-side conversation. Without one the request is
    stateless: its ``messages`` are the whole context (after the agent's system prompt), in a
    conversation of its own that is deleted once the run has ended. ``n > 1`` and client
    ``tools`` are a 400. ``stream: true`` answers with ``chat.completion.chunk`` SSE frames
    ending in ``data: [DONE]``; otherwise with a ``chat.completion`` once the run has ended
    (502 if it failed or was cancelled).
    """
    return await answer(body, r, aredis, hub, config, who, x_walrus_sender)


async def answer(
    body: ChatCompletionRequest,
    r: Redis,
    aredis: aioredis.Redis,
    hub: Hub,
    config: Config,
    who: Who,
    x_walrus_sender: str | None,
) -> Any:
    """What :func:`chat_completions` answers (its plain stream route's too)."""
    agent = body.model
    known_model(config, agent)
    if why := unsupported(body):
        return openai_error(400, "unsupported_parameter", why)
    content = last_user_text(body.messages)
    created = int(time.time())
    if body.stream:
        hold_stream()  # before the run is submitted: a refused stream starts nothing
    key = body.user or x_walrus_sender
    earlier = partial(prior_messages, body.messages)
    oneshot, submitted = await send(aredis, r, config, agent, content, key, earlier, who, FACE)
    run_id = submitted.run_id
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        frames = stream_chunks(hub, run_id, agent, include_usage)
        if oneshot:
            frames = then_forget(frames, aredis, hub, run_id, agent, oneshot)
        return face_stream(hub, frames, stream_error(run_id))
    text, end = await collect(hub, run_id)
    if oneshot:
        await forget(aredis, agent, oneshot)
    if end is None or end.get("status") != "succeeded":
        code, message = run_error(run_id, end)
        return openai_error(502, code, message, run_id=run_id)
    return ChatCompletion(
        id=f"chatcmpl-{run_id}",
        created=created,
        model=agent,
        choices=[Choice(message=AssistantMessage(content=text))],
        usage=usage_of(end),
    )


PLAIN_CHAT = streaming_post(
    router, "/v1/chat/completions", ChatCompletionRequest, with_sender(answer), openai_error
)
"""``POST /v1/chat/completions`` with ``"stream": true``, for :mod:`gateway.sse_route`: the
stream is answered below FastAPI, which would keep its request machinery alive (~10 KB) for as
long as the stream is open (docs/benchmarks.md)."""
