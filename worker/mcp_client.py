"""MCP client sessions for one worker process: opened lazily, kept open, reopened when they die.

The worker is synchronous (Celery) while the MCP SDK is async, so every session lives on one
background event loop thread; callers submit coroutines with ``run_coroutine_threadsafe`` and
wait with a timeout. Each session is held open by a task of its own because the SDK's
transports are anyio task groups, which must be entered and left by the same task.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from walrus_tasks.config import McpServerConfig
from walrus_tasks.errors import Cancelled

log = logging.getLogger("walrus.mcp")

T = TypeVar("T")

CLIENT_INFO = types.Implementation(name="walrus_tasks", version="0.1.0")
RETRY_AFTER = 30.0
"""Seconds a server that could not be reached is left alone before listing tries it again."""
CLOSE_TIMEOUT = 5.0
"""Seconds to wait for one session to close (the SDK stops a stdio server within ~4.5 s)."""
POLL = 0.25
"""Seconds between checks of the run's kill flag while a call is in flight."""
MAX_PAGES = 20
"""Pages of ``tools/list`` read at most (a server whose cursor never ends cannot hang us)."""


class McpFailed(Exception):
    """Raised when an MCP server cannot be reached, or a call to it fails or times out."""


@dataclass
class _Session:
    """One open connection: the client, its tool listing, and the task holding it open."""

    key: tuple[McpServerConfig, Path]
    client: Client
    tools: list[types.Tool]
    stop: asyncio.Event
    task: asyncio.Task[None]


class McpSessions:
    """The MCP sessions of this process, one per configured server, on a daemon loop thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="walrus-mcp", daemon=True)
        self._thread.start()
        # Touched only on the loop thread, so no lock is needed.
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: dict[str, float] = {}

    def _run(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def tools(self, name: str, server: McpServerConfig, home: Path) -> list[types.Tool]:
        """The tools server ``name`` offers (cached per session); McpFailed if unreachable."""
        return self._wait(self._tools(name, server, home), _connect_limit(server))

    def call(
        self,
        name: str,
        server: McpServerConfig,
        home: Path,
        tool: str,
        arguments: dict[str, Any],
        cancelled: Callable[[], bool] | None = None,
    ) -> types.CallToolResult:
        """Call ``tool``; a lost connection is reopened and the call retried once.

        McpFailed when it still fails, times out or the server refuses the request; Cancelled
        when ``cancelled()`` turns true first (the in-flight request is cancelled).
        """
        coro = self._call(name, server, home, tool, arguments)
        try:
            return self._wait(coro, 2 * (_connect_limit(server) + server.timeout), cancelled)
        except (McpFailed, Cancelled):
            raise
        except MCPError as e:  # the server's JSON-RPC error, e.g. unknown tool, bad arguments
            raise McpFailed(e.message) from None
        except Exception as e:  # e.g. a result that does not validate: the model is told
            log.warning("MCP server %s: %s failed", name, tool, exc_info=True)
            raise McpFailed(_describe(e)) from None

    def close(self) -> None:
        """Close every session and stop the loop; best effort, bounded, never raises."""
        if self.closed or self.pid != os.getpid():
            return
        self.closed = True
        with suppress(Exception):
            self._wait(self._close_all(), CLOSE_TIMEOUT + 1)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _wait(
        self,
        coro: Coroutine[Any, Any, T],
        limit: float,
        cancelled: Callable[[], bool] | None = None,
    ) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        deadline = time.monotonic() + limit
        while True:
            done, _ = concurrent.futures.wait([future], timeout=POLL)
            if done:
                return future.result()
            if cancelled is not None and cancelled():
                future.cancel()
                raise Cancelled("cancelled during an MCP call")
            if time.monotonic() >= deadline:
                future.cancel()
                raise McpFailed(f"no answer within {limit:g}s")

    async def _tools(self, name: str, server: McpServerConfig, home: Path) -> list[types.Tool]:
        failed = self._failed.get(name)
        if failed is not None and time.monotonic() - failed < RETRY_AFTER:
            raise McpFailed(f"unreachable less than {RETRY_AFTER:g}s ago")
        return (await self._session(name, server, home)).tools

    async def _call(
        self, name: str, server: McpServerConfig, home: Path, tool: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        for attempt in range(2):
            session = await self._session(name, server, home)
            try:
                return await session.client.call_tool(
                    tool, arguments, read_timeout_seconds=server.timeout
                )
            except Exception as e:
                if isinstance(e, MCPError) and e.code == types.REQUEST_TIMEOUT:
                    raise McpFailed(f"no answer within {server.timeout:g}s") from None
                if attempt or not _connection_lost(e):
                    raise
                log.warning("MCP server %s: connection lost (%s); reconnecting", name, e)
                await self._drop(name, session)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _session(self, name: str, server: McpServerConfig, home: Path) -> _Session:
        """The open session of ``name``; (re)opened if missing, ended, or reconfigured."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            session = self._sessions.get(name)
            if session is not None and (session.task.done() or session.key != (server, home)):
                await self._drop(name, session)
                session = None
            if session is None:
                try:
                    session = await self._open(name, server, home)
                except McpFailed:
                    self._failed[name] = time.monotonic()
                    raise
                self._failed.pop(name, None)
                self._sessions[name] = session
            return session

    async def _open(self, name: str, server: McpServerConfig, home: Path) -> _Session:
        opened: asyncio.Future[tuple[Client, list[types.Tool]]] = self._loop.create_future()
        stop = asyncio.Event()

        async def hold() -> None:
            try:
                async with Client(
                    _transport(server, home),
                    read_timeout_seconds=server.timeout,
                    client_info=CLIENT_INFO,
                    cache=None,
                ) as client:
                    tools = await _list_tools(client)
                    if not opened.done():  # else the opener gave up waiting
                        opened.set_result((client, tools))
                    await stop.wait()
            except Exception as e:
                if opened.done():
                    log.info("MCP server %s: session ended: %s", name, _describe(e))
                else:
                    opened.set_exception(McpFailed(_describe(e)))
            finally:
                if not opened.done():
                    opened.set_exception(McpFailed("connection ended during the handshake"))

        task = asyncio.create_task(hold(), name=f"mcp-{name}")
        try:
            client, tools = await asyncio.wait_for(asyncio.shield(opened), server.timeout)
        except BaseException as e:
            opened.cancel()  # a late handshake must not open a session nobody holds
            await _finish(task)
            if isinstance(e, TimeoutError):
                raise McpFailed(f"no handshake within {server.timeout:g}s") from None
            raise
        log.info("MCP server %s: connected, %d tools", name, len(tools))
        return _Session(key=(server, home), client=client, tools=tools, stop=stop, task=task)

    async def _drop(self, name: str, session: _Session) -> None:
        if self._sessions.get(name) is session:
            del self._sessions[name]
        session.stop.set()
        await _finish(session.task)

    async def _close_all(self) -> None:
        for name, session in list(self._sessions.items()):
            await self._drop(name, session)


