"""Running a few child processes side by side (``walrus up``) and stopping them cleanly.

Each child gets its own session, so the terminal's Ctrl-C reaches only the supervisor. The
supervisor then sends one SIGTERM to each child's main process — a Celery worker does a warm
shutdown and its pool processes finish their tasks — instead of the terminal's SIGINT hitting
every process of every group at once (Celery's pool children would race their parent's
shutdown, and a second SIGINT is a cold shutdown). Stragglers get SIGKILL on their whole
process group, which also reaps a worker's pool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

from rich.text import Text

from walrus_tasks.cli.common import console

STOP_TIMEOUT = 10.0
"""Seconds children get to exit after SIGTERM before their process groups are killed."""

NAME_WIDTH = 7
"""Width of the name column that prefixes children's output (``gateway``)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
COLORS = ("cyan", "green", "magenta", "yellow", "blue", "bright_red")


@dataclass
class Child:
    """One supervised process and the thread copying its output."""

    name: str
    process: subprocess.Popen[bytes]
    pump: threading.Thread
    style: str


@dataclass
class Supervisor:
    """Spawns children with ``env``, prefixes their output with their name, stops them all."""

    env: dict[str, str]
    children: dict[str, Child] = field(default_factory=dict)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    signals: int = 0

    def spawn(self, name: str, argv: list[str]) -> None:
        """Start ``argv`` as the child ``name`` in a session of its own."""
        process = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        style = COLORS[len(self.children) % len(COLORS)]
        assert process.stdout is not None
        pump = threading.Thread(
            target=self._pump, args=(name, style, process.stdout), daemon=True, name=name
        )
        self.children[name] = Child(name, process, pump, style)
        pump.start()

    def _pump(self, name: str, style: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip()
                console.print(
                    Text.assemble((f"{name:>{NAME_WIDTH}} | ", style), line), soft_wrap=True
                )

    def exited(self) -> tuple[str, int] | None:
        """``(name, exit code)`` of the first child that has exited, if any."""
        for child in self.children.values():
            code = child.process.poll()
            if code is not None:
                return child.name, code
        return None

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
        """SIGTERM every child, wait up to ``timeout`` s, then SIGKILL the stragglers' groups.

        A second stop signal while waiting (Ctrl-C again) kills at once.
        """
        alive = [c for c in self.children.values() if c.process.poll() is None]
        for child in alive:
            with contextlib.suppress(ProcessLookupError):
                child.process.terminate()
        signals_before = self.signals
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline and self.signals == signals_before:
            alive = [c for c in alive if c.process.poll() is None]
            time.sleep(0.05)
        for child in self.children.values():
            if child.process.poll() is None:
                console.print(f"{child.name} did not stop in time; killing it", style="yellow")
            # Also reaps what the child left in its group (a worker's pool processes).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        for child in self.children.values():
            child.pump.join(timeout=2)
