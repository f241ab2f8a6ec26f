"""``GET /v1/runs``: the runs in the index ``keys.RUNS``, newest first, filtered, a page at a time.

A cursor is ``<created_at ms>-<run id>`` of the last run a page looked at: the next page starts
just after it, so runs submitted meanwhile do not shift pages (they are newer than any cursor).
Runs created in the same millisecond are ordered by id, as Redis orders equal scores.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import redis

from walrus_tasks import keys, tenancy
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
    """Up to ``count`` index entries older than ``cursor`` (newest first)."""
    if cursor is None:
        return r.zrevrangebyscore(keys.RUNS, "+inf", "-inf", start=0, num=count, withscores=True)  # type: ignore[return-value]
    m = CURSOR_RE.fullmatch(cursor)
    if not m:
        raise InvalidInput(f"invalid cursor {cursor!r}")
    score, run_id = int(m[1]), m[2]
    # Equal scores come in reverse id order: skip those at or above the cursor's id.
    ties: list[str] = r.zrangebyscore(keys.RUNS, score, score)  # type: ignore[assignment]
    skip = sum(1 for t in ties if t >= run_id)
    return r.zrevrangebyscore(keys.RUNS, score, "-inf", start=skip, num=count, withscores=True)  # type: ignore[return-value]


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
            r.zrem(keys.RUNS, *gone)
        if len(runs) == limit:
            return RunPage(runs=runs, next_cursor=cursor)
    return RunPage(runs=runs, next_cursor=cursor)