async def _finish(task: asyncio.Task[None]) -> None:
    """Let ``task`` end (it closes its transport), cancelling it if it takes too long."""
    with suppress(BaseException):
        await asyncio.wait_for(task, CLOSE_TIMEOUT)


async def _list_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _transport(server: McpServerConfig, home: Path) -> Transport:
    if server.url is not None:
        return streamable_http_client(server.url)
    assert server.command is not None  # the config allows exactly one of the two
    # Relative paths in ``args`` resolve against the config directory, like the rest of it.
    params = StdioServerParameters(
        command=server.command, args=server.args, env=server.env, cwd=home
    )
    return stdio_client(params, errlog=_errlog())


def _errlog() -> TextIO:
    """The process's real stderr: the server's stderr needs a file descriptor to write to."""
    stream = sys.__stderr__
    if stream is not None:
        with suppress(Exception):
            stream.fileno()
            return stream
    return open(os.devnull, "w")


_LOST = (
    OSError,
    EOFError,
    httpx2.TransportError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    McpFailed,
)


def _connection_lost(e: BaseException) -> bool:
    """True for errors that a fresh connection may fix (not the server's answers)."""
    if isinstance(e, MCPError):
        # A restarted HTTP server no longer knows our session id: it answers 404.
        return e.code == types.CONNECTION_CLOSED or e.message == "Session terminated"
    if isinstance(e, BaseExceptionGroup):
        return any(_connection_lost(x) for x in e.exceptions)
    return isinstance(e, _LOST)


def _describe(e: BaseException) -> str:
    """A one-line reason, unwrapping the task groups' exception groups."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _connect_limit(server: McpServerConfig) -> float:
    """Upper bound for opening a session: close a dead one, handshake, clean up a failure."""
    return server.timeout + 2 * CLOSE_TIMEOUT + 1


_sessions: McpSessions | None = None
_lock = threading.Lock()


def sessions() -> McpSessions:
    """The session manager of this process, created on first use (after a fork, a fresh one)."""
    global _sessions
    with _lock:
        if _sessions is None or _sessions.closed or _sessions.pid != os.getpid():
            _sessions = McpSessions()
        return _sessions


@atexit.register
def _close_at_exit() -> None:
    if _sessions is not None:
        _sessions.close()


def _after_fork() -> None:
    # The parent's loop thread does not exist in the child, and its lock may be held.
    global _sessions, _lock
    _sessions = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
