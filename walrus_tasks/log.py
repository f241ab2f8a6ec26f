"""Structured logs (structlog): every line carries ``agent``, ``sender``, ``run_id``, ``task_id``.

Our modules and the libraries under us (Celery, kombu, uvicorn) log through the standard
``logging`` module; structlog's :class:`~structlog.stdlib.ProcessorFormatter` renders every
record, so one pipeline adds the context bound with :func:`bound` (structlog contextvars) and
writes either JSON lines (``WALRUS_LOG_FORMAT=json``) or a line for a terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import AbstractContextManager
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars, merge_contextvars
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from walrus_tasks.settings import get_settings

FIELDS = ("agent", "sender", "run_id", "task_id")
"""The context fields every line carries when they are known, in this order on a terminal."""
CHATTY_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


def bound(**fields: Any) -> AbstractContextManager[None]:
    """Attach ``fields`` (None values skipped) to every log line emitted inside the block."""
    return bound_contextvars(**{k: v for k, v in fields.items() if v is not None})


def _timestamp(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    event["ts"] = round(record.created if record else time.time(), 3)
    return event


def _level_and_logger(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    record: logging.LogRecord | None = event.get("_record")
    if record is not None:
        event.setdefault("level", record.levelname.lower())
        event.setdefault("logger", record.name)
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


def _formatter(json: bool) -> ProcessorFormatter:
    pre_chain: list[Processor] = [
        merge_contextvars,
        structlog.stdlib.ExtraAdder(),
        _level_and_logger,
        _timestamp,
    ]
    render: Processor = structlog.processors.JSONRenderer(default=str) if json else _console
    return ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            ProcessorFormatter.remove_processors_meta,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.format_exc_info,
            render,
        ],
    )


def setup_logging() -> None:
    """Configure structlog and the root logger once per process from the settings."""
    settings = get_settings()
    structlog.configure(
        processors=[
            merge_contextvars,
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
    handler.setFormatter(_formatter(settings.log_format == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    if root.level > logging.DEBUG:
        # One line per task received/succeeded/scheduled buries everything else (the reaper
        # ticks every few seconds); Flower shows the tasks. WALRUS_LOG_LEVEL=DEBUG brings it back.
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
