"""The synchronous client of the gateway's HTTP API (what the ``walrus`` CLI uses).

Each method is one request described in ``client.core``; run events arrive as Server-Sent
Events and a dropped stream resumes as ``client.stream.Resume`` decides, so the caller sees
every event exactly once (docs/design.md, invariant 5). ``client.aio.AsyncClient`` is the
asyncio twin.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from walrus_tasks.client import core as api
from walrus_tasks.client import stream as sse
from walrus_tasks.client.core import GatewayUnreachable
from walrus_tasks.client.stream import Event, parse_sse
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


class Client(api.ClientBase[httpx.Client]):
    """Synchronous client of one gateway; use as a context manager or call ``close()``.

    A dropped event stream reconnects for up to ``stream_give_up`` seconds without a new event.
    """

    _http_class = httpx.Client

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

    def _call(self, call: api.Call[T]) -> T:
        """Send ``call``; its result, or the walrus error the answer (or its absence) means."""
        with api.unreachable(self.base_url):
            try:
                resp = self._send(call)
            except api.DROPPED:
                if not call.retry_dropped:
                    raise
                resp = self._send(call)
        return call.read(resp)

    def _send(self, call: api.Call[T]) -> httpx.Response:
        return self._http.request(
            call.method, call.path, json=call.json, params=call.params, headers=call.headers
        )

    # --- conversations and runs ----------------------------------------------------------------

    def send(
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
        return self._call(api.send(agent, content, sender, on_busy, cwd, client_tools))

    def reply(
        self, agent: str, content: str, sender: str | None = None, call_id: str | None = None
    ) -> Replied:
        """Answer the conversation's pending ``ask_user`` question (or approval)."""
        return self._call(api.reply(agent, content, sender, call_id))

    def steer(self, agent: str, content: str, sender: str | None = None) -> str:
        """Inject ``content`` before the active run's next LLM call; the run's id."""
        return self._call(api.steer(agent, content, sender))

    def compact(self, agent: str, sender: str | None = None) -> Accepted:
        """Queue a compaction of the conversation (a run of its own)."""
        return self._call(api.compact(agent, sender))

    def archive(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The histories compaction replaced, oldest first."""
        return self._call(api.archive(agent, sender))

    def run(self, run_id: str) -> RunInfo:
        """Status of one run."""
        return self._call(api.run(run_id))

    def runs(self, cursor: str | None = None, limit: int = 50, **filters: Any) -> RunPage:
        """A page of runs, newest first; filters ``agent=``, ``sender=``, ``status=[...]``."""
        return self._call(api.runs(cursor, limit, filters))

    def cancel(self, agent: str, sender: str | None = None) -> str | None:
        """Cancel the conversation's active run; its id, or None if nothing was running."""
        return self._call(api.cancel(agent, sender))

    kill = cancel
    """The older name of :meth:`cancel`."""

    def history(self, agent: str, sender: str | None = None) -> list[dict[str, Any]]:
        """The conversation's messages in order."""
        return self._call(api.history(agent, sender))

    def conversations(self) -> list[Conversation]:
        """Every conversation, most recently active first."""
        return self._call(api.conversations())

    def delete_conversation(self, agent: str, sender: str | None = None) -> None:
        """Delete a conversation's history and state (Conflict while a run is active or queued)."""
        return self._call(api.delete_conversation(agent, sender))

    # --- agents and the gateway ----------------------------------------------------------------

    def agents(self) -> list[AgentInfo]:
        """The configured agents."""
        return self._call(api.agents())

    def agent(self, name: str) -> AgentInfo:
        """One agent (NotFound if it is not configured)."""
        return self._call(api.agent(name))

    def create_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Write a new agent's config (Conflict if it exists); every process reloads."""
        return self._call(api.create_agent(name, fields))

    def update_agent(self, name: str, **fields: Any) -> AgentInfo:
        """Replace an agent's whole config (omitted fields take their defaults)."""
        return self._call(api.update_agent(name, fields))

    def delete_agent(self, name: str) -> None:
        """Delete an agent's config (Conflict while another agent lists it in members)."""
        return self._call(api.delete_agent(name))

    def healthz(self) -> dict[str, Any]:
        """The gateway's health body (raises if it is not 200)."""
        return self._call(api.healthz())

    def reload(self) -> dict[str, Any]:
        """Make every gateway, worker and beat re-read the config: ``{generation, agents}``."""
        return self._call(api.reload())

    def providers(self) -> dict[str, Any]:
        """``{"providers": [{name, kind, base_url}], "models": [the models agents use]}``."""
        return self._call(api.providers())

    def skills(self) -> list[dict[str, Any]]:
        """The skills: ``[{name, description, allowed_tools}]``."""
        return self._call(api.skills())

    def mcps(self) -> list[dict[str, Any]]:
        """The MCP servers: ``[{name, transport, command | url, agents}]``."""
        return self._call(api.mcps())

    def stats(self) -> dict[str, Any]:
        """Counts of agents, conversations, active and queued runs, leases and queue depths."""
        return self._call(api.stats())

    # --- cron and the event bus ----------------------------------------------------------------

    def add_cron(self, spec: CronSpec) -> CronEntry:
        """Create a cron entry (fires from its next schedule time on)."""
        return self._call(api.add_cron(spec))

    def crons(self) -> list[CronEntry]:
        """Every cron entry, with last/next fire time and last run id."""
        return self._call(api.crons())

    def remove_cron(self, cron_id: str) -> None:
        """Delete a cron entry (NotFound if there is none with this id)."""
        return self._call(api.remove_cron(cron_id))

    def subscribe(self, source: str, target_agent: str, once: bool = False) -> Subscription:
        """Send every event published to ``source`` to ``target_agent`` (only the first: once)."""
        return self._call(api.subscribe(source, target_agent, once))

    def subscriptions(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        return self._call(api.subscriptions())

    def unsubscribe(self, sub_id: str) -> None:
        """Remove a subscription (NotFound if there is none with this id)."""
        return self._call(api.unsubscribe(sub_id))

    def publish(self, source: str, payload: Any) -> list[str]:
        """Publish an event; the ids of the runs it started (one per fired subscription)."""
        return self._call(api.publish(source, payload))

    # --- event streams -------------------------------------------------------------------------

    def events(self, run_id: str, last_event_id: str | None = None) -> Generator[Event, None, None]:
        """The run's events after ``last_event_id`` (all when None), up to and including ``end``."""
        resume = sse.Resume(self.base_url, self.stream_give_up, last_event_id)
        return self._follow(api.run_events_path(run_id), resume)

    def reply_text(self, run_id: str) -> str:
        """The run's reply, once it has ended: every step's text, a restarted step's once.

        Follows the run's events to its ``end`` (``ReplyText`` does the same over events a
        caller reads itself).
        """
        reply = ReplyText()
        for event in self.events(run_id):
            reply.feed(event.data)
        return reply.text

    def feed(
        self, agent: str | None = None, last_event_id: str | None = None
    ) -> Generator[Event, None, None]:
        """The live feed of every run's events, from now on (or after ``last_event_id``).

        It has no end: stop iterating to leave. Each event carries its run's ``run_id``,
        ``agent`` and ``sender``; ``agent`` keeps one agent's runs.
        """
        resume = sse.Resume(self.base_url, self.stream_give_up, last_event_id, until_end=False)
        return self._follow(api.feed_path(agent), resume)

    def _follow(self, path: str, resume: sse.Resume) -> Generator[Event, None, None]:
        """Drive ``resume``: yield the events of SSE ``path``, reconnecting after drops."""
        while True:
            try:
                for event in self._stream(path, resume.headers()):
                    done = resume.on_event(event)
                    yield event
                    if done:
                        return
                reason = sse.STREAM_CUT
            except GatewayUnreachable as e:
                reason = e.reason
            time.sleep(resume.on_drop(reason, time.monotonic()))

    def _stream(self, path: str, headers: dict[str, str]) -> Iterator[Event]:
        """One SSE request; a transport failure or a 502/503/504 raises GatewayUnreachable."""
        with (
            sse.stream_errors(self.base_url, path),
            self._http.stream("GET", path, headers=headers, timeout=self._stream_timeout) as resp,
        ):
            if sse.wants_error_body(resp):
                resp.read()
            sse.check_stream(resp, self.base_url, path)
            yield from parse_sse(resp.iter_lines())
