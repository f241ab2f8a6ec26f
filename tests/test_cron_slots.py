"""Each slot of an ``@every`` cron fires once, also when the beat ticks right at its due time.

Found by hand (``test_beat`` saw slots ``[1, 2, 2, 3, 4]`` once): ``cron_claim.lua`` rewrites a
fired entry with cjson, which keeps 14 significant digits, so ``created_at`` came back up to
0.05 ms off. The next fire was anchored on it, so the grid could move by 1 ms, and a tick less
than 1 ms after a due time then found the same slot due again 1 ms later. The beat now
anchors each next fire on the due time it just fired.
"""

from __future__ import annotations

import pytest
import redis

from beat import timers
from walrus_tasks import crons, keys
from walrus_tasks.models import CronSpec

EVERY_MS = 2000


pytestmark = pytest.mark.usefixtures("no_drain_messages")


def a_creation_time_cjson_moves() -> float:
    """A time whose whole milliseconds go up by one once cjson has written it (%.14g)."""
    base = 1796044720.97
    for i in range(10_000):
        now = base + i * 0.0000371
        if round(float(f"{now:.14g}") * 1000) == round(now * 1000) + 1:
            return now
    raise AssertionError("no such time found")


def due_times(r: redis.Redis, cron_id: str) -> float | None:
    score: float | None = r.zscore(keys.CRONS_DUE, cron_id)
    return score


def test_a_tick_at_the_due_time_fires_each_slot_once(r: redis.Redis) -> None:
    created = a_creation_time_cjson_moves()
    spec = CronSpec(schedule="@every 2s", agent="echo", message="tick")
    entry = crons.create(r, spec, ["echo"], now=created)
    due = round(created * 1000) + EVERY_MS
    assert due_times(r, entry.id) == due

    fired = []
    for slot in range(1, 4):
        # The beat's tick lands exactly on the due time (its sleep ends there).
        fired += timers.fire_crons(r, ["echo"], now=due / 1000, deadline=60)
        # ... and its next tick a few ms later finds nothing due.
        fired += timers.fire_crons(r, ["echo"], now=due / 1000 + 0.005, deadline=60)
        assert len(fired) == slot, f"slot {slot} fired {len(fired) - slot + 1} times"
        due += EVERY_MS
        assert due_times(r, entry.id) == due, "the next fire is one period on, on the grid"
    assert [f.due_ms for f in fired] == [due - 3 * EVERY_MS + k * EVERY_MS for k in range(3)]
    assert all(f.run_id for f in fired)
