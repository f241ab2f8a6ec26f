"""The task contract over a real broker, on an in-process Celery worker (unit level).

``celery.contrib.testing.worker.start_worker`` (what pytest-celery's ``celery_session_worker``
runs) serves the real task bodies of ``worker.tasks`` from the test Redis in this process: each
``celery_app.send_*`` reaches the body of its name on its queue, its arguments bind, and the
body runs. A module fixture, not the session one: a worker left running would take the Celery
messages other in-process tests leave on db 0. The guarantees (order, recovery, leases,
sandboxes) stay proven on real worker processes (``tests/cluster.py``).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_failure, task_postrun

from walrus_tasks import celery_app
from walrus_tasks.lease import Fence

RAN: list[tuple[str, dict[str, Any], Any]] = []
"""``(task name, kwargs, return value)`` of every task the in-process worker ran."""
FAILED: list[tuple[str, BaseException]] = []
_ran = threading.Condition()


def _postrun(
    task: Any = None, args: Any = None, kwargs: Any = None, retval: Any = None, **_: Any
) -> None:
    """Record the arguments as the body bound them (the contract sends them by position)."""
    bound = inspect.signature(task.run).bind(*(args or ()), **(kwargs or {}))
    with _ran:
        RAN.append((task.name, dict(bound.arguments), retval))
        _ran.notify_all()


def _failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    FAILED.append((getattr(sender, "name", "?"), exception or RuntimeError("?")))


@pytest.fixture(scope="module")
def in_process_worker() -> Iterator[None]:
    """The real task bodies, served in this process from every walrus queue of the test Redis."""
    import worker.tasks  # noqa: F401  (registers the bodies on the app)

    app = celery_app.app
    with app.connection_for_write() as conn:  # what earlier in-process tests left on db 0
        for queue in celery_app.ALL_QUEUES:
            conn.default_channel.queue_purge(queue)
    task_postrun.connect(_postrun, weak=False)
    task_failure.connect(_failure, weak=False)
    try:
        with start_worker(
            app, pool="solo", perform_ping_check=False, queues=list(celery_app.ALL_QUEUES),
            shutdown_timeout=10,
        ):  # fmt: skip
            yield
    finally:
        task_postrun.disconnect(_postrun)
        task_failure.disconnect(_failure)


def ran(name: str, timeout: float = 20) -> tuple[dict[str, Any], Any]:
    """The kwargs and return value of the next run of task ``name`` (waits for it)."""
    with _ran:
        found = _ran.wait_for(lambda: any(n == name for n, _, _ in RAN), timeout)
        assert found, f"{name} never ran (ran: {[n for n, _, _ in RAN]}, failed: {FAILED})"
        i = next(i for i, (n, _, _) in enumerate(RAN) if n == name)
        _, kwargs, retval = RAN.pop(i)
        return kwargs, retval


def test_a_ping_makes_the_round_trip_through_broker_and_result_backend(
    in_process_worker: None,
) -> None:
    result = celery_app.app.send_task(celery_app.PING)
    assert result.get(timeout=20) == "pong"


def test_a_drain_of_an_idle_conversation_binds_and_starts_nothing(in_process_worker: None) -> None:
    celery_app.send_drain("echo", "task-bodies-nobody")
    kwargs, retval = ran(celery_app.DRAIN)
    assert kwargs == {"agent": "echo", "sender": "task-bodies-nobody"} and retval is None


@pytest.mark.parametrize(
    ("send", "args", "name"),
    [
        (celery_app.send_step, (Fence("echo", "tb", "no-such-run", "1"), 1), celery_app.STEP),
        (
            celery_app.send_tool_call,
            (Fence("echo", "tb", "no-such-run", "1"), 1, 0),
            celery_app.TOOL_CALL,
        ),
    ],
)
def test_a_step_or_tool_call_of_a_gone_run_binds_and_is_a_no_op(
    in_process_worker: None, send: Any, args: tuple[Any, ...], name: str
) -> None:
    """A redelivered message of a run that is gone does nothing (docs/design.md, recovery)."""
    FAILED.clear()
    send(*args)
    kwargs, retval = ran(name)
    assert kwargs["run_id"] == "no-such-run" and kwargs["token"] == "1"
    assert retval is None and not FAILED, FAILED
