"""Coalescing a model's tokens into ``chunk`` events (``WALRUS_CHUNK_FLUSH_MS``).

A token that comes ``chunk_flush_ms`` or more after the last ``chunk`` written goes out at once,
so a slow model (or the first token of a burst) gets no added latency. Tokens that come sooner
are held, and written together when the window closes: by the next token after it, or by a
timer if the model pauses (on the process's timer thread, ``walrus_tasks.timers``), so held
text never waits longer than the window. Whatever is held
is written before any other event of the run (``flush``), so the order of events is kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from walrus_tasks.timers import TIMERS, Handle


class ChunkWriter:
    """Holds and writes one LLM call's text (``write`` appends one ``chunk`` event)."""

    def __init__(self, write: Callable[[str], object], window_ms: float) -> None:
        self.write, self.window = write, window_ms / 1000
        self.lock = threading.Lock()
        self.pending: list[str] = []
        self.flushed_at = 0.0
        self.timer: Handle | None = None
        self.error: BaseException | None = None

    def add(self, text: str) -> None:
        """Write ``text`` now, or hold it until the window since the last write closes."""
        with self.lock:
            self._raise()
            self.pending.append(text)
            wait = self.flushed_at + self.window - time.monotonic()
            if wait <= 0:
                self._write()
            elif self.timer is None:
                self.timer = TIMERS.call_later(wait, self._on_timer)

    def flush(self) -> None:
        """Write whatever is held (before another event, or at the end of the text)."""
        with self.lock:
            if self.timer is not None:
                TIMERS.cancel(self.timer)  # no wait: a running _on_timer waits for this lock
                self.timer = None
            self._raise()
            self._write()

    def take(self) -> str:
        """Stop the window and hand back whatever is held, for the caller to write.

        The caller writes it together with what follows (the last chunk and ``text_end`` in one
        round trip).
        """
        with self.lock:
            if self.timer is not None:
                TIMERS.cancel(self.timer)  # no wait: a running _on_timer waits for this lock
                self.timer = None
            self._raise()
            text = "".join(self.pending)
            self.pending.clear()
            return text

    def _on_timer(self) -> None:
        with self.lock:
            self.timer = None
            try:
                self._write()
            except BaseException as e:  # raised in the step's thread instead
                self.error = e

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _write(self) -> None:
        if self.pending:
            text = "".join(self.pending)
            self.pending.clear()
            self.write(text)
            self.flushed_at = time.monotonic()
