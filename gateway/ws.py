"""``WS /v1/ws``: the operations of the original protocol as JSON frames over one socket.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

A request is ``{"id": <any JSON>, "op": <name>, ...args}``; every reply frame carries its ``id``.
Each request runs in its own asyncio task, so many are in flight on one socket at once; writes
are serialized by a lock. The operations of :mod:`gateway.registry` answer one ``{"id", "type":
"result", "result"}`` (the body of the matching HTTP route), their arguments the frame's fields
(the path, query and body fields of HTTP, by name); ``stream`` and ``feed`` (formerly
``subscribe_events``) send ``event`` frames until they end or a ``cancel {target}`` stops them.
Failures are ``{"id", "type": "error", "error": {"code", "message"}}`` with the codes of the
HTTP API, and never close the socket.
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

from gateway import operations as ops
from gateway import registry
from gateway.deps import caller_of
from gateway.errors import failure_of
from gateway.operation import Access, Call, Operation, call_of
from gateway.stream_limit import stream_slot
from walrus_tasks.errors import Conflict, Forbidden, InvalidInput, NotFound
from walrus_tasks.json_depth import TooDeep, loads_checked
from walrus_tasks.models import (
    Accepted,
)
from walrus_tasks.settings import Settings

log = logging.getLogger("walrus.gateway")

Args = dict[str, Any]
Op = Callable[["Session", Any, Args], Awaitable[None]]

STREAMS: dict[str, Op] = {}
"""The ops written here: the streams of :data:`gateway.registry.STREAMS`, ``ping``, ``cancel``."""
SOCKET_OPS = frozenset({"ping", "cancel"})
"""Ops of the socket itself (any token may use them)."""


def _key(request_id: Any) -> str:
    """A request id as a dict key (ids may be any JSON value)."""
    return json.dumps(request_id, sort_keys=True)


def _required(args: Args, name: str) -> Any:
    """The argument ``name``, or InvalidInput if it is missing."""
    if args.get(name) is None:
        raise InvalidInput(f"missing argument {name!r}")
    return args[name]


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

    def call(self) -> Call:
        """The :class:`Call` of a request on this socket (the config as it is now)."""
        return call_of(self.app, self.caller, "websocket")

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
        handler, access = handler_of(op)
        if handler is None:
            await self.error(request_id, NotFound(f"unknown op {op!r}"))
            return
        if not self.caller.admin and access != "tenant":
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
    """Register an async handler as op ``name`` (a stream of the registry, or the socket's)."""

    def add(handler: Op) -> Op:
        assert name in registry.STREAMS or name in SOCKET_OPS, name
        STREAMS[name] = handler
        return handler

    return add


def handler_of(name: str) -> tuple[Op | None, Access]:
    """The handler of op ``name`` and what a token needs for it (None: no such op)."""
    name = registry.STREAM_ALIASES.get(name, name)
    if name in STREAMS:
        return STREAMS[name], registry.STREAMS[name][0] if name in registry.STREAMS else "tenant"
    operation = registry.find(name)
    if operation is None:
        return None, "admin"
    return ANSWERS[operation.name], operation.access


def _answering(operation: Operation) -> Op:
    """The handler of a registry operation: its result in one ``result`` frame."""

    async def handler(s: Session, request_id: Any, args: Args) -> None:
        result = await run_in_threadpool(operation.call_with, s.call(), args)
        await s.send({"id": request_id, "type": "result", "result": jsonable_encoder(result)})

    return handler


ANSWERS: dict[str, Op] = {name: _answering(o) for name, o in registry.OPERATIONS.items()}
"""The handler of every registry operation, by name (built once)."""


@op("ping")
async def _ping(s: Session, request_id: Any, args: Args) -> None:
    await s.send({"id": request_id, "type": "pong"})


def _submit(s: Session, args: Args) -> Accepted:
    """The ``send`` operation of a ``stream`` frame (validated as ``send``'s)."""
    return registry.OPERATIONS["send"].call_with(s.call(), args)  # type: ignore[no-any-return]


@op("stream")
async def _stream(s: Session, request_id: Any, args: Args) -> None:
    with stream_slot():  # taken before the run is submitted: a refused stream starts nothing
        run_id = (await run_in_threadpool(_submit, s, args)).run_id
        async for _, event in ops.run_events(s.app.state.hub, run_id, "0-0"):
            if event is not None:
                await s.send({"id": request_id, "type": "event", "event": event})
    await s.send({"id": request_id, "type": "done", "run_id": run_id})


@op("feed")
async def _feed(s: Session, request_id: Any, args: Args) -> None:
    agent, after, call = args.get("agent"), args.get("after"), s.call()
    if agent is not None:
        ops.known_agent(call.config, agent)  # a name check and a dict read: no thread hop
    with stream_slot():
        start = await run_in_threadpool(ops.feed_start, call.r, after)
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
