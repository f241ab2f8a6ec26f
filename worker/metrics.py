"""Worker metrics: step and tool durations in the process.

Run outcomes are counted in Redis as each run ends (``walrus_tasks.metrics``).

``walrus worker --metrics-port N`` calls ``serve`` before the pool forks: it points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory, so every pool process writes its samples
there, and serves ``/metrics`` from the main process by summing them (prometheus-client's
multiprocess mode). That mode is chosen when ``prometheus_client`` is first imported, so this
module imports it lazily, on the first sample, never at import time.

Without ``--metrics-port`` the samples stay in each process's memory, unread: cheap, and a
failure to record never fails a run or a tool call.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from walrus_tasks import runs
from walrus_tasks.lease import Fence

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

log = logging.getLogger("walrus.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client's multiprocess mode keeps each process's samples."""
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: an LLM step (one streamed call, its commit and its dispatch)."""
TOOL_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Seconds: one tool call."""
OTHER_TOOL = "other"
"""The ``tool`` label of a name that is no built-in tool: the model chooses names, and a label
value per hallucinated name would grow the series without bound."""


@dataclass(frozen=True)
class _Samples:
    step_seconds: Histogram
    tool_seconds: Histogram
    tool_calls: Counter


@functools.cache
def _samples() -> _Samples:
    from prometheus_client import Counter, Histogram

    return _Samples(
        Histogram(
            "walrus_step_duration_seconds", "LLM steps executed, by agent (claimed steps only).",
            ["agent"], buckets=STEP_BUCKETS,
        ),
        Histogram(
            "walrus_tool_duration_seconds", "Tool calls executed, by tool.",
            ["tool"], buckets=TOOL_BUCKETS,
        ),
        Counter(
            "walrus_tool_calls", "Tool calls executed, by tool and result (ok | error).",
            ["tool", "result"],
        ),
    )  # fmt: skip


def _tool_label(name: str) -> str:
    from worker.tools import TOOLS

    return name if name in TOOLS else OTHER_TOOL


_P = ParamSpec("_P")


def timed_step(
    fn: Callable[Concatenate[Fence, _P], runs.Begin],
) -> Callable[Concatenate[Fence, _P], runs.Begin]:
    """Decorate the step body: observe its duration when it claimed and executed the step."""

    @functools.wraps(fn)
    def wrapper(fence: Fence, /, *args: _P.args, **kwargs: _P.kwargs) -> runs.Begin:
        started = time.monotonic()
        state = fn(fence, *args, **kwargs)
        if state == "ok":
            seconds = time.monotonic() - started
            _safely(lambda: _samples().step_seconds.labels(fence.agent).observe(seconds))
        return state

    return wrapper


def tool_called(name: str, seconds: float, is_error: bool) -> None:
    """Observe one executed tool call."""

    def observe() -> None:
        s, tool = _samples(), _tool_label(name)
        s.tool_seconds.labels(tool).observe(seconds)
        s.tool_calls.labels(tool, "error" if is_error else "ok").inc()

    _safely(observe)


def _safely(record: Callable[[], Any]) -> None:
    # The run's own state is committed before any figure is recorded: a figure lost to a Redis
    # blip or a bad value is worth a log line, never a retried task or a failed run.
    try:
        record()
    except Exception as e:
        log.warning("metrics not recorded: %s: %s", type(e).__name__, e)


def serve(address: str) -> str:
    """Serve ``/metrics`` of every process of this worker at ``[HOST:]PORT`` (host 127.0.0.1).

    Call it in the worker's main process before the pool forks and before anything imports
    ``prometheus_client``. Returns the multiprocess directory, removed when this process exits.
    """
    host, _, port = address.rpartition(":")
    path = tempfile.mkdtemp(prefix="walrus-worker-metrics-")
    os.environ[MULTIPROC_ENV] = path
    atexit.register(_remove_dir, path, os.getpid())
    from prometheus_client import CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    if values.ValueClass is values.MutexValue:
        raise RuntimeError("prometheus_client was imported before the worker set its metrics dir")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    log.info("serving worker metrics on %s (samples in %s)", address, path)
    return path


def no_multiprocess() -> None:
    """Keep samples in process memory (no ``--metrics-port``): ignore an inherited directory."""
    os.environ.pop(MULTIPROC_ENV, None)


def _remove_dir(path: str, owner: int) -> None:
    if os.getpid() == owner:  # pool children inherit atexit hooks: only the server cleans up
        shutil.rmtree(path, ignore_errors=True)
