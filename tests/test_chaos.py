"""The chaos suite, small (issue 9): workers ``kill -9``ed and Redis ``kill -9``ed under load;
every accepted message runs once, in order, answered, with one ``end`` and no leftovers.

``make chaos`` runs the default size (``python -m bench.chaos``); deselect this with
``-m "not chaos"``.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from bench.chaos import Params, run
from bench.chaos.__main__ import table
from bench.chaos.load import Message
from bench.chaos.verify import Checks, check_history

SMALL = Params(
    conversations=20,
    messages=3,
    workers=3,
    duration=22,  # worker kills at 10 s and 20 s, Redis kill -9 at 6.6 s
    kill_every=10,
    redis_faults=("kill9",),
    dispatch_grace=10,  # a prefetched task of a killed worker is recovered within it
    settle_timeout=30,
    sample=60,  # every run's SSE
    deadline=105,  # under the per-test timeout: the harness stops everything itself
)


@pytest.mark.chaos
def test_no_accepted_message_is_lost_duplicated_reordered_or_unanswered_under_faults() -> None:
    result = run(SMALL)
    out = io.StringIO()
    Console(file=out, width=140).print(table(result))
    assert not result.problems(), f"{result.problems()}\n{out.getvalue()}\nlogs: {result.logs}"
    assert len(result.faults.worker_kills) == 2, out.getvalue()
    assert len(result.faults.redis_restarts) == 1, out.getvalue()
    assert result.load is not None and result.load.counts()["accepted"] >= 40, out.getvalue()


def sent(outcomes: str) -> list[Message]:
    """Messages of conversation 0 in send order; ``a`` accepted (run ``r<i>``), ``?``
    ambiguous, ``x`` rejected."""
    names = {"a": "accepted", "?": "ambiguous", "x": "rejected"}
    return [
        Message(0, i, f"c0-m{i}", outcome=names[o], run_id=f"r{i}" if o == "a" else "")
        for i, o in enumerate(outcomes)
    ]


def turn(i: int, run: str = "", answered: bool = True) -> list[dict[str, Any]]:
    run = run or f"r{i}"
    user = {"role": "user", "content": f"c0-m{i}", "run_id": run}
    return [user, {"role": "assistant", "content": "w1", "run_id": run}] if answered else [user]


def checked(outcomes: str, history: list[dict[str, Any]]) -> Checks:
    out = Checks()
    check_history("c0", history, sent(outcomes), out, {})
    return out


def test_the_history_check_passes_good_histories_with_an_ambiguous_message_at_most_once() -> None:
    assert not checked("aaa", turn(0) + turn(1) + turn(2)).problems()
    assert not checked("a?a", turn(0) + turn(2)).problems()
    ok = checked("a?a", turn(0) + turn(1, run="x1") + turn(2))
    assert not ok.problems() and ok.ambiguous_in_history == 1


def test_the_history_check_counts_every_kind_of_broken_history() -> None:
    assert checked("aaa", turn(0) + turn(2)).missing == ["c0-m1 (run r1)"]
    assert checked("aa", turn(0) + turn(1) + turn(1)).duplicated == ["c0-m1 x2"]
    assert checked("aaa", turn(0) + turn(2) + turn(1)).out_of_order
    assert checked("aa", turn(0) + turn(1, answered=False)).unanswered == ["c0-m1 (run r1)"]
    assert checked("aa", turn(0, answered=False) + turn(1)).unanswered == ["c0-m0 (run r0)"]
    assert checked("aa", turn(0) + turn(1, run="other")).wrong_run
    assert checked("ax", turn(0) + turn(1)).wrong_run, "a rejected message must not run"
    twice = [*turn(0), {"role": "assistant", "content": "w1", "run_id": "r0"}]
    assert checked("a", twice).duplicate_answers == ["c0 run r0 x2"]
    assert all(
        checked(o, h).problems()
        for o, h in [("aaa", turn(0) + turn(2)), ("aaa", turn(0) + turn(2) + turn(1))]
    )
