"""How many task messages wait in each Celery queue, read from the broker that holds them.

With the default set-up the broker is the state Redis, and ``metrics.read_figures`` reads the
queue lists in the same pipeline as the rest of the figures. With ``WALRUS_BROKER_URL`` the
queues live elsewhere (another Redis, a Sentinel group, RabbitMQ): reading them from the state
Redis would show every queue empty whatever waits. This module asks the broker itself, through
kombu, with a passive declare per queue (which every transport answers with the queue's
message count) — one connection from the Celery app's pool, a few round trips per report.
"""

from __future__ import annotations

from dataclasses import dataclass

from kombu.exceptions import OperationalError

from walrus_tasks.settings import get_settings

BROKER_DOWN = (OperationalError, OSError)
"""What ``read`` raises when the broker does not answer (kombu wraps most as OperationalError)."""


@dataclass(frozen=True)
class Depths:
    """Messages waiting per queue, and those delivered but not acknowledged.

    ``unacked`` is None where the broker does not count them (AMQP); kombu's Redis transport
    keeps them in a hash.
    """

    queues: dict[str, int]
    unacked: int | None


def separate_broker() -> bool:
    """True when Celery's broker is not the state Redis (``WALRUS_BROKER_URL`` names another)."""
    settings = get_settings()
    return bool(settings.broker_url) and settings.broker_url != settings.redis_url


def read(queues: tuple[str, ...]) -> Depths:
    """The depth of each of ``queues`` on the broker; a queue never declared counts 0.

    Raises one of ``BROKER_DOWN`` when the broker does not answer.
    """
    from walrus_tasks.celery_app import app

    depths: dict[str, int] = {}
    unacked: int | None = None
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=0)  # a status report does not wait for a broker
        for queue in queues:
            # A failed passive declare closes the channel (AMQP): one channel per queue.
            channel = conn.channel()
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except conn.channel_errors:
                depths[queue] = 0  # not declared yet: nothing was ever sent to it
            finally:
                try:
                    channel.close()
                except conn.channel_errors + conn.connection_errors:
                    pass
        channel = conn.default_channel
        client = getattr(channel, "client", None)  # kombu's Redis channel: the broker's client
        if client is not None and hasattr(channel, "unacked_key"):
            unacked = int(client.hlen(channel.unacked_key))
    return Depths(depths, unacked)
