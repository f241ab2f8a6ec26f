"""``WS /v1/ws``: the operations of the original protocol as JSON frames over one socket.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

A request is ``{"id": <any JSON>, "op": <name>, ...args}``; every reply frame carries its ``id``.
Each request runs in its own asyncio task, so many are in flight on one socket at once; writes
are serialized by a lock. Plain operations answer one ``{"id", "type": "result", "result"}``
(the body of the matching HTTP route); ``stream`` and ``subscribe_events`` send ``event`` frames
until they end or a ``cancel {target}`` stops them. Failures are ``{"id", "type": "error",
"error": {"code", "message"}}`` with the codes of the HTTP API, and never close the socket.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.encoders import jsonable_encoder
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from gateway import manage
from gateway import operations as ops
from gateway.admin import Reloaded, reload_config
from gateway.deps import caller_of
from gateway.errors import failure_of
from gateway.stream_limit import stream_slot
from walrus_tasks.config import Config
from walrus_tasks.connection import get_redis
from walrus_tasks.errors import Conflict, Forbidden, InvalidInput, NotFound
from walrus_tasks.json_depth import TooDeep, loads_checked
from walrus_tasks.models import (
    Accepted,
    AgentInfo,
    CronSpec,
    KillResult,
    Published,
    PublishEvent,
    Replied,
    Reply,
    SendMessage,
    Steer,
    Steered,
    SubscriptionSpec,
)
from walrus_tasks.settings import Settings
from walrus_tasks.submit import Submitted

log = logging.getLogger("walrus.gateway")

Args = dict[str, Any]
Op = Callable[["Session", Any, Args], Awaitable[None]]
Plain = Callable[["Session", Args], Any]

OPS: dict[str, Op] = {}
TENANT_OPS = frozenset(
    {
        "ping", "cancel", "send", "stream", "kill", "reply_to_ask", "steer", "compact",
        "get_archive", "list_conversations", "get_history", "list_agents", "get_agent",
        "delete_conversation", "list_crons", "create_cron", "delete_cron", "subscribe_event",
        "unsubscribe_event", "list_subscriptions", "publish_event",
    }
)  # fmt: skip
"""The ops a tenant token may use: they keep to its tenant (the others act across tenants)."""
"""Every operation by name: an async handler ``(session, request id, args)``."""


def _key(request_id: Any) -> str:
    """A request id as a dict key (ids may be any JSON value)."""
    return json.dumps(request_id, sort_keys=True)


def _required(args: Args, name: str) -> Any:
    """The argument ``name``, or InvalidInput if it is missing."""
    if args.get(name) is None:
        raise InvalidInput(f"missing argument {name!r}")
    return args[name]


def _string(args: Args, name: str) -> str:
    """The required string argument ``name``, or InvalidInput."""
    value = _required(args, name)
    if not isinstance(value, str):
        raise InvalidInput(f"argument {name!r} must be a string")
    return value


class Session:
    """One WebSocket connection: its in-flight requests and its write lock."""

    def __init__(self, ws: WebSocket, app: FastAPI, settings: Settings) -> None:
        self.ws = ws
        self.app = app
        self.settings = settings
        self.lock = asyncio.Lock()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancelled: set[str] = set()
        self.closed = False
        self.caller = caller_of(ws.scope)

    def cfg(self) -> Config:
        """The gateway's current config (a reload replaces it)."""
        return self.app.state.config  # type: ignore[no-any-return]

    def tenant(self, args: Args) -> str | None:
        """The tenant a request acts in: the token's, or the one an admin token names."""
        requested = args.get("tenant")
        if requested is not None and not isinstance(requested, str):
            raise InvalidInput("tenant must be a string")
        return self.caller.acting(requested)

    def known_agent(self, name: Any) -> str:
        """``name`` if it is a valid, configured agent; InvalidInput or NotFound otherwise."""
        if name is None:
            raise InvalidInput("missing argument 'agent'")
        return ops.known_agent(self.cfg(), name)

    async def send(self, frame: dict[str, Any]) -> None:
        """Write one JSON frame (serialized with every other write; dropped once closed)."""
        text = json.dumps(frame, ensure_ascii=False)
        async with self.lock:
            if self.closed:
                return
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` (after any frame being written)."""
        async with self.lock:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(RuntimeError, OSError):
                    await self.ws.close(code, reason)

    async def error(self, request_id: Any, exc: BaseException) -> None:
        """Send the error frame of ``exc`` for request ``request_id``."""
        _, code, message = failure_of(exc)
        await self.send(
            {"id": request_id, "type": "error", "error": {"code": code, "message": message}}
        )

    async def serve(self) -> None:
        """Accept the socket and dispatch its frames until the client goes away."""
        await self.ws.accept()
        limit = self.settings.max_body_bytes
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                data = raw.encode() if raw is not None else message.get("bytes") or b""
                if len(data) > limit:
                    # uvicorn's ws_max_size closes such a frame first; this covers other servers.
                    await self.close(1009, f"frame exceeds the {limit}-byte limit")
                    break
                await self.dispatch(data.decode("utf-8", "replace") if raw is None else raw)
        except WebSocketDisconnect:
            pass
        finally:
            self.closed = True
            tasks = list(self.tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def dispatch(self, raw: str) -> None:
        """Start the request of one frame in its own task, or answer its error at once."""
        try:
            frame = loads_checked(raw)
        except TooDeep as e:
            await self.error(None, InvalidInput(f"{e}: frame not accepted"))
            return
        except ValueError:
            await self.error(None, InvalidInput("malformed JSON frame"))
            return
        if not isinstance(frame, dict):
            await self.error(None, InvalidInput("a frame must be a JSON object"))
            return
        request_id, op = frame.get("id"), frame.get("op")
        if not isinstance(op, str) or not op:
            await self.error(request_id, InvalidInput("missing 'op'"))
            return
        handler = OPS.get(op)
        if handler is None:
            await self.error(request_id, NotFound(f"unknown op {op!r}"))
            return
        if not self.caller.admin and op not in TENANT_OPS:
            why = f"op {op!r} acts across tenants: a tenant token may not use it"
            await self.error(request_id, Forbidden(why))
            return
        key = _key(request_id)
        if key in self.tasks:
            await self.error(request_id, Conflict(f"request {request_id!r} is already in flight"))
            return
        args = {k: v for k, v in frame.items() if k not in ("id", "op")}
        self.tasks[key] = asyncio.create_task(self.run(key, request_id, handler, args))

    async def run(self, key: str, request_id: Any, handler: Op, args: Args) -> None:
        """Run one request; its failure becomes an error frame, its cancel a cancelled frame."""
        try:
            await handler(self, request_id, args)
        except BaseException as e:
            # A cancel can surface as another error (redis-py turns a cancelled read into a
            # TimeoutError): whatever ends a cancelled request, its client sees "cancelled".
            if key in self.cancelled:
                await self.send({"id": request_id, "type": "cancelled"})
                if isinstance(e, asyncio.CancelledError):
                    raise
                return
            if not isinstance(e, Exception):
                raise
            await self.error(request_id, e)
        finally:
            self.tasks.pop(key, None)
            self.cancelled.discard(key)


def op(name: str) -> Callable[[Op], Op]:
    """Register an async handler as operation ``name``."""

    def add(handler: Op) -> Op:
        OPS[name] = handler
        return handler

    return add


def plain(name: str) -> Callable[[Plain], Plain]:
    """Register a blocking function of ``(session, args)`` whose return value is the result."""

    def add(fn: Plain) -> Plain:
        async def handler(s: Session, request_id: Any, args: Args) -> None:
            result = await run_in_threadpool(fn, s, args)
            await s.send({"id": request_id, "type": "result", "result": jsonable_encoder(result)})

        OPS[name] = handler
        return fn

    return add


@op("ping")
async def _ping(s: Session, request_id: Any, args: Args) -> None:
    await s.send({"id": request_id, "type": "pong"})


def _submit(s: Session, args: Args) -> Submitted:
    """Validate like ``POST /v1/agents/{agent}/messages``, then ``submit()``."""
    agent = s.known_agent(args.get("agent"))
    key = args.get("idempotency_key")  # the Idempotency-Key header of HTTP
    if key is not None and not isinstance(key, str):
        raise InvalidInput("idempotency_key must be a string")
    fields = {k: v for k, v in args.items() if k not in ("agent", "idempotency_key")}
    body = SendMessage.model_validate(fields)
    return ops.send(get_redis(), s.cfg(), agent, body, key, s.caller)


@plain("send")
def _send(s: Session, args: Args) -> Accepted:
    return ops.accepted(_submit(s, args).run_id)


@op("stream")
async def _stream(s: Session, request_id: Any, args: Args) -> None:
    with stream_slot():  # taken before the run is submitted: a refused stream starts nothing
        run_id = (await run_in_threadpool(_submit, s, args)).run_id
        async for _, event in ops.run_events(s.app.state.hub, run_id, "0-0"):
            if event is not None:
                await s.send({"id": request_id, "type": "event", "event": event})
    await s.send({"id": request_id, "type": "done", "run_id": run_id})


def _turn(args: Args) -> Args:
    """The arguments of a turn operation, less ``agent`` and ``sender``."""
    return {k: v for k, v in args.items() if k not in ("agent", "sender", "tenant")}


@plain("kill")
def _kill(s: Session, args: Args) -> KillResult:
    agent = s.known_agent(args.get("agent"))
    return ops.kill(get_redis(), s.cfg(), agent, args.get("sender"), s.tenant(args))


@plain("reply_to_ask")
def _reply_to_ask(s: Session, args: Args) -> Replied:
    agent = s.known_agent(args.get("agent"))
    body = Reply.model_validate(_turn(args))
    sender, call_id, tenant = args.get("sender"), body.call_id or "", s.tenant(args)
    return ops.reply(get_redis(), s.cfg(), agent, sender, body.content, call_id, tenant)


@plain("steer")
def _steer(s: Session, args: Args) -> Steered:
    agent = s.known_agent(args.get("agent"))
    body = Steer.model_validate(_turn(args))
    return ops.steer(get_redis(), s.cfg(), agent, args.get("sender"), body.content, s.tenant(args))


@plain("compact")
def _compact(s: Session, args: Args) -> Accepted:
    agent = s.known_agent(args.get("agent"))
    return ops.compact(get_redis(), s.cfg(), agent, args.get("sender"), s.tenant(args))


@plain("get_archive")
def _get_archive(s: Session, args: Args) -> Any:
    agent = s.known_agent(args.get("agent"))
    archives = ops.archives(get_redis(), s.cfg(), agent, args.get("sender"), s.tenant(args))
    return {"archives": archives}


@plain("list_conversations")
def _list_conversations(s: Session, args: Args) -> Any:
    tenant = args.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise InvalidInput("tenant must be a string")
    return {"conversations": ops.conversations(get_redis(), args.get("agent"), s.caller, tenant)}


@plain("get_history")
def _get_history(s: Session, args: Args) -> Any:
    agent = s.known_agent(args.get("agent"))
    messages = ops.history(get_redis(), s.cfg(), agent, args.get("sender"), s.tenant(args))
    return {"messages": messages}


@plain("list_agents")
def _list_agents(s: Session, args: Args) -> Any:
    return {"agents": ops.list_agents(s.cfg())}


@plain("get_agent")
def _get_agent(s: Session, args: Args) -> AgentInfo:
    return ops.agent_info(s.cfg(), s.known_agent(args.get("agent")))


@plain("delete_conversation")
def _delete_conversation(s: Session, args: Args) -> Any:
    tenant = s.tenant(args)
    return manage.delete_conversation(get_redis(), args.get("agent"), args.get("sender"), tenant)


@plain("create_agent")
def _create_agent(s: Session, args: Args) -> AgentInfo:
    agent = manage.agent_config(_string(args, "name"), args)
    return manage.save_agent(s.app, get_redis(), s.settings, agent, create=True)


@plain("update_agent")
def _update_agent(s: Session, args: Args) -> AgentInfo:
    fields = {k: v for k, v in args.items() if k != "agent"}
    agent = manage.agent_config(_string(args, "agent"), fields)
    return manage.save_agent(s.app, get_redis(), s.settings, agent, create=False)


@plain("delete_agent")
def _delete_agent(s: Session, args: Args) -> Any:
    return manage.delete_agent(s.app, get_redis(), s.settings, _string(args, "agent"))


@plain("list_models")
def _list_models(s: Session, args: Args) -> Any:
    return manage.models_info(s.cfg())


@plain("list_skills")
def _list_skills(s: Session, args: Args) -> Any:
    return manage.skills_info(s.cfg())


@plain("list_mcps")
def _list_mcps(s: Session, args: Args) -> Any:
    return manage.mcps_info(s.cfg())


@plain("stats")
def _stats(s: Session, args: Args) -> Any:
    return manage.stats(get_redis(), s.cfg())


@plain("list_crons")
def _list_crons(s: Session, args: Args) -> Any:
    return {"crons": ops.list_crons(get_redis(), s.caller)}


@plain("create_cron")
def _create_cron(s: Session, args: Args) -> Any:
    return ops.create_cron(get_redis(), s.cfg(), CronSpec.model_validate(args), s.caller)


@plain("delete_cron")
def _delete_cron(s: Session, args: Args) -> Any:
    return ops.delete_cron(get_redis(), _string(args, "cron_id"), s.caller)


@plain("subscribe_event")
def _subscribe_event(s: Session, args: Args) -> Any:
    return ops.subscribe(get_redis(), s.cfg(), SubscriptionSpec.model_validate(args), s.caller)


@plain("unsubscribe_event")
def _unsubscribe_event(s: Session, args: Args) -> Any:
    return ops.unsubscribe(get_redis(), _string(args, "sub_id"), s.caller)


@plain("list_subscriptions")
def _list_subscriptions(s: Session, args: Args) -> Any:
    return {"subscriptions": ops.list_subscriptions(get_redis(), s.caller)}


@plain("publish_event")
def _publish_event(s: Session, args: Args) -> Published:
    body = PublishEvent.model_validate(args)
    return ops.publish(get_redis(), body.source, body.payload, s.caller, body.tenant)


@plain("reload")
def _reload(s: Session, args: Args) -> Reloaded:
    return reload_config(s.app, get_redis(), s.settings)


@op("subscribe_events")
async def _subscribe_events(s: Session, request_id: Any, args: Args) -> None:
    agent, after = args.get("agent"), args.get("after")
    if agent is not None:
        await run_in_threadpool(s.known_agent, agent)
    with stream_slot():
        start = await run_in_threadpool(ops.feed_start, get_redis(), after)
        await s.send({"id": request_id, "type": "subscribed", "after": start})
        async for _, event in s.app.state.hub.feed_items(start, agent):
            if event is not None:
                await s.send({"id": request_id, "type": "event", "event": event})


@op("cancel")
async def _cancel(s: Session, request_id: Any, args: Args) -> None:
    target = _required(args, "target")
    key = _key(target)
    task = s.tasks.get(key)
    if task is None or key == _key(request_id):
        raise NotFound(f"no request {target!r} in flight")
    s.cancelled.add(key)
    task.cancel()
    await asyncio.wait({task})
    await s.send({"id": request_id, "type": "result", "result": {"cancelled": target}})


def register(app: FastAPI, settings: Settings) -> None:
    """Add ``WS /v1/ws`` to ``app``."""

    @app.websocket("/v1/ws")
    async def websocket(ws: WebSocket) -> None:
        """The original protocol's operations as JSON frames (see the module docstring)."""
        await Session(ws, app, settings).serve()
