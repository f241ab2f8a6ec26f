"""The assistants this gateway process has seen Agent Protocol threads bound to.

A hint for the next request of the same thread, never trusted on its own: a thread deleted
and made again may have another assistant, or none yet. A join reads the history of the
assistant it knows in its first round trip (``thread_joins``), a create of a thread it does
not know sends the thread's binding ahead of its submit (``thread_records.record_along``);
each checks the hint against what Redis holds in that same round trip.
"""

from __future__ import annotations

MAX = 10_000
"""Threads kept in mind (forgotten all at once past it)."""

_bound: dict[tuple[str, str], str] = {}
"""The assistant of each thread seen bound, by ``(tenant or "", thread id)``."""


def remember(h: dict[str, str]) -> None:
    """Keep thread ``h``'s assistant in mind, if it has one (``h`` as the operations read it)."""
    if not h.get("agent"):
        return
    if len(_bound) >= MAX:
        _bound.clear()
    _bound[(h.get("tenant") or "", h["thread_id"])] = h["agent"]


def known(tenant: str | None, thread_id: str) -> str | None:
    """The assistant thread ``thread_id`` of ``tenant`` was last seen bound to, if any."""
    return _bound.get((tenant or "", thread_id))


def forget_all() -> None:
    """Forget every thread (tests)."""
    _bound.clear()
