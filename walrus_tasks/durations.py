"""Durations written as a number and a unit (``30s``, ``5m``, ``1h``, ``7d``, ``2w``).

One parser for the config's heartbeat ``interval``, the ``@every`` schedules and the usage
range's ``from``/``to``; each says which units it takes.
"""

from __future__ import annotations

import re

UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


def duration_seconds(text: str, units: str = "smh") -> float | None:
    """Seconds of ``text`` (``<n><unit>``, a space allowed between), None if it is not one.

    ``units`` are the unit letters the caller takes (``s``, ``m``, ``h``, ``d``, ``w``).
    """
    m = _DURATION_RE.fullmatch(text.strip())
    if m is None or m[2] not in units:
        return None
    return float(m[1]) * UNIT_SECONDS[m[2]]
