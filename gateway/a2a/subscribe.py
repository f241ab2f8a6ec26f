"""``SubscribeToTask`` over JSON-RPC, served as a plain stream from one translation of the run.

Why: through the SDK's routes an A2A subscription held 71 KB of the gateway (its JSON-RPC
dispatch, and sse-starlette's response: a task group of its own per stream) and translated the
run for each subscriber (docs/benchmarks.md). Here the ``POST /a2a/{agent}`` whose body is
``SubscribeToTask`` with ``A2A-Version: 1.0`` is answered by ``gateway.sse_route`` (no FastAPI,
no SDK route), and the task's updates are translated once for every subscriber that joined at
the same point (``gateway.relay``): the frames are JSON-RPC responses, each subscriber's own
request id written in as its frames go out.

What it writes is what the SDK writes for the same call: ``data:`` the JSON-RPC response
whose ``result`` is the ``StreamResponse`` as JSON (``MessageToDict``), first the task as it
is, then its status and artifact updates (:class:`~gateway.a2a.tasks.TaskStream`) until it
ends or asks; an error as ``event: error`` with the JSON-RPC ``error``. Any other request, and
every request the SDK would refuse (another version, a malformed call, an unknown agent or
task, a task that has ended, the client's streams at their limit), goes on to the SDK's route,
which answers it as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.types import TaskNotFoundError
from a2a.utils import proto_utils
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Scope

from gateway import operations as ops
from gateway import sse_route
from gateway.a2a.errors import stream_ended
from gateway.a2a.handler import AgentCall, Started, record_of
from gateway.a2a.tasks import TERMINAL, StreamEvent, TaskStream, task_of
from gateway.deps import caller_of
from gateway.errors import MAPPED
from gateway.hub import Hub
from gateway.relay import Cursor
from gateway.sse import ErrorRender, face_stream
from gateway.stream_limit import hold_stream
from walrus_tasks.json_depth import loads_checked

ENDPOINT = "/a2a/{agent}"
METHOD = "SubscribeToTask"
ID_SLOT = '{"id":null,'
"""How a shared frame's JSON-RPC response begins; each subscriber's own id is written in."""


def _subscription(query: sse_route.Query) -> tuple[str | int | None, str] | None:
    """``(request id, task id)`` of a well-formed 1.0 ``SubscribeToTask``; else None."""
    if METHOD.encode() not in query.body:  # any other call is parsed by the SDK alone
        return None
    try:
        call = loads_checked(query.body)
    except ValueError:  # TooDeep too: the JSON depth check behind answers it
        return None
    if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or call.get("method") != METHOD:
        return None
    request_id, params = call.get("id"), call.get("params")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
        return None
    if not isinstance(params, dict) or not set(params) <= {"id", "tenant"}:
        return None
    if not all(isinstance(v, str) for v in params.values()) or not params.get("id"):
        return None
    return request_id, params["id"]


def rpc(payload: dict[str, Any]) -> str:
    """A JSON-RPC response without its id (``payload`` has none), starting with ID_SLOT."""
    return ID_SLOT + json.dumps(payload, ensure_ascii=False)[1:]


def result_frame(event: StreamEvent) -> str:
    """The SSE frame of one stream event, the request id left for the subscriber's."""
    result = MessageToDict(proto_utils.to_stream_response(event), preserving_proto_field_name=False)
    return f"data: {rpc({'jsonrpc': '2.0', 'result': result})}\n\n"


def error_frame(error: A2AError) -> str:
    """The SSE frame that ends a stream with ``error`` (what the SDK writes), id left out."""
    body = build_error_response(None, error)
    body.pop("id", None)
    return f"event: error\ndata: {rpc(body)}\n\n"


class _Updates:
    """The A2A :class:`gateway.relay.Translation` of a task's run: its updates, as frames."""

    def __init__(self, stream: TaskStream) -> None:
        self.stream = stream

    async def opening(self) -> list[str]:
        return []

    async def feed(self, entry_id: str, event: dict[str, Any]) -> list[str]:
        return [result_frame(e) for e in self.stream.feed(entry_id, event)]

    def over(self) -> bool:
        return self.stream.done

    async def closing(self) -> list[str]:
        if self.stream.done:
            return []
        task_id = self.stream.task_id
        return [
            error_frame(TaskNotFoundError(f"task {task_id} no longer exists (its run expired)"))
        ]


def shaper(request_id: str | int | None) -> Callable[[str], str]:
    """What writes ``request_id`` into a shared frame (whose id is null)."""
    if request_id is None:
        return lambda frame: frame
    mine = '{"id":' + json.dumps(request_id) + ","
    return lambda frame: frame.replace(ID_SLOT, mine, 1)


def _ended(shape: Callable[[str], str]) -> ErrorRender:
    """How a subscription ends early (Redis away, the gateway stopping): an ``error`` event.

    The error is the one the SDK's streams end with (``gateway.a2a.errors.stream_ended``).
    """

    def render(code: str, message: str) -> str:
        try:
            stream_ended(code, message)
        except A2AError as e:
            return shape(error_frame(e))

    return render


async def answer(scope: Scope, params: dict[str, str], query: sse_route.Query) -> Response | None:
    """The subscription's stream, or None for the SDK's route to answer the request."""
    if sse_route.header(scope, b"a2a-version") != "1.0" or (asked := _subscription(query)) is None:
        return None
    request_id, task_id = asked
    state = scope["app"].state
    if params["agent"] not in state.config.agents:
        return None
    hub: Hub = state.hub
    call = AgentCall(r=state.redis, config=state.config, hub=hub, caller=caller_of(scope),
                     agent=params["agent"])  # fmt: skip
    try:
        record = await run_in_threadpool(record_of, call, task_id)
        task = task_of(record)
        if task.status.state in TERMINAL:
            return None
        hold_stream()
    except MAPPED:  # TooManyStreams among them: the SDK's route answers each as before
        return None
    shape = shaper(request_id)
    first = shape(result_frame(task))
    if record.question is not None:  # it waits for its answer: the task is all there is
        return face_stream(hub, _only(first), _ended(shape))
    run, after = record.run, Started(record=record, before=record.events).after
    frames = hub.relays.follow(
        ("a2a", run.run_id, after),
        lambda: ops.run_events(hub, run.run_id, after),
        lambda: _Updates(TaskStream(run.run_id, run.sender, record.events)),
        Cursor(),
        first=first,
        shape=shape,
    )
    return face_stream(hub, frames, _ended(shape))


async def _only(frame: str) -> AsyncGenerator[str, None]:
    yield frame


PLAIN_SUBSCRIBE = sse_route.PlainStream(None, sse_route.pattern(ENDPOINT), answer, method="POST")
"""``POST /a2a/{agent}`` (``SubscribeToTask``) for :mod:`gateway.sse_route`."""
