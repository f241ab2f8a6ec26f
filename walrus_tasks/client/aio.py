"""The asyncio twin of ``client.sync.Client`` (same methods, same resume semantics).

Each method is the same ``client.core`` request, sent with ``httpx.AsyncClient``; a dropped event
stream resumes as ``client.stream.Resume`` decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from walrus_tasks.client import core as api
from walrus_tasks.client import stream as sse
from walrus_tasks.client.core import GatewayUnreachable
from walrus_tasks.client.stream import Event
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
from walrus_tasks.reply_text import ReplyText

T = TypeVar("T")


class AsyncClient(api.ClientBase[httpx.AsyncClient]):
    """Asynchronous client of one gateway; ``async with`` it or ``await close()``.

    A dropped event stream reconnects with ``Last-Event-ID`` for up to ``stream_give_up``
    seconds without a new event, so the caller sees every event exactly once.
    """

    _http_class = httpx.AsyncClient

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

    async def _call(self, call: api.Call[T]) -> T:
        """Send ``call``; its result, or the walrus error the answer (or its absence) means."""
        with api.unreachable(self.base_url):
            try:
                resp = await self._send(call)
            except api.DROPPED:
                if not call.retry_dropped:
                    raise
                resp = await self._send(call)
        return call.read(resp)

    async def _send(self, call: api.Call[T]) -> httpx.Response:
        return await self._http.request(
            call.method, call.path, json=call.json, params=call.params, headers=call.headers
        )

    # --- conversations and runs ----------------------------------------------------------------

    async def send(
        self,
        agent: str,
        content: str,
        sender: str | None = None,
        on_busy: OnBusy = "enqueue",
        cwd: str | None = None,
        client_tools: Sequence[ClientTool] = (),
    ) -> Accepted:
        """Submit a message; the accepted run's id and events URL.

        ``client_tools`` are functions the caller runs itself: a call to one waits as an
        ``ask_user`` of kind ``client_tool``, answered by :meth:`reply` with its ``call_id``.
        """
        return await self._call(api.send(agent, content, sender, on_busy, cwd, client_tools))

    async def reply(
        self, agent: str, content: str, sender: str | None = None, call_id: str | None = None
    ) -> Replied:
        """Answer the conversation's pending ``ask_user`` question (or approval)."""
        return await self._call(api.reply(agent, content, sender, call_id))

    async def steer(self, agent: str, content: str, sender: str | None = None) -> str:
        """Inject ``content`` before the active run's next LLM call; the run's id."""
        return await self._call(api.steer(agent, content, sender))

    async def compact(self, agent: str, sender: str | None = None) -> Accepted:
        """Queue a compaction of the conversation (a run of its own)."""
        return await self._call(api.compact(agent, sender))

    async def archive(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The histories compaction replaced, oldest first."""
        return await self._call(api.archive(agent, sender))

    async def run(self, run_id: str) -> RunInfo:
        """Status of one run."""
        return await self._call(api.run(run_id))

    async def runs(self, cursor: str | None = None, limit: int = 50, **filters: Any) -> RunPage:
        """A page of runs, newest first; filters ``agent=``, ``sender=``, ``status=[...]``."""
        return await self._call(api.runs(cursor, limit, filters))

    async def cancel(self, agent: str, sender: str | None = None) -> str | None:
        """Cancel the conversation's active run; its id, or None if nothing was running."""
        return await self._call(api.cancel(agent, sender))

    kill = cancel
    """The older name of :meth:`cancel`."""

    async def history(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The conversation's messages in order."""
        return await self._call(api.history(agent, sender))

    async def conversations(self) -> list[Conversation]:
        """Every conversation, most recently active first."""
        return await self._call(api.conversations())

    async def delete_conversation(self, agent: str, sender: str | None = None) -> None:
        """Delete a conversation's history and state (Conflict while a run is active or queued)."""
        return await self._call(api.delete_conversation(agent, sender))

    # --- agents and the gateway ----------------------------------------------------------------

    async def agents(self) -> list[AgentInfo]:
        """The configured agents."""
        return await self._call(api.agents())

    async def agent(self, name: str) -> AgentInfo:
        """One agent (NotFound if it is not configured)."""
        return await self._call(api.agent(name))

    async def create_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Write a new agent's config (Conflict if it exists); every process reloads."""
        return await self._call(api.create_agent(name, fields))

    async def update_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Replace an agent's whole config (omitted fields take their defaults)."""
        return await self._call(api.update_agent(name, fields))

    async def delete_agent(self, name: str) -> None:
        """Delete an agent's config (Conflict while another agent lists it in members)."""
        return await self._call(api.delete_agent(name))

    async def healthz(self) -> dict[str, Any]:
        """The gateway's health body (raises if it is not 200)."""
        return await self._call(api.healthz())

    async def reload(self) -> dict[str, Any]:
        """Make every gateway, worker and beat re-read the config: ``{generation, agents}``."""
        return await self._call(api.reload())

    async def providers(self) -> dict[str, Any]:
        """``{"providers": [{name, kind, base_url}], "models": [the models agents use]}``."""
        return await self._call(api.providers())

    async def skills(self) -> list[dict[str, Any]]:
        """The skills: ``[{name, description, allowed_tools}]``."""
        return await self._call(api.skills())

    async def mcps(self) -> list[dict[str, Any]]:
        """The MCP servers: ``[{name, transport, command | url, agents}]``."""
        return await self._call(api.mcps())

    async def stats(self) -> dict[str, Any]:
        """Counts of agents, conversations, active and queued runs, leases and queue depths."""
        return await self._call(api.stats())

    # --- cron and the event bus ----------------------------------------------------------------

    async def add_cron(self, spec: CronSpec) -> CronEntry:
        """Create a cron entry (fires from its next schedule time on)."""
        return await self._call(api.add_cron(spec))

    async def crons(self) -> list[CronEntry]:
        """Every cron entry, with last/next fire time and last run id."""
        return await self._call(api.crons())

    async def remove_cron(self, cron_id: str) -> None:
        """Delete a cron entry (NotFound if there is none with this id)."""
        return await self._call(api.remove_cron(cron_id))

    async def subscribe(self, source: str, target_agent: str, once: bool = False) -> Subscription:
        """Send every event published to ``source`` to ``target_agent`` (only the first: once)."""
        return await self._call(api.subscribe(source, target_agent, once))

    async def subscriptions(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        return await self._call(api.subscriptions())

    async def unsubscribe(self, sub_id: str) -> None:
        """Remove a subscription (NotFound if there is none with this id)."""
        return await self._call(api.unsubscribe(sub_id))

    async def publish(self, source: str, payload: Any) -> list[str]:
        """Publish an event; the ids of the runs it started (one per fired subscription)."""
        return await self._call(api.publish(source, payload))

    # --- event streams -------------------------------------------------------------------------

    def events(self, run_id: str, last_event_id: str | None = None) -> AsyncGenerator[Event, None]:
        """The run's events after ``last_event_id`` (all when None), up to and including ``end``."""
        resume = sse.Resume(self.base_url, self.stream_give_up, last_event_id)
        return self._follow(api.run_events_path(run_id), resume)

    async def reply_text(self, run_id: str) -> str:
        """The run's reply once it has ended, as ``Client.reply_text``."""
        reply = ReplyText()
        async for event in self.events(run_id):
            reply.feed(event.data)
        return reply.text

    def feed(
        self, agent: str | None = None, last_event_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """The live feed of every run's events, as ``Client.feed`` (it has no end)."""
        resume = sse.Resume(self.base_url, self.stream_give_up, last_event_id, until_end=False)
        return self._follow(api.feed_path(agent), resume)

    async def _follow(self, path: str, resume: sse.Resume) -> AsyncGenerator[Event, None]:
        """Drive ``resume``: yield the events of SSE ``path``, reconnecting after drops."""
        while True:
            try:
                async for event in self._stream(path, resume.headers()):
                    done = resume.on_event(event)
                    yield event
                    if done:
                        return
                reason = sse.STREAM_CUT
            except GatewayUnreachable as e:
                reason = e.reason
            await asyncio.sleep(resume.on_drop(reason, time.monotonic()))

    async def _stream(self, path: str, headers: dict[str, str]) -> AsyncIterator[Event]:
        """One SSE request; a transport failure or a 502/503/504 raises GatewayUnreachable."""
        parser = sse.SSEParser()
        with sse.stream_errors(self.base_url, path):
            async with self._http.stream(
                "GET", path, headers=headers, timeout=self._stream_timeout
            ) as resp:
                if sse.wants_error_body(resp):
                    await resp.aread()
                sse.check_stream(resp, self.base_url, path)
                async for line in resp.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
