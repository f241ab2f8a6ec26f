"""The asyncio twin of ``walrus_tasks.client.Client`` (same methods, same resume semantics)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from walrus_tasks.client import (
    RETRY_DELAY,
    RETRY_DELAY_MAX,
    RETRY_STATUSES,
    STREAM_GIVE_UP,
    STREAM_READ_TIMEOUT,
    Event,
    GatewayUnreachable,
    SSEParser,
    _agent_config_path,
    _agent_path,
    _conversation_path,
    _conversation_root,
    _cron_path,
    _feed_path,
    _message,
    _parse,
    _reason,
    _subscription,
    _subscription_path,
    _unexpected,
    raise_for_error,
)
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


class AsyncClient:
    """Asynchronous client of one gateway; ``async with`` it or ``await close()``.

    A dropped event stream reconnects with ``Last-Event-ID`` for up to ``stream_give_up``
    seconds without a new event, so the caller sees every event exactly once.
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
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=headers)
        self._stream_timeout = httpx.Timeout(timeout, read=STREAM_READ_TIMEOUT)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise GatewayUnreachable(self.base_url, _reason(e)) from e
        raise_for_error(resp)
        try:
            body = resp.json()
            return body if key is None else body[key]
        except (ValueError, KeyError, TypeError) as e:
            raise _unexpected(resp.url, f"a body without {key or 'JSON'!r}") from e

    async def send(
        self,
        agent: str,
        content: str,
        sender: str | None = None,
        on_busy: OnBusy = "enqueue",
        cwd: str | None = None,
    ) -> Accepted:
        """Submit a message; the accepted run's id and events URL."""
        body = _message(content, sender, on_busy, cwd)
        path = _agent_path(agent, "messages")
        return _parse(Accepted, await self._request("POST", path, json=body))

    async def reply(
        self, agent: str, content: str, sender: str | None = None, call_id: str | None = None
    ) -> Replied:
        """Answer the conversation's pending ``ask_user`` question (or approval)."""
        body = {"content": content, **({"call_id": call_id} if call_id else {})}
        path = _conversation_path(agent, sender, "reply")
        return _parse(Replied, await self._request("POST", path, json=body))

    async def steer(self, agent: str, content: str, sender: str | None = None) -> str:
        """Inject ``content`` before the active run's next LLM call; the run's id."""
        path = _conversation_path(agent, sender, "steer")
        return str(await self._request("POST", path, key="run_id", json={"content": content}))

    async def compact(self, agent: str, sender: str | None = None) -> Accepted:
        """Queue a compaction of the conversation (a run of its own)."""
        path = _conversation_path(agent, sender, "compact")
        return _parse(Accepted, await self._request("POST", path))

    async def archive(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The histories compaction replaced, oldest first."""
        path = _conversation_path(agent, sender, "archive")
        return list(await self._request("GET", path, key="archives"))

    async def run(self, run_id: str) -> RunInfo:
        """Status of one run."""
        return _parse(RunInfo, await self._request("GET", f"/v1/runs/{quote(run_id, safe='')}"))

    async def runs(self, cursor: str | None = None, limit: int = 50, **filters: Any) -> RunPage:
        """A page of runs, newest first; filters ``agent=``, ``sender=``, ``status=[...]``."""
        params = {k: v for k, v in {**filters, "cursor": cursor, "limit": limit}.items() if v}
        return _parse(RunPage, await self._request("GET", "/v1/runs", params=params))

    async def kill(self, agent: str, sender: str | None = None) -> str | None:
        """Cancel the conversation's active run; its id, or None if nothing was running."""
        path = _conversation_path(agent, sender, "kill")
        run_id = await self._request("POST", path, key="run_id")
        return str(run_id) if run_id else None

    async def history(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The conversation's messages in order."""
        path = _conversation_path(agent, sender, "history")
        return list(await self._request("GET", path, key="messages"))

    async def agents(self) -> list[AgentInfo]:
        """The configured agents."""
        rows = await self._request("GET", "/v1/agents", key="agents")
        return [_parse(AgentInfo, a) for a in rows]

    async def conversations(self) -> list[Conversation]:
        """Every conversation, most recently active first."""
        rows = await self._request("GET", "/v1/conversations", key="conversations")
        return [_parse(Conversation, c) for c in rows]

    async def add_cron(self, spec: CronSpec) -> CronEntry:
        """Create a cron entry (fires from its next schedule time on)."""
        body = spec.model_dump(exclude_none=True)
        return _parse(CronEntry, await self._request("POST", "/v1/crons", json=body))

    async def crons(self) -> list[CronEntry]:
        """Every cron entry, with last/next fire time and last run id."""
        rows = await self._request("GET", "/v1/crons", key="crons")
        return [_parse(CronEntry, c) for c in rows]

    async def remove_cron(self, cron_id: str) -> None:
        """Delete a cron entry (NotFound if there is none with this id)."""
        await self._request("DELETE", _cron_path(cron_id))

    async def reload(self) -> dict[str, Any]:
        """Make every gateway, worker and beat re-read the config: ``{generation, agents}``."""
        return dict(await self._request("POST", "/v1/admin/reload"))

    async def delete_conversation(self, agent: str, sender: str | None = None) -> None:
        """Delete a conversation's history and state (Conflict while a run is active or queued)."""
        await self._request("DELETE", _conversation_root(agent, sender))

    async def create_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Write a new agent's config (Conflict if it exists); every process reloads."""
        body = {"name": name, **fields}
        return _parse(AgentInfo, await self._request("POST", "/v1/agents", json=body))

    async def update_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Replace an agent's whole config (omitted fields take their defaults)."""
        path = _agent_config_path(name)
        return _parse(AgentInfo, await self._request("PUT", path, json=fields))

    async def delete_agent(self, name: str) -> None:
        """Delete an agent's config (Conflict while another agent lists it in members)."""
        await self._request("DELETE", _agent_config_path(name))

    async def providers(self) -> dict[str, Any]:
        """``{"providers": [{name, kind, base_url}], "models": [the models agents use]}``."""
        return dict(await self._request("GET", "/v1/providers"))

    async def skills(self) -> list[dict[str, Any]]:
        """The skills: ``[{name, description, allowed_tools}]``."""
        return list(await self._request("GET", "/v1/skills", key="skills"))

    async def mcps(self) -> list[dict[str, Any]]:
        """The MCP servers: ``[{name, transport, command | url, agents}]``."""
        return list(await self._request("GET", "/v1/mcps", key="mcps"))

    async def stats(self) -> dict[str, Any]:
        """Counts of agents, conversations, active and queued runs, leases and queue depths."""
        return dict(await self._request("GET", "/v1/stats"))

    async def subscribe(self, source: str, target_agent: str, once: bool = False) -> Subscription:
        """Send every event published to ``source`` to ``target_agent`` (only the first: once)."""
        body = _subscription(source, target_agent, once)
        return _parse(Subscription, await self._request("POST", "/v1/subscriptions", json=body))

    async def subscriptions(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        rows = await self._request("GET", "/v1/subscriptions", key="subscriptions")
        return [_parse(Subscription, s) for s in rows]

    async def unsubscribe(self, sub_id: str) -> None:
        """Remove a subscription (NotFound if there is none with this id)."""
        await self._request("DELETE", _subscription_path(sub_id))

    async def publish(self, source: str, payload: Any) -> list[str]:
        """Publish an event; the ids of the runs it started (one per fired subscription)."""
        body = {"source": source, "payload": payload}
        return [str(f) for f in await self._request("POST", "/v1/events", key="fired", json=body)]

    async def events(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The run's events after ``last_event_id`` (all when None), up to and including ``end``."""
        path = f"/v1/runs/{quote(run_id, safe='')}/events"
        async for event in self._follow(path, last_event_id):
            yield event

    async def feed(
        self, agent: str | None = None, last_event_id: str | None = None
    ) -> AsyncIterator[Event]:
        """The live feed of every run's events, as ``Client.feed`` (it has no end)."""
        async for event in self._follow(_feed_path(agent), last_event_id, until_end=False):
            yield event

    async def _follow(
        self, path: str, last_event_id: str | None, until_end: bool = True
    ) -> AsyncIterator[Event]:
        """Yield the events of SSE ``path``, reconnecting after drops until ``end`` (if asked)."""
        last = last_event_id
        down_since: float | None = None
        failures = 0
        while True:
            error = "the stream ended before the run's end event"
            try:
                async for event in self._stream(path, last):
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
            await asyncio.sleep(min(RETRY_DELAY * 2**failures, RETRY_DELAY_MAX, left))
            failures += 1

    async def _stream(self, path: str, last_event_id: str | None) -> AsyncIterator[Event]:
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        parser = SSEParser()
        try:
            async with self._http.stream(
                "GET", path, headers=headers, timeout=self._stream_timeout
            ) as resp:
                if resp.status_code in RETRY_STATUSES:
                    raise GatewayUnreachable(self.base_url, f"HTTP {resp.status_code}")
                if not resp.is_success:
                    await resp.aread()
                    raise_for_error(resp)
                if "text/event-stream" not in resp.headers.get("content-type", ""):
                    raise _unexpected(resp.url, "a body that is not an event stream")
                async for line in resp.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as e:
            raise GatewayUnreachable(self.base_url, _reason(e)) from e
        except ValueError as e:
            raise _unexpected(self.base_url + path, f"bad event data: {e}") from e
