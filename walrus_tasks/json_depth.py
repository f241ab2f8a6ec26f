"""How deep client JSON may nest: checked where it enters, tolerated where it is read back.

A value nested a few hundred levels deep is cheap to send and breaks whoever reads it later:
pydantic refuses to serialize past its own depth limit, and the ``json`` module's C decoder
raises ``RecursionError`` near a thousand. So every body, WebSocket frame and stored value is
bounded at :data:`MAX_DEPTH` levels where the gateway parses it (``gateway.json_guard``), and
the readers of data stored before that bound load it with :func:`loads_stored`, which cuts what
lies deeper instead of failing the whole answer.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
"""Most nesting levels of client JSON: ``{"a": [1]}`` is 2, a scalar 0."""
TRIMMED = f"(nested deeper than {MAX_DEPTH} levels: not shown)"
"""What :func:`loads_stored` shows in place of a value below :data:`MAX_DEPTH`."""


class TooDeep(ValueError):
    """JSON nested deeper than the limit."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests more than ``limit`` levels.

    Iterative (a deep value must not exhaust the stack it is checked on) and stops at the first
    container past the limit.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_checked(raw: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """``json.loads(raw)``, or :class:`TooDeep` if it nests past ``limit``.

    Raises ``ValueError`` for malformed JSON, as ``json.loads`` does.
    """
    try:
        value = json.loads(raw)
    except RecursionError:  # deeper than the C decoder goes: far past any limit
        raise TooDeep(limit) from None
    if too_deep(value, limit):
        raise TooDeep(limit)
    return value


def trim(value: Any, limit: int = MAX_DEPTH) -> Any:
    """``value`` with every container below ``limit`` levels replaced by :data:`TRIMMED`."""
    if not too_deep(value, limit):
        return value
    return _trim(value, limit)


def _trim(value: Any, left: int) -> Any:
    # Recursion is bounded by ``left`` (at most MAX_DEPTH frames).
    if not isinstance(value, dict | list):
        return value
    if left <= 0:
        return TRIMMED
    if isinstance(value, dict):
        return {k: _trim(v, left - 1) for k, v in value.items()}
    return [_trim(v, left - 1) for v in value]


def loads_stored(raw: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """A stored value, loaded for an answer: what nests past ``limit`` is cut, never a failure.

    For values stored before the gateway bounded their depth: one such value must not make a
    read or a search fail for every caller.
    """
    try:
        return trim(json.loads(raw), limit)
    except RecursionError:
        return TRIMMED
