"""The worker's Celery consumer: its task events published a batch at a time (issue 25).

Celery's consumer buffers a task's events (``task-received``, ``task-started``,
``task-succeeded``, ...) and publishes the buffer at the event loop's next turn. A task's events
come at different turns, so each went out as a ``PUBLISH`` of its own: about three a task, 30 %
of the worker parent's event loop time in the Agent Protocol bench's profile
(docs/benchmarks.md). This consumer publishes the buffer ``WALRUS_TASK_EVENTS_BATCH_MS`` (20)
after the first event in it instead, so the events of every task that ran meanwhile go out in
one ``PUBLISH``. Flower sees them that much
later and no fewer: the buffer still goes at once when it holds Celery's ``buffer_limit`` (24),
and what it holds goes out as the worker stops. ``python -m worker`` installs it as Celery's
``worker_consumer``; 0 leaves Celery's own timing.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from walrus_tasks.settings import get_settings

PATH = "worker.consumer:Consumer"
"""The ``worker_consumer`` setting that installs it."""


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, its buffered task events published a batch at a time."""

    _batch: Any = None
    """The timer entry that publishes the buffer (None: nothing is held)."""

    def on_send_event_buffered(self) -> None:
        """A task event was buffered: publish the buffer once the batch is up (not now)."""
        delay_ms = get_settings().task_events_batch_ms
        if not delay_ms or self.hub is None:
            super().on_send_event_buffered()
        elif self._batch is None or self._batch.canceled:  # a reconnect may cancel it
            self._batch = self.hub.call_later(delay_ms / 1000, self._flush_batch)

    def _flush_batch(self) -> None:
        self._batch = None
        self._flush_events()

    def shutdown(self) -> None:
        """What is buffered goes out as the worker stops.

        Warm or cold: Celery calls this once its steps have stopped, so the events of the tasks
        that ended meanwhile go too.
        """
        self._flush_events()
        super().shutdown()
