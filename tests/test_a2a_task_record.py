"""An A2A task's record and its events are one snapshot (``gateway.a2a_operations.task_record``).

Found by hand: a 10 000-stream A2A fan-out left a few ``SubscribeToTask`` streams open after
their runs had ended. The record was read, then its events: a run that ended between the two
reads (``finish.lua`` writes the terminal status and the ``end`` event in one step) showed a
running task with events through its ``end``, and the subscription went on after that ``end``,
where nothing ever comes. Here the run ends exactly there, against a real Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from gateway import a2a_operations as a2a_ops
from tests.conftest import redis_db_url
from walrus_tasks import keys
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.submit import new_run_id
from walrus_tasks.tenancy import Caller

AGENT, SENDER = "echo", "a2a-race"


class EndsBetweenReads(redis.Redis):
    """A client under which the run ends right after its hash is read on its own, as
    ``finish.lua`` ends it: the terminal status and the ``end`` event together."""

    run_id = ""

    def hgetall(self, name: Any) -> Any:
        record = super().hgetall(name)
        if name == keys.run(self.run_id):
            end = {"type": "end", "status": "succeeded", "run_id": self.run_id}
            with super().pipeline(transaction=True) as pipe:
                pipe.hset(name, "status", "succeeded")
                pipe.xadd(keys.run_part(self.run_id, "events"), {"data": json.dumps(end)})
                pipe.execute()
        return record


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[EndsBetweenReads]:
    client = EndsBetweenReads.from_url(redis_db_url(redis_server), decode_responses=True)
    yield client
    client.flushdb()
    client.close()


def test_a_run_ending_between_the_reads_is_seen_ended_with_its_end(r: EndsBetweenReads) -> None:
    run_id = r.run_id = new_run_id(AGENT, SENDER)
    r.hset(
        keys.run(run_id),
        mapping={"run_id": run_id, "agent": AGENT, "sender": SENDER, "status": "running"},
    )
    start = {"type": "start", "run_id": run_id, "agent": AGENT, "sender": SENDER}
    r.xadd(keys.run_part(run_id, "events"), {"data": json.dumps(start)})
    record = a2a_ops.task_record(r, run_id, AGENT, Caller())
    types = [event["type"] for _, event in record.events]
    # Either the run before its end (running, no `end` yet) or after it (ended, with it):
    # never running with its `end` already among its events.
    assert ("end" in types) == record.run.status.terminal, (record.run.status, types)
