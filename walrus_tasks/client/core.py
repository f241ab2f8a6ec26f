"""Every request of the gateway's HTTP API, described once for ``Client`` and ``AsyncClient``.

Sans-IO: a function here builds a ``Call`` (method, path, body, and how to read the answer);
a client sends it with its own httpx client (sync or async) and hands the response back to
``Call.read``. Nothing here opens a connection, so the two clients differ only in ``await``.
Each builder's docstring is its route; the meaning is on the client method of the same name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from walrus_tasks.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, WalrusError
from walrus_tasks.models import (
    Accepted,
    AgentInfo,
    ClientTool,
    Conversation,
    CronEntry,
    CronSpec,
    OnBusy,
    Replied,
    RunInfo,
    RunPage,
    Subscription,
)
from walrus_tasks.names import DEFAULT_SENDER

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)

STREAM_GIVE_UP = 30.0
"""Seconds a dropped event stream keeps reconnecting (with no new event) before it is an error.

Long enough to ride out a gateway restart (its graceful shutdown alone may take 3 s).
"""

STREAM_READ_TIMEOUT = 60.0
"""Seconds an event stream may stay silent before it counts as dropped.

Four of the gateway's keep-alive intervals (``WALRUS_SSE_KEEPALIVE``, 15 s by default), so an idle
run is never cut, yet a half-open connection is noticed.
"""

KEEPALIVE_EXPIRY = 5.0
"""Seconds the clients keep an idle connection pooled for reuse (httpx's default).

Below the gateway's keep-alive (``WALRUS_GATEWAY_KEEP_ALIVE``, 75 s): a connection the gateway
closes while a client reuses it fails that request with a reset the gateway never read.
"""

LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY
)
"""The clients' connection pool: httpx's defaults, the idle expiry spelled out."""

DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
"""A connection closed or reset under a request: the gateway, or a proxy in front of it, closed
an idle pooled connection just as it was reused (RFC 9112, 9.3.1: clients retry idempotent
requests then). Not a timeout: the gateway may still be working on that request."""

IDEMPOTENCY_KEY = "Idempotency-Key"
"""The header that makes a POSTed message safe to send again (``submit.keyed_run_id``)."""

_ERRORS: dict[int, type[WalrusError]] = {
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
}


class GatewayUnreachable(WalrusError):
    """Raised when the gateway cannot be reached (refused, timed out, dropped for good)."""

    code = "unreachable"
    status = 503

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the gateway at {url}: {reason}")
        self.url = url
        self.reason = reason


def raise_for_error(resp: httpx.Response) -> None:
    """Raise the walrus exception for an error response (``{"error": {"code", "message"}}``).

    Its ``status`` is set on the instance: see ``http_status``.
    """
    if resp.is_success:
        return
    try:
        error = resp.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http", resp.text.strip() or resp.reason_phrase
    exc = _ERRORS.get(resp.status_code, WalrusError)(message)
    exc.status = resp.status_code
    exc.code = code
    raise exc


def http_status(e: WalrusError) -> int | None:
    """The HTTP status of the gateway answer ``e`` was raised for; None if raised client-side.

    The class attribute ``status`` is what the gateway would answer; only ``raise_for_error``
    sets it on the instance, from a real response.
    """
    return e.status if "status" in vars(e) else None


class ClientBase(Generic[H]):
    """What ``Client`` and ``AsyncClient`` hold, set up once.

    The gateway's URL, its httpx client (``H``, sync or async), and the reconnect budget of
    event streams.
    """

    _http_class: type[H]

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        token: str | None = None,
        stream_give_up: float = STREAM_GIVE_UP,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stream_give_up = stream_give_up
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: H = self._http_class(
            base_url=self.base_url, timeout=timeout, headers=headers, limits=LIMITS
        )
        self._stream_timeout = httpx.Timeout(timeout, read=STREAM_READ_TIMEOUT)


@contextmanager
def unreachable(base_url: str) -> Iterator[None]:
    """Turn a transport failure (refused, timed out, dropped) into GatewayUnreachable."""
    try:
        yield
    except httpx.TransportError as e:
        raise GatewayUnreachable(base_url, str(e) or type(e).__name__) from e


def unexpected(url: object, what: str) -> WalrusError:
    """A 2xx answer we cannot read (not JSON, another shape): one clear line, not a traceback."""
    return WalrusError(f"unexpected answer from {url}: {what}")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: what to send, and how to turn its 2xx JSON answer into the result."""

    method: str
    path: str
    parse: Callable[[Any], T]
    key: str | None = None
    """Read this member of the JSON body, not the whole body."""
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    """Query parameters (a list value repeats the parameter)."""
    headers: dict[str, str] | None = None

    @property
    def retry_dropped(self) -> bool:
        """Whether to send again, once, when the connection drops (``DROPPED``).

        A GET, or a request with an ``Idempotency-Key`` (a message: the gateway answers its
        retry with the run the first attempt made). Any other request sent twice may be done
        twice.
        """
        return self.method == "GET" or IDEMPOTENCY_KEY in (self.headers or {})

    def read(self, resp: httpx.Response) -> T:
        """The result of ``resp``; a walrus error for an error status or an unreadable body."""
        raise_for_error(resp)
        try:
            body = resp.json()
        except ValueError as e:
            kind = resp.headers.get("content-type") or "untyped"
            raise unexpected(resp.url, f"the {kind} body is not JSON") from e
        if self.key is not None:
            try:
                body = body[self.key]
            except (KeyError, TypeError) as e:
                raise unexpected(resp.url, f"no {self.key!r} in the body") from e
        return self.parse(body)


# --- how answers are read ----------------------------------------------------------------------


def _model(model: type[M]) -> Callable[[Any], M]:
    """Read ``data`` as ``model``; a body of another shape is a WalrusError, not a traceback."""

    def parse(data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise WalrusError(f"unexpected {model.__name__} from the gateway: {e}") from e

    return parse


def _models(model: type[M]) -> Callable[[Any], list[M]]:
    one = _model(model)
    return lambda rows: [one(row) for row in rows]


def _object(body: Any) -> dict[str, Any]:
    return dict(body)


def _list(body: Any) -> list[dict[str, Any]]:
    return list(body)


def _none(body: Any) -> None:
    return None


def _run_id(body: Any) -> str | None:
    return str(body) if body else None


# --- conversations and runs --------------------------------------------------------------------


def send(
    agent: str,
    content: str,
    sender: str | None,
    on_busy: OnBusy,
    cwd: str | None,
    client_tools: Sequence[ClientTool] = (),
) -> Call[Accepted]:
    """``POST /v1/agents/{agent}/messages``."""
    body: dict[str, Any] = {"content": content, "on_busy": on_busy, "stream": False}
    if sender:
        body["sender"] = sender
    if cwd:
        body["cwd"] = cwd
    if client_tools:
        body["client_tools"] = [t.model_dump() for t in client_tools]
    headers = {IDEMPOTENCY_KEY: uuid.uuid4().hex}  # one per message: its retry is known again
    path = _agent_path(agent, "messages")
    return Call("POST", path, _model(Accepted), json=body, headers=headers)


def reply(agent: str, content: str, sender: str | None, call_id: str | None) -> Call[Replied]:
    """``POST /v1/agents/{agent}/conversations/{sender}/reply``."""
    body = {"content": content, **({"call_id": call_id} if call_id else {})}
    return Call("POST", _conversation_path(agent, sender, "reply"), _model(Replied), json=body)


def steer(agent: str, content: str, sender: str | None) -> Call[str]:
    """``POST /v1/agents/{agent}/conversations/{sender}/steer``."""
    path = _conversation_path(agent, sender, "steer")
    return Call("POST", path, str, key="run_id", json={"content": content})


def compact(agent: str, sender: str | None) -> Call[Accepted]:
    """``POST /v1/agents/{agent}/conversations/{sender}/compact``."""
    return Call("POST", _conversation_path(agent, sender, "compact"), _model(Accepted))


def archive(agent: str, sender: str | None) -> Call[list[dict[str, Any]]]:
    """``GET /v1/agents/{agent}/conversations/{sender}/archive``."""
    return Call("GET", _conversation_path(agent, sender, "archive"), _list, key="archives")


def run(run_id: str) -> Call[RunInfo]:
    """``GET /v1/runs/{run_id}``."""
    return Call("GET", f"/v1/runs/{_q(run_id)}", _model(RunInfo))


def runs(cursor: str | None, limit: int, filters: dict[str, Any]) -> Call[RunPage]:
    """``GET /v1/runs?agent=&sender=&status=&cursor=&limit=``."""
    params = {k: v for k, v in {**filters, "cursor": cursor, "limit": limit}.items() if v}
    return Call("GET", "/v1/runs", _model(RunPage), params=params)


def cancel(agent: str, sender: str | None) -> Call[str | None]:
    """``POST /v1/agents/{agent}/conversations/{sender}/cancel``."""
    return Call("POST", _conversation_path(agent, sender, "cancel"), _run_id, key="run_id")


def history(agent: str, sender: str | None) -> Call[list[dict[str, Any]]]:
    """``GET /v1/agents/{agent}/conversations/{sender}/history``."""
    return Call("GET", _conversation_path(agent, sender, "history"), _list, key="messages")


def conversations() -> Call[list[Conversation]]:
    """``GET /v1/conversations``."""
    return Call("GET", "/v1/conversations", _models(Conversation), key="conversations")


def delete_conversation(agent: str, sender: str | None) -> Call[None]:
    """``DELETE /v1/agents/{agent}/conversations/{sender}``."""
    return Call("DELETE", _agent_path(agent, f"conversations/{_sender(sender)}"), _none)


# --- agents and the gateway --------------------------------------------------------------------


def agents() -> Call[list[AgentInfo]]:
    """``GET /v1/agents``."""
    return Call("GET", "/v1/agents", _models(AgentInfo), key="agents")


def agent(name: str) -> Call[AgentInfo]:
    """``GET /v1/agents/{name}``."""
    return Call("GET", f"/v1/agents/{_q(name)}", _model(AgentInfo))


def create_agent(name: str, fields: dict[str, Any]) -> Call[AgentInfo]:
    """``POST /v1/agents``."""
    return Call("POST", "/v1/agents", _model(AgentInfo), json={"name": name, **fields})


def update_agent(name: str, fields: dict[str, Any]) -> Call[AgentInfo]:
    """``PUT /v1/agents/{name}``."""
    return Call("PUT", f"/v1/agents/{_q(name)}", _model(AgentInfo), json=fields)


def delete_agent(name: str) -> Call[None]:
    """``DELETE /v1/agents/{name}``."""
    return Call("DELETE", f"/v1/agents/{_q(name)}", _none)


def healthz() -> Call[dict[str, Any]]:
    """``GET /healthz``."""
    return Call("GET", "/healthz", _object)


def reload() -> Call[dict[str, Any]]:
    """``POST /v1/admin/reload``."""
    return Call("POST", "/v1/admin/reload", _object)


def providers() -> Call[dict[str, Any]]:
    """``GET /v1/providers``."""
    return Call("GET", "/v1/providers", _object)


def skills() -> Call[list[dict[str, Any]]]:
    """``GET /v1/skills``."""
    return Call("GET", "/v1/skills", _list, key="skills")


def mcps() -> Call[list[dict[str, Any]]]:
    """``GET /v1/mcps``."""
    return Call("GET", "/v1/mcps", _list, key="mcps")


def stats() -> Call[dict[str, Any]]:
    """``GET /v1/stats``."""
    return Call("GET", "/v1/stats", _object)


# --- cron and the event bus --------------------------------------------------------------------


def add_cron(spec: CronSpec) -> Call[CronEntry]:
    """``POST /v1/crons``."""
    body = spec.model_dump(exclude_none=True)
    return Call("POST", "/v1/crons", _model(CronEntry), json=body)


def crons() -> Call[list[CronEntry]]:
    """``GET /v1/crons``."""
    return Call("GET", "/v1/crons", _models(CronEntry), key="crons")


def remove_cron(cron_id: str) -> Call[None]:
    """``DELETE /v1/crons/{cron_id}``."""
    return Call("DELETE", f"/v1/crons/{_q(cron_id)}", _none)


def subscribe(source: str, target_agent: str, once: bool) -> Call[Subscription]:
    """``POST /v1/subscriptions``."""
    body = {"source": source, "target_agent": target_agent, "once": once}
    return Call("POST", "/v1/subscriptions", _model(Subscription), json=body)


def subscriptions() -> Call[list[Subscription]]:
    """``GET /v1/subscriptions``."""
    return Call("GET", "/v1/subscriptions", _models(Subscription), key="subscriptions")


def unsubscribe(sub_id: str) -> Call[None]:
    """``DELETE /v1/subscriptions/{sub_id}``."""
    return Call("DELETE", f"/v1/subscriptions/{_q(sub_id)}", _none)


def publish(source: str, payload: Any) -> Call[list[str]]:
    """``POST /v1/publish``."""
    body = {"source": source, "payload": payload}
    return Call("POST", "/v1/publish", lambda fired: [str(f) for f in fired], "fired", body)


# --- paths -------------------------------------------------------------------------------------


def run_events_path(run_id: str) -> str:
    """The SSE path of one run's events."""
    return f"/v1/runs/{_q(run_id)}/events"


def feed_path(agent: str | None) -> str:
    """The SSE path of the live feed (of one agent's runs, if given)."""
    return f"/v1/events?agent={_q(agent)}" if agent else "/v1/events"


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _sender(sender: str | None) -> str:
    return _q(sender or DEFAULT_SENDER)


def _agent_path(agent: str, tail: str) -> str:
    return f"/v1/agents/{_q(agent)}/{tail}"


def _conversation_path(agent: str, sender: str | None, tail: str) -> str:
    return _agent_path(agent, f"conversations/{_sender(sender)}/{tail}")
