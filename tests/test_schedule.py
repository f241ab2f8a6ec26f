"""Schedules (pure functions): when a timer fires, and when it keeps quiet."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from walrus_tasks import schedule
from walrus_tasks.errors import InvalidInput

BERLIN = ZoneInfo("Europe/Berlin")


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def test_every_is_phased_from_its_anchor_and_strictly_after() -> None:
    anchor = datetime(2026, 1, 1, 12, 0, 0, tzinfo=BERLIN)
    every = schedule.parse("@every 30s")
    assert every.next_after(ms(anchor), ms(anchor), BERLIN) == ms(anchor.replace(second=30))
    # The slot just fired never comes out again, even a millisecond either side of it.
    slot = ms(anchor.replace(second=30))
    assert every.next_after(slot, ms(anchor), BERLIN) == slot + 30_000
    assert every.next_after(slot - 1, ms(anchor), BERLIN) == slot
    late = anchor.replace(minute=7, second=31)  # after downtime: the next slot, no backlog
    assert every.next_after(ms(late), ms(anchor), BERLIN) == ms(anchor.replace(minute=8))
    assert schedule.parse("@every 2h").every == 7200


def test_cron_is_evaluated_in_its_timezone_across_dst() -> None:
    weekdays_at_9 = schedule.parse("0 9 * * 1-5")
    friday = datetime(2026, 3, 27, 10, 0, tzinfo=BERLIN)  # DST starts Sunday 29 March
    monday = datetime(2026, 3, 30, 9, 0, tzinfo=BERLIN)  # UTC+2 by then
    assert weekdays_at_9.next_after(ms(friday), 0, BERLIN) == ms(monday)
    assert weekdays_at_9.next_after(ms(monday), 0, BERLIN) == ms(monday.replace(day=31))
    # Friday 10:00 to Monday 09:00 is 71 hours on the wall clock, 70 of them real (DST).
    assert ms(monday) - ms(friday) == 70 * 3600 * 1000


@pytest.mark.parametrize(
    ("at", "start", "end", "quiet"),
    [
        ("23:30", "22:00", "07:00", True),
        ("06:59", "22:00", "07:00", True),
        ("07:00", "22:00", "07:00", False),
        ("12:00", "22:00", "07:00", False),
        ("12:30", "12:00", "13:00", True),
        ("13:00", "12:00", "13:00", False),
        ("12:30", None, None, False),
    ],
)
def test_quiet_hours_may_wrap_past_midnight(
    at: str, start: str | None, end: str | None, quiet: bool
) -> None:
    h, m = map(int, at.split(":"))
    when = datetime(2026, 1, 1, h, m, tzinfo=BERLIN)
    assert schedule.in_quiet_hours(when, start, end) is quiet


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("* * * *", "expected 5 fields"),
        ("0 24 * * *", "bad cron expression"),
        ("@every 500ms", "@every"),
        ("@every 0.5s", "shortest interval"),
        ("@daily", "expected 5 fields"),
    ],
)
def test_bad_schedules_say_why(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        schedule.parse(text)
