"""``GET /v1/runs``: the runs of the ``runs`` index, newest first, filtered, a page at a time.

The index lives one key per bucket (``keys.INDEXES``); a page reads each bucket's next entries
and merges them. A cursor is ``<created_at ms>-<run id>`` of the last run a page looked at: the
next page starts just after it, so runs submitted meanwhile do not shift pages (they are newer
than any cursor). Runs created in the same millisecond are ordered by id, newest first.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import redis

from walrus_tasks import indexes, keys, tenancy
from walrus_tasks.errors import InvalidInput
from walrus_tasks.models import RunInfo, RunPage, RunStatus

CURSOR_RE = re.compile(r"^(\d+)-([0-9a-f]{32})$")
MAX_LIMIT = 200
"""The most runs one page holds."""
MAX_SCAN = 5_000
"""The most index entries one page reads; a sparse filter then returns a short page and a cursor,
so one request never walks the whole index."""
_BATCH = 100


def _after(r: redis.Redis, cursor: str | None, count: int) -> list[tuple[str, float]]:
    """Up to ``count`` index entries older than ``cursor`` (newest first), of every bucket."""
    pipe = r.pipeline(transaction=False)
    if cursor is None:
        for key in keys.every("runs"):
            pipe.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
        rows = [row for found in pipe.execute() for row in found]
    else:
        m = CURSOR_RE.fullmatch(cursor)
        if not m:
            raise InvalidInput(f"invalid cursor {cursor!r}")
        score, run_id = int(m[1]), m[2]
        # Of the runs of the cursor's millisecond, those of a lower id are still to come.
        for key in keys.every("runs"):
            pipe.zrangebyscore(key, score, score, withscores=True)
            pipe.zrevrangebyscore(key, f"({score}", "-inf", start=0, num=count, withscores=True)
        replies = pipe.execute()
        rows = [row for ties in replies[::2] for row in ties if row[0] < run_id]
        rows += [row for older in replies[1::2] for row in older]
    rows.sort(key=lambda row: (row[1], row[0]), reverse=True)
    return rows[:count]


def list_runs(
    r: redis.Redis,
    *,
    agent: str | None = None,
    sender: str | None = None,
    status: Collection[RunStatus] = (),
    limit: int = 50,
    cursor: str | None = None,
    tenant: str | None = None,
) -> RunPage:
    """One page of runs matching every filter given.

    ``status``: any of those; ``tenant``: of that tenant only; ``sender``: as the client names
    it in its tenant.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    wanted = {s.value for s in status}
    runs: list[RunInfo] = []
    scanned = 0
    while scanned < MAX_SCAN:
        batch = _after(r, cursor, _BATCH)
        if not batch:
            return RunPage(runs=runs, next_cursor=None)
        pipe = r.pipeline(transaction=False)
        for run_id, _ in batch:
            pipe.hgetall(keys.run(run_id))
        gone = []
        for (run_id, score), h in zip(batch, pipe.execute(), strict=True):
            scanned += 1
            cursor = f"{int(score)}-{run_id}"
            if not h:  # the record expired (or its conversation was deleted)
                gone.append(run_id)
                continue
            run_sender = h.get("sender", "")
            if tenant is not None and tenancy.tenant_of(run_sender) != tenant:
                continue
            if (agent and h.get("agent") != agent) or (
                sender and tenancy.bare(run_sender) != sender
            ):
                continue
            if wanted and h.get("status") not in wanted:
                continue
            runs.append(RunInfo.from_hash(h))
            if len(runs) == limit:
                break
        if gone:
            indexes.remove(r, "runs", gone)
        if len(runs) == limit:
            return RunPage(runs=runs, next_cursor=cursor)
    return RunPage(runs=runs, next_cursor=cursor)
