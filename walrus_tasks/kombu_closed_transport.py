"""Workaround: a Celery worker survives a Redis restart while it holds unacked messages.

Upstream bug (Celery 5.7.0 with kombu 5.7.0; Celery 5.6.3 does not have it): on a lost broker
connection, ``Consumer.on_connection_error_after_connected`` first calls ``collect()`` on the
broken connection, which drops its kombu transport (``transport.client = None``), then
``close()`` on the same connection (added in 5.7.0 with the fix for a hang on a dead socket,
celery/celery#9705). The Redis channel's first close was cut short by the dead socket, so
the second close runs it again, and kombu's Redis channel restores its unacked messages
through a new connection pool built from ``transport.client``, which raises
``AttributeError: 'NoneType' object has no attribute 'hostname'``. That is not a connection
error, so it escapes ``ignore_errors``; Celery logs "Unrecoverable error" and stops the
worker. Late acks and rejects of messages delivered on that channel take the same path. The
same error in older releases: celery/kombu#582, celery/kombu#970.

The fix: a channel whose transport is gone raises a *connection* error when it needs a new
pool, which every caller of a channel already handles as "the broker went away". Its unacked
messages stay in kombu's ``unacked`` hash and come back after the visibility timeout
(docs/reliability.md, "unacked"). Delete this module when
``tests/test_redis_restart.py::test_without_the_workaround_the_worker_stops_and_exits_non_zero``
finds that a worker survives without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_connparams: Callable[..., Any] = kombu_redis.Channel._connparams


def _connparams_of_live_transport(self: Any, asynchronous: bool = False) -> Any:
    if getattr(self.connection, "client", None) is None:
        raise redis.ConnectionError("the broker connection of this channel was closed")
    return _connparams(self, asynchronous=asynchronous)


def install() -> None:
    """Patch kombu's Redis channel (idempotent)."""
    kombu_redis.Channel._connparams = _connparams_of_live_transport  # type: ignore[method-assign]
