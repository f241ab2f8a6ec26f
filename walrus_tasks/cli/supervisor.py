"""Running a few child processes side by side (``walrus up``), restarting them, stopping them.

A child that exits is started again after a backoff (``RESTART_DELAY`` doubling up to
``RESTART_DELAY_MAX``, back to the start once it has stayed up ``STABLE_AFTER`` s) while the
others keep serving; one that exits ``MAX_FAILURES`` times within ``FAILURE_WINDOW`` s is a
failure the caller stops on. Children are started from the thread that calls ``spawn``/``add``
and ``check`` — the main thread — since each gets SIGTERM when that thread ends
(walrus_tasks/parent_death.py): a ``walrus up`` killed with SIGKILL takes its children along.

Each child gets its own session, so the terminal's Ctrl-C reaches only the supervisor. The
supervisor then sends one SIGTERM to each child's main process — a Celery worker does a warm
shutdown and its pool processes finish their tasks — instead of the terminal's SIGINT hitting
every process of every group at once (Celery's pool children would race their parent's
shutdown, and a second SIGINT is a cold shutdown). Stragglers get SIGKILL on their whole
process group, which also reaps a worker's pool. Children added with ``last`` (the Redis the
others use) are stopped after the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from rich.markup import escape
from rich.text import Text

from walrus_tasks.cli.common import console, err
from walrus_tasks.errors import WalrusError
from walrus_tasks.parent_death import die_with_parent

STOP_TIMEOUT = 10.0
"""Seconds children get to exit after SIGTERM before their process groups are killed."""

RESTART_DELAY = 0.5
"""Seconds before a child that exited is started again; doubled after each exit."""

RESTART_DELAY_MAX = 10.0
"""The longest wait before a restart."""

STABLE_AFTER = 30.0
"""Seconds up after which a child's exit counts as new: its backoff starts over."""

MAX_FAILURES = 5
"""Exits within ``FAILURE_WINDOW`` after which a child is given up on (and everything stops)."""

FAILURE_WINDOW = 60.0

TAIL_LINES = 15
"""Last output lines kept per child, shown when it is given up on."""

