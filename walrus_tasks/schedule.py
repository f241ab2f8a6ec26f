"""When a timer fires: 5-field cron or ``@every <n>s|m|h``, in a timezone, with quiet hours.

Pure functions over aware datetimes; :mod:`walrus_tasks.crons` stores the entries and the beat
scheduler fires them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from walrus_tasks.durations import duration_seconds
from walrus_tasks.errors import InvalidInput

EVERY_RE = re.compile(r"^@every\s+(.+)$")
MIN_INTERVAL = 1.0
"""Seconds: the shortest ``@every`` (beat ticks about every half second)."""
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``every`` seconds (anchored), or a cron expression."""

    text: str
    every: float | None = None

    def next_after(self, after_ms: int, anchor_ms: int, tz: ZoneInfo) -> int:
        """The first fire time (ms) strictly after ``after_ms``.

        Whole milliseconds throughout, so the time just fired can never come out again:
        ``@every`` slots are ``anchor_ms + k * every``; a cron expression is evaluated in ``tz``.
        """
        if self.every is not None:
            every_ms = round(self.every * 1000)
            return anchor_ms + max((after_ms - anchor_ms) // every_ms + 1, 1) * every_ms
        at = next(CronSim(self.text, datetime.fromtimestamp(after_ms / 1000, tz)))
        return max(round(at.timestamp() * 1000), after_ms + 1)


def parse(text: str) -> Schedule:
    """Parse a schedule; InvalidInput (422) with the reason for a bad one."""
    text = " ".join(text.split())
    if text.startswith("@every"):
        m = EVERY_RE.fullmatch(text)
        seconds = duration_seconds(m[1]) if m else None
        if seconds is None:
            raise InvalidInput(
                f"bad schedule {text!r}: use '@every <n>s', '@every <n>m' or '@every <n>h'"
            )
        if seconds < MIN_INTERVAL:
            raise InvalidInput(f"bad schedule {text!r}: the shortest interval is {MIN_INTERVAL:g}s")
        return Schedule(text, every=seconds)
    if len(text.split(" ")) != 5:
        raise InvalidInput(
            f"bad cron expression {text!r}: expected 5 fields (minute hour day month weekday) "
            "or '@every <n>s|m|h'"
        )
    try:
        CronSim(text, datetime.now(ZoneInfo("UTC")))
    except (CronSimError, ValueError) as e:
        raise InvalidInput(f"bad cron expression {text!r}: {e}") from e
    return Schedule(text)


def zone(name: str | None) -> ZoneInfo:
    """The timezone ``name`` (UTC when None); InvalidInput for an unknown one."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidInput(
            f"unknown timezone {name!r} (use an IANA name like 'Europe/Berlin')"
        ) from e


def hhmm(value: str, field: str) -> time:
    """``HH:MM`` (24 h) as a time; InvalidInput naming ``field`` otherwise."""
    m = HHMM_RE.fullmatch(value)
    if not m:
        raise InvalidInput(f"{field} must be HH:MM (24-hour), got {value!r}")
    return time(int(m[1]), int(m[2]))


def in_quiet_hours(at: datetime, start: str | None, end: str | None) -> bool:
    """True when local time ``at`` lies in ``[start, end)`` (a window may wrap past midnight)."""
    if not start or not end:
        return False
    s, e, t = hhmm(start, "quiet_start"), hhmm(end, "quiet_end"), at.time().replace(tzinfo=None)
    if s == e:
        return False
    return s <= t < e if s < e else (t >= s or t < e)
