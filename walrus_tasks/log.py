"""Structured logs: every line carries ``agent``, ``sender``, ``run_id``, ``task_id`` when known."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from walrus_tasks.settings import get_settings

FIELDS = ("agent", "sender", "run_id", "task_id")
CHATTY_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "walrus_log", default=None
)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` to every log line emitted inside the block."""
    token = _context.set(
        {**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    )
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for k, v in (_context.get() or {}).items():
            if not hasattr(record, k):
                setattr(record, k, v)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its context fields."""
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k in FIELDS:
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines with the context fields appended as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` for a terminal."""
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if hasattr(record, k))
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line}  [{ctx}]" if ctx else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging() -> None:
    """Configure the root logger once per process from the settings."""
    settings = get_settings()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    if root.level > logging.DEBUG:
        # One line per task received/succeeded/scheduled buries everything else (the reaper
        # ticks every few seconds); Flower shows the tasks. WALRUS_LOG_LEVEL=DEBUG brings it back.
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
