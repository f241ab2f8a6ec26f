"""Queue depths come from the broker, also when ``WALRUS_BROKER_URL`` names another server.

Before, ``walrus status``, ``/v1/stats`` and ``/metrics`` read the queue lists from the state
Redis whatever the broker was, so a separate broker's backlog showed as empty queues. The
RabbitMQ case is in ``tests/test_rabbitmq.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import redis

from tests.conftest import redis_db_url
from tests.test_cli import walrus
from walrus_tasks.celery_app import CONTROL_QUEUE
from walrus_tasks.redis_server import RedisServer, free_port


def send_pings(env: dict[str, str], n: int) -> None:
    """Send ``n`` no-op control tasks with the product's Celery app, configured by ``env``."""
    code = (
        f"from walrus_tasks.celery_app import PING, app\nfor _ in range({n}): app.send_task(PING)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def status(env: dict[str, str]) -> dict[str, object]:
    result = walrus("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_status_counts_the_queues_of_a_separate_redis_broker(redis_server: RedisServer) -> None:
    state, broker = redis_db_url(redis_server), redis_db_url(redis_server)
    env = {"WALRUS_REDIS_URL": state, "WALRUS_BROKER_URL": broker}
    send_pings(env, 3)  # no worker consumes them: they wait in the broker's control queue

    data = status(env)
    assert data["broker_up"] is True
    assert data["queues"] == {"walrus.runs": 0, "walrus.tools": 0, CONTROL_QUEUE: 3}
    assert data["unacked"] == 0
    assert redis.Redis.from_url(state).llen(CONTROL_QUEUE) == 0, "the state Redis holds none"
    redis.Redis.from_url(broker).flushdb()


def test_status_says_when_the_separate_broker_does_not_answer(redis_server: RedisServer) -> None:
    env = {
        "WALRUS_REDIS_URL": redis_db_url(redis_server),
        "WALRUS_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    data = status(env)
    assert data["broker_up"] is False and data["queues"] == {} and data["unacked"] is None
    table = walrus("status", env=env)
    assert table.returncode == 0, table.stderr
    assert "did not answer" in table.stdout
