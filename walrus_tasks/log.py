"""Structured logs (structlog): every line carries ``agent``, ``sender``, ``run_id``, ``task_id``.

Our modules and the libraries under us (Celery, kombu, uvicorn) log through the standard
``logging`` module; one formatter renders every record, adding the context bound with
:func:`bound` (one context variable) and the record's extras, and writes either JSON lines
(``WALRUS_LOG_FORMAT=json``) or a line for a terminal. A record of structlog's own loggers goes
through structlog's :class:`~structlog.stdlib.ProcessorFormatter`; a standard record (every
line of ours, one a run in a pool process and one a request in the gateway's access log) is
rendered in one pass to the same fields: structlog's chain for it (a copy of the record, a scan
of every context variable of the process, a JSON encoder built a line) cost ~48 us a line,
more than the rest of the line (docs/benchmarks.md, issue 25, twenty-third round).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, WrappedLogger

from walrus_tasks.settings import get_settings

FIELDS = ("agent", "sender", "run_id", "task_id")
"""The context fields every line carries when they are known, in this order on a terminal."""
CHATTY_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


_BOUND: ContextVar[Mapping[str, Any]] = ContextVar("walrus_log_bound", default=MappingProxyType({}))
"""The fields :func:`bound` attached, innermost last."""
_RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
"""A standard record's own attributes: any other is an ``extra=`` field, and goes in the line."""
_JSON = json.JSONEncoder(default=str).encode
"""What ``json.dumps(line, default=str)`` does, without building an encoder a line."""


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` (None values skipped) to every log line emitted inside the block."""
    added = {k: v for k, v in fields.items() if v is not None}
    reset = _BOUND.set({**_BOUND.get(), **added})
    try:
        yield
    finally:
        _BOUND.reset(reset)


def _merge_bound(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The fields bound with :func:`bound` (a line's own fields win)."""
    for key, value in _BOUND.get().items():
        event.setdefault(key, value)
    return event


def _timestamp(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    event["ts"] = round(record.created if record else time.time(), 3)
    return event


def _console(_: WrappedLogger, __: str, event: EventDict) -> str:
    """``HH:MM:SS LEVEL logger: message  [agent=… run_id=…]`` (and the traceback)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.pop("ts")))
    level, name = event.pop("level", "info").upper(), event.pop("logger", "")
    line = f"{stamp} {level:<7} {name}: {event.pop('msg', '')}"
    exc = event.pop("exception", None)
    context = " ".join(f"{k}={event[k]}" for k in FIELDS if k in event)
    line = f"{line}  [{context}]" if context else line
    return f"{line}\n{exc}" if exc else line


def _json_line(_: WrappedLogger, __: str, event: EventDict) -> str:
    return _JSON(event)


class _Formatter(ProcessorFormatter):
    """structlog's formatter for structlog's records, and a standard record in one pass.

    A standard record gets the fields structlog's chain gave it: the bound context, the
    extras, ``level``, ``logger``, ``ts``, ``msg``, then ``exception`` (a traceback) if any.
    """

    def __init__(self, as_json: bool) -> None:
        self._render = _json_line if as_json else _console
        super().__init__(
            processors=[
                ProcessorFormatter.remove_processors_meta,
                structlog.processors.EventRenamer("msg"),
                structlog.processors.format_exc_info,
                self._render,
            ],
        )

    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "_logger"):  # structlog's own (``wrap_for_formatter``)
            return super().format(record)
        line: dict[str, Any] = {"event": record.getMessage()}
        if record.stack_info:
            line["stack_info"] = record.stack_info
        for key, value in _BOUND.get().items():
            line.setdefault(key, value)
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS:
                line[key] = value
        line.setdefault("level", record.levelname.lower())
        line.setdefault("logger", record.name)
        line["ts"] = round(record.created, 3)
        line["msg"] = line.pop("event")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._render(None, "", line)


def setup_logging() -> None:
    """Configure structlog and the root logger once per process from the settings."""
    settings = get_settings()
    structlog.configure(
        processors=[
            _merge_bound,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            _timestamp,
            ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # No line renders where its call was made, nor its thread or process: the switches of the
    # logging HOWTO's "Optimization" skip working them out for every record (a stack walk and
    # three look-ups, ~4 us of a ~15 us line; docs/benchmarks.md, issue 25, eleventh round).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=settings.log_format == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    if root.level > logging.DEBUG:
        # One line per task received/succeeded/scheduled buries everything else (the reaper
        # ticks every few seconds); Flower shows the tasks. WALRUS_LOG_LEVEL=DEBUG brings it back.
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
