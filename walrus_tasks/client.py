"""A small synchronous client for the gateway's HTTP API (what the ``walrus`` CLI uses).

Run events arrive as Server-Sent Events. If the connection drops mid-stream, the client
reconnects with ``Last-Event-ID`` = the id of the last event it yielded, so the caller sees
every event exactly once (DESIGN.md invariant 5).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from walrus_tasks.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, WalrusError
from walrus_tasks.models import (
    Accepted,
    AgentInfo,
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

STREAM_GIVE_UP = 30.0
"""Seconds a dropped event stream keeps reconnecting (with no new event) before it is an error.

Long enough to ride out a gateway restart (its graceful shutdown alone may take 3 s).
"""

RETRY_DELAY = 0.2
"""Seconds before the first reconnection; doubled on each further attempt up to RETRY_DELAY_MAX."""

RETRY_DELAY_MAX = 2.0
"""The longest wait between two reconnections."""

STREAM_READ_TIMEOUT = 60.0
"""Seconds an event stream may stay silent before it counts as dropped.

Four of the gateway's keep-alive intervals (``WALRUS_SSE_KEEPALIVE``, 15 s by default), so an idle
run is never cut, yet a half-open connection is noticed.
"""

RETRY_STATUSES = frozenset({502, 503, 504})
"""Statuses a proxy or a restarting gateway answers with: while following, a drop to retry."""

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


@dataclass(frozen=True)
class Event:
    """One run event: the SSE ``id`` (stream entry id), its ``type`` and the JSON object."""

    id: str
    type: str
    data: dict[str, Any]


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


class SSEParser:
    """Incremental SSE parser: ``feed`` one line at a time, get an Event at each frame's end.

    A frame is dispatched only at its terminating blank line, so a frame cut short by a
    dropped connection is never yielded (the resume delivers it whole). Keep-alive comments are
    skipped. Data that is not a JSON object raises ValueError.
    """

    def __init__(self) -> None:
        self._id, self._kind, self._data = "", "", list[str]()

    def feed(self, line: str) -> Event | None:
        """Take one line (without its newline); the completed event, if this line ends one."""
        if line == "":
            event = None
            if self._data:
                payload = json.loads("\n".join(self._data))
                if not isinstance(payload, dict):
                    raise ValueError(f"event data is not a JSON object: {payload!r:.100}")
                kind = self._kind or str(payload.get("type", ""))
                event = Event(id=self._id, type=kind, data=payload)
            self._id, self._kind, self._data = "", "", []
            return event
        if not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                self._id = value
            elif field == "event":
                self._kind = value
            elif field == "data":
                self._data.append(value)
        return None


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """The events of an SSE body, given line by line (see ``SSEParser``)."""
    parser = SSEParser()
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event


class Client:
    """Synchronous client of one gateway; use as a context manager or call ``close()``.

    A dropped event stream reconnects for up to ``stream_give_up`` seconds without a new event.
    """

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
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        self._stream_timeout = httpx.Timeout(timeout, read=STREAM_READ_TIMEOUT)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- plain requests ------------------------------------------------------------------------

    def _request(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        """The JSON body of a 2xx answer (its ``key`` member if given); raises otherwise."""
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise GatewayUnreachable(self.base_url, _reason(e)) from e
        raise_for_error(resp)
        try:
            body = resp.json()
        except ValueError as e:
            kind = resp.headers.get("content-type") or "untyped"
            raise _unexpected(resp.url, f"the {kind} body is not JSON") from e
        if key is None:
            return body
        try:
            return body[key]
        except (KeyError, TypeError) as e:
            raise _unexpected(resp.url, f"no {key!r} in the body") from e

    def send(
        self,
        agent: str,
        content: str,
        sender: str | None = None,
        on_busy: OnBusy = "enqueue",
        cwd: str | None = None,
    ) -> Accepted:
        """Submit a message; the accepted run's id and events URL."""
        body = _message(content, sender, on_busy, cwd)
        return _parse(Accepted, self._request("POST", _agent_path(agent, "messages"), json=body))

    def reply(
        self, agent: str, content: str, sender: str | None = None, call_id: str | None = None
    ) -> Replied:
        """Answer the conversation's pending ``ask_user`` question (or approval)."""
        body = {"content": content, **({"call_id": call_id} if call_id else {})}
        path = _conversation_path(agent, sender, "reply")
        return _parse(Replied, self._request("POST", path, json=body))

    def steer(self, agent: str, content: str, sender: str | None = None) -> str:
        """Inject ``content`` before the active run's next LLM call; the run's id."""
        path = _conversation_path(agent, sender, "steer")
        return str(self._request("POST", path, key="run_id", json={"content": content}))

    def compact(self, agent: str, sender: str | None = None) -> Accepted:
        """Queue a compaction of the conversation (a run of its own)."""
        path = _conversation_path(agent, sender, "compact")
        return _parse(Accepted, self._request("POST", path))

    def archive(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The histories compaction replaced, oldest first."""
        path = _conversation_path(agent, sender, "archive")
        return list(self._request("GET", path, key="archives"))

    def run(self, run_id: str) -> RunInfo:
        """Status of one run."""
        return _parse(RunInfo, self._request("GET", f"/v1/runs/{quote(run_id, safe='')}"))

    def runs(self, cursor: str | None = None, limit: int = 50, **filters: Any) -> RunPage:
        """A page of runs, newest first; filters ``agent=``, ``sender=``, ``status=[...]``."""
        params = {k: v for k, v in {**filters, "cursor": cursor, "limit": limit}.items() if v}
        return _parse(RunPage, self._request("GET", "/v1/runs", params=params))

    def kill(self, agent: str, sender: str | None = None) -> str | None:
        """Cancel the conversation's active run; its id, or None if nothing was running."""
        run_id = self._request("POST", _conversation_path(agent, sender, "kill"), key="run_id")
        return str(run_id) if run_id else None

    def history(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The conversation's messages in order."""
        path = _conversation_path(agent, sender, "history")
        return list(self._request("GET", path, key="messages"))

    def agents(self) -> list[AgentInfo]:
        """The configured agents."""
        return [_parse(AgentInfo, a) for a in self._request("GET", "/v1/agents", key="agents")]

    def agent(self, name: str) -> AgentInfo:
        """One agent (NotFound if it is not configured)."""
        return _parse(AgentInfo, self._request("GET", f"/v1/agents/{quote(name, safe='')}"))

    def conversations(self) -> list[Conversation]:
        """Every conversation, most recently active first."""
        rows = self._request("GET", "/v1/conversations", key="conversations")
        return [_parse(Conversation, c) for c in rows]

    def healthz(self) -> dict[str, Any]:
        """The gateway's health body (raises if it is not 200)."""
        return dict(self._request("GET", "/healthz"))

    # --- cron and admin ------------------------------------------------------------------------

    def add_cron(self, spec: CronSpec) -> CronEntry:
        """Create a cron entry (fires from its next schedule time on)."""
        body = spec.model_dump(exclude_none=True)
        return _parse(CronEntry, self._request("POST", "/v1/crons", json=body))

    def crons(self) -> list[CronEntry]:
        """Every cron entry, with last/next fire time and last run id."""
        return [_parse(CronEntry, c) for c in self._request("GET", "/v1/crons", key="crons")]

    def remove_cron(self, cron_id: str) -> None:
        """Delete a cron entry (NotFound if there is none with this id)."""
        self._request("DELETE", _cron_path(cron_id))

    def reload(self) -> dict[str, Any]:
        """Make every gateway, worker and beat re-read the config: ``{generation, agents}``."""
        return dict(self._request("POST", "/v1/admin/reload"))

    # --- management ----------------------------------------------------------------------------

    def delete_conversation(self, agent: str, sender: str | None = None) -> None:
        """Delete a conversation's history and state (Conflict while a run is active or queued)."""
        self._request("DELETE", _conversation_root(agent, sender))

    def create_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Write a new agent's config (Conflict if it exists); every process reloads."""
        body = {"name": name, **fields}
        return _parse(AgentInfo, self._request("POST", "/v1/agents", json=body))

    def update_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Replace an agent's whole config (omitted fields take their defaults)."""
        return _parse(AgentInfo, self._request("PUT", _agent_config_path(name), json=fields))

    def delete_agent(self, name: str) -> None:
        """Delete an agent's config (Conflict while another agent lists it in members)."""
        self._request("DELETE", _agent_config_path(name))

    def providers(self) -> dict[str, Any]:
        """``{"providers": [{name, kind, base_url}], "models": [the models agents use]}``."""
        return dict(self._request("GET", "/v1/providers"))

    def skills(self) -> list[dict[str, Any]]:
        """The skills: ``[{name, description, allowed_tools}]``."""
        return list(self._request("GET", "/v1/skills", key="skills"))

    def mcps(self) -> list[dict[str, Any]]:
        """The MCP servers: ``[{name, transport, command | url, agents}]``."""
        return list(self._request("GET", "/v1/mcps", key="mcps"))

    def stats(self) -> dict[str, Any]:
        """Counts of agents, conversations, active and queued runs, leases and queue depths."""
        return dict(self._request("GET", "/v1/stats"))

    # --- the event bus -------------------------------------------------------------------------

    def subscribe(self, source: str, target_agent: str, once: bool = False) -> Subscription:
        """Send every event published to ``source`` to ``target_agent`` (only the first: once)."""
        body = _subscription(source, target_agent, once)
        return _parse(Subscription, self._request("POST", "/v1/subscriptions", json=body))

    def subscriptions(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        rows = self._request("GET", "/v1/subscriptions", key="subscriptions")
        return [_parse(Subscription, s) for s in rows]

    def unsubscribe(self, sub_id: str) -> None:
        """Remove a subscription (NotFound if there is none with this id)."""
        self._request("DELETE", _subscription_path(sub_id))

    def publish(self, source: str, payload: Any) -> list[str]:
        """Publish an event; the ids of the runs it started (one per fired subscription)."""
        body = {"source": source, "payload": payload}
        return [str(f) for f in self._request("POST", "/v1/events", key="fired", json=body)]

    # --- event streams -------------------------------------------------------------------------

    def events(self, run_id: str, last_event_id: str | None = None) -> Generator[Event, None, None]:
        """The run's events after ``last_event_id`` (all when None), up to and including ``end``."""
        path = f"/v1/runs/{quote(run_id, safe='')}/events"
        return self._follow(lambda last: self._stream(path, last), last_event_id)

    def feed(
        self, agent: str | None = None, last_event_id: str | None = None
    ) -> Generator[Event, None, None]:
        """The live feed of every run's events, from now on (or after ``last_event_id``).

        It has no end: stop iterating to leave. Each event carries its run's ``run_id``,
        ``agent`` and ``sender``; ``agent`` keeps one agent's runs.
        """
        path = _feed_path(agent)
        return self._follow(lambda last: self._stream(path, last), last_event_id, until_end=False)

    def _follow(
        self,
        open_stream: Callable[[str | None], Iterator[Event]],
        last_event_id: str | None,
        until_end: bool = True,
    ) -> Generator[Event, None, None]:
        """Yield events from ``open_stream(last_id)``, reconnecting after drops until ``end``.

        With ``until_end`` false (the live feed) it goes on until the caller stops.
        """
        last = last_event_id
        down_since: float | None = None  # when the stream first dropped since its last event
        failures = 0
        while True:
            error: str = "the stream ended before the run's end event"
            try:
                for event in open_stream(last):
                    down_since, failures = None, 0
                    last = event.id or last
                    yield event
                    if until_end and event.type == "end":
                        return
            except GatewayUnreachable as e:
                error = e.reason
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            left = self.stream_give_up - (now - down_since)
            if left <= 0:
                raise GatewayUnreachable(
                    self.base_url, f"{error} (gave up reconnecting after {now - down_since:.1f} s)"
                )
            time.sleep(min(RETRY_DELAY * 2**failures, RETRY_DELAY_MAX, left))
            failures += 1

    def _stream(self, path: str, last_event_id: str | None) -> Iterator[Event]:
        """One SSE request; a transport failure or a 502/503/504 raises GatewayUnreachable."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        url = self.base_url + path
        try:
            with self._http.stream(
                "GET", path, headers=headers, timeout=self._stream_timeout
            ) as resp:
                if resp.status_code in RETRY_STATUSES:
                    raise GatewayUnreachable(self.base_url, f"HTTP {resp.status_code}")
                if not resp.is_success:
                    resp.read()
                    raise_for_error(resp)
                content_type = resp.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    kind = content_type or "untyped"
                    raise _unexpected(url, f"a {kind} body, not an event stream")
                yield from parse_sse(resp.iter_lines())
        except httpx.TransportError as e:
            raise GatewayUnreachable(self.base_url, _reason(e)) from e
        except ValueError as e:  # event data that is not a JSON object
            raise _unexpected(url, f"bad event data: {e}") from e


def _parse(model: type[M], data: Any) -> M:
    """``data`` as ``model``; a body of another shape is a WalrusError, not a traceback."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise WalrusError(f"unexpected {model.__name__} from the gateway: {e}") from e


def _reason(e: httpx.TransportError) -> str:
    return str(e) or type(e).__name__


def _unexpected(url: object, what: str) -> WalrusError:
    """A 2xx answer we cannot read (not JSON, another shape): one clear line, not a traceback."""
    return WalrusError(f"unexpected answer from {url}: {what}")


def _message(
    content: str, sender: str | None, on_busy: OnBusy, cwd: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"content": content, "on_busy": on_busy, "stream": False}
    if sender:
        body["sender"] = sender
    if cwd:
        body["cwd"] = cwd
    return body


def _agent_path(agent: str, tail: str) -> str:
    return f"/v1/agents/{quote(agent, safe='')}/{tail}"


def _conversation_path(agent: str, sender: str | None, tail: str) -> str:
    sender_part = quote(sender or DEFAULT_SENDER, safe="")
    return _agent_path(agent, f"conversations/{sender_part}/{tail}")


def _conversation_root(agent: str, sender: str | None) -> str:
    return _agent_path(agent, f"conversations/{quote(sender or DEFAULT_SENDER, safe='')}")


def _agent_config_path(name: str) -> str:
    return f"/v1/agents/{quote(name, safe='')}"


def _subscription(source: str, target_agent: str, once: bool) -> dict[str, Any]:
    return {"source": source, "target_agent": target_agent, "once": once}


def _cron_path(cron_id: str) -> str:
    return f"/v1/crons/{quote(cron_id, safe='')}"


def _subscription_path(sub_id: str) -> str:
    return f"/v1/subscriptions/{quote(sub_id, safe='')}"


def _feed_path(agent: str | None) -> str:
    return f"/v1/events?agent={quote(agent, safe='')}" if agent else "/v1/events"
