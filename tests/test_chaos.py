"""The chaos suite, small (issue 9): workers ``kill -9``ed and Redis ``kill -9``ed under load;
every accepted message runs once, in order, answered, with one ``end`` and no leftovers.

``make chaos`` runs the default size (``python -m bench.chaos``); deselect this with
``-m "not chaos"``.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from bench.chaos import Params, run
from bench.chaos.__main__ import table

pytestmark = pytest.mark.chaos

SMALL = Params(
    conversations=20,
    messages=3,
    workers=3,
    duration=25,  # worker kills at 10 s and 20 s, Redis kill -9 at 7.5 s
    kill_every=10,
    redis_faults=("kill9",),
    dispatch_grace=10,  # a prefetched task of a killed worker is recovered within it
    settle_timeout=30,
    sample=60,  # every run's SSE
    deadline=100,  # under the per-test timeout: the harness stops everything itself
)


def test_no_accepted_message_is_lost_duplicated_reordered_or_unanswered_under_faults() -> None:
    result = run(SMALL)
    out = io.StringIO()
    Console(file=out, width=140).print(table(result))
    assert not result.problems(), f"{result.problems()}\n{out.getvalue()}\nlogs: {result.logs}"
    assert len(result.faults.worker_kills) == 2, out.getvalue()
    assert len(result.faults.redis_restarts) == 1, out.getvalue()
    assert result.load is not None and result.load.counts()["accepted"] >= 40, out.getvalue()