NAME_WIDTH = 7
"""Width of the name column that prefixes children's output (``gateway``)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
COLORS = ("cyan", "green", "magenta", "yellow", "blue", "bright_red")

Starter = Callable[[], "subprocess.Popen[bytes]"]


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``signal SIGKILL`` for a ``Popen.returncode``."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


@dataclass
class Child:
    """One supervised process: how to start it, the running one, its exits and restarts."""

    name: str
    start: Starter
    style: str
    last: bool = False
    log_tail: Callable[[], list[str]] | None = None
    """Its last log lines when its output is not piped through us (Redis logs to a file)."""
    process: subprocess.Popen[bytes] | None = None
    pumps: list[threading.Thread] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    started_at: float = 0.0
    restarts: int = 0
    exits: deque[float] = field(default_factory=deque)
    delay: float = RESTART_DELAY
    restart_at: float | None = None
    """When it is due to start again; None while it runs."""
    last_exit: int | None = None
    start_error: str = ""

    def last_exit_text(self) -> str | None:
        """How it last ended: why its start failed, else its exit; None if it never ended."""
        if self.start_error:
            return self.start_error
        return None if self.last_exit is None else describe_exit(self.last_exit)

    def last_lines(self) -> list[str]:
        """Its last output (or log) lines, then why its last start failed, if it did."""
        lines = self.log_tail() if self.log_tail else list(self.tail)
        return [*lines, self.start_error] if self.start_error else lines


@dataclass
class Failure:
    """A child given up on: it exited ``MAX_FAILURES`` times within ``FAILURE_WINDOW``."""

    child: Child

    def message(self) -> str:
        """Which child, how it last exited, and its last lines."""
        c = self.child
        how = c.last_exit_text() or "?"
        text = (
            f"{c.name} failed {len(c.exits)} times within {FAILURE_WINDOW:.0f} s "
            f"(last: {how}); stopping walrus up"
        )
        lines = c.last_lines()
        if lines:
            text += "\nits last lines:\n" + "\n".join(f"  {line}" for line in lines)
        return text


@dataclass
class Supervisor:
    """Spawns children with ``env``, prefixes their output, restarts them, stops them all."""

    env: dict[str, str]
    children: dict[str, Child] = field(default_factory=dict)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    signals: int = 0
    restart_delay: float = RESTART_DELAY
    on_change: Callable[[], None] | None = None
    """Called after a child starts or exits (``walrus up`` rewrites its state file)."""

    def spawn(self, name: str, argv: list[str]) -> None:
        """Start ``argv`` as the child ``name``, in a session of its own, and supervise it."""

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

        self.add(name, start)

    def add(
        self,
        name: str,
        start: Starter,
        *,
        process: subprocess.Popen[bytes] | None = None,
        last: bool = False,
        log_tail: Callable[[], list[str]] | None = None,
    ) -> None:
        """Supervise ``name``, started by ``start`` (or already running as ``process``)."""
        style = COLORS[len(self.children) % len(COLORS)]
        child = Child(name, start, style, last=last, log_tail=log_tail, delay=self.restart_delay)
        self.children[name] = child
        if process is None:
            self._start(child)
        else:
            self._adopt(child, process)

    def _start(self, child: Child) -> None:
        """Start ``child`` (raises WalrusError or OSError when it cannot be started)."""
        self._adopt(child, child.start())

    def _adopt(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        child.process = process
        child.started_at = time.monotonic()
        child.restart_at = None
        child.start_error = ""
        child.tail.clear()  # the lines a failure shows are its last run's
        if process.stdout is not None:
            pump = threading.Thread(
                target=self._pump, args=(child, process.stdout), daemon=True, name=child.name
            )
            child.pumps = [p for p in child.pumps if p.is_alive()] + [pump]
            pump.start()
        self._changed()

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip()
                child.tail.append(line)
                console.print(
                    Text.assemble((f"{child.name:>{NAME_WIDTH}} | ", child.style), line),
                    soft_wrap=True,
                )

    def check(self) -> Failure | None:
        """Note children that exited, restart those whose backoff is over; the first failure.

        Call it from the main thread, often (``walrus up`` does every 0.2 s).
        """
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is None:
                code = child.process.poll() if child.process else None
                if code is not None and self._exited(child, code, "", now):
                    for pump in child.pumps:  # its last lines, for the message
                        pump.join(timeout=1)
                    return Failure(child)
            elif now >= child.restart_at and not self.stop_requested.is_set():
                try:
                    self._start(child)
                except (WalrusError, OSError) as e:
                    reason = e.message if isinstance(e, WalrusError) else str(e)
                    if self._exited(child, None, reason, time.monotonic()):
                        return Failure(child)
                else:
                    child.restarts += 1
                    self._changed()
        return None

    def _exited(self, child: Child, code: int | None, error: str, now: float) -> bool:
        """Record an exit (or a failed start); schedule the restart. True: give up on it."""
        if code is not None:
            child.last_exit = code
        child.start_error = error
        if now - child.started_at >= STABLE_AFTER:
            child.delay = self.restart_delay
        child.exits.append(now)
        while child.exits and now - child.exits[0] > FAILURE_WINDOW:
            child.exits.popleft()
        if len(child.exits) >= MAX_FAILURES:
            return True
        how = f"failed to start: {error}" if error else f"exited with {describe_exit(code or 0)}"
        err.print(f"[yellow]{child.name} {escape(how)}; restarting in {child.delay:g} s[/]")
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, RESTART_DELAY_MAX)
        self._changed()
        return False

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Name → PID (None while waiting to restart), state, restarts and last exit."""
        return {
            c.name: {
                "pid": c.process.pid if c.process and c.restart_at is None else None,
                "state": "running" if c.restart_at is None else "restarting",
                "restarts": c.restarts,
                "last_exit": c.last_exit_text(),
            }
            for c in self.children.values()
        }

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While inside, SIGINT/SIGTERM/SIGHUP set ``stop_requested`` instead of raising."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.signals += 1
            self.stop_requested.set()

        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every child: the others first, then those added with ``last``.

        Each gets SIGTERM and up to ``timeout`` s, then its process group gets SIGKILL. A
        second stop signal while waiting (Ctrl-C again) kills at once.
        """
        for last in (False, True):
            self._stop([c for c in self.children.values() if c.last is last], timeout)
        for child in self.children.values():
            for pump in child.pumps:
                pump.join(timeout=2)

    def _stop(self, children: list[Child], timeout: float) -> None:
        processes = [(c, c.process) for c in children if c.process is not None]
        alive = [(c, p) for c, p in processes if p.poll() is None]
        for _, p in alive:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        signals_before = self.signals
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline and self.signals == signals_before:
            alive = [(c, p) for c, p in alive if p.poll() is None]
            time.sleep(0.05)
        for child, p in processes:
            if p.poll() is None:
                console.print(f"{child.name} did not stop in time; killing it", style="yellow")
            # Also reaps what the child left in its group (a worker's pool processes).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
