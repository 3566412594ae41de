"""Billing periods and local days, pinned to exact instants, DST included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awgd.periods import (
    Period,
    day_bounds,
    local_day,
    next_period,
    period_containing,
    validate_schedule,
    wall_to_instant,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CASES = [
    # zone, instant (UTC), schedule, expected start (UTC), expected end (UTC)
    # Monthly in a zone with an offset: 00:00 on the 1st is 21:00 UTC the day before.
    ("Europe/Moscow", "2026-11-30 20:59:59", "0 0 1 * *", "2026-10-31 21:00", "2026-11-30 21:00"),
    ("Europe/Moscow", "2026-11-30 21:00:00", "0 0 1 * *", "2026-11-30 21:00", "2026-12-31 21:00"),
    # Other schedules: the 15th, and weekly on Mondays.
    ("Europe/Moscow", "2026-11-15 12:00", "0 0 15 * *", "2026-11-14 21:00", "2026-12-14 21:00"),
    ("Europe/Moscow", "2026-11-15 12:00", "0 0 * * 1", "2026-11-08 21:00", "2026-11-15 21:00"),
    # America/Santiago springs forward at midnight (6 Sep 2026): 00:00 never happens, the day
    # starts at 01:00 -03, i.e. 04:00 UTC; the day before ends there.
    ("America/Santiago", "2026-09-06 03:59:59", "0 0 * * *", "2026-09-05 04:00", "2026-09-06 04:00"),
    ("America/Santiago", "2026-09-06 04:00:00", "0 0 * * *", "2026-09-06 04:00", "2026-09-07 03:00"),
    ("America/Santiago", "2026-09-06 12:00", "0 0 * * 0", "2026-09-06 04:00", "2026-09-13 03:00"),
    # ... and falls back at midnight (5 Apr 2026): 23:00-24:00 on the 4th happens twice, the
    # 4th lasts 25 hours and both passes belong to it.
    ("America/Santiago", "2026-04-05 02:30", "0 0 * * *", "2026-04-04 03:00", "2026-04-05 04:00"),
    ("America/Santiago", "2026-04-05 03:30", "0 0 * * *", "2026-04-04 03:00", "2026-04-05 04:00"),
    # America/Havana falls back 01:00 -> 00:00 (1 Nov 2026): midnight happens twice; the day
    # starts at the first one, and a 00:30 schedule fires once, at the first 00:30.
    ("America/Havana", "2026-11-01 04:30", "0 0 * * *", "2026-11-01 04:00", "2026-11-02 05:00"),
    ("America/Havana", "2026-11-01 05:30", "0 0 * * *", "2026-11-01 04:00", "2026-11-02 05:00"),
    ("America/Havana", "2026-11-01 05:30", "30 0 * * *", "2026-11-01 04:30", "2026-11-02 05:30"),
    ("America/Havana", "2026-11-01 04:50", "30 0 * * *", "2026-11-01 04:30", "2026-11-02 05:30"),
    # ... and springs forward 00:00 -> 01:00 (8 Mar 2026).
    ("America/Havana", "2026-03-08 05:30", "0 0 * * *", "2026-03-08 05:00", "2026-03-09 04:00"),
    ("America/Havana", "2026-03-08 05:30", "30 0 * * *", "2026-03-08 05:00", "2026-03-09 04:30"),
    # A 02:30 schedule in Berlin: skipped in March (fires at 03:00), once in October.
    ("Europe/Berlin", "2026-03-29 01:10", "30 2 * * *", "2026-03-29 01:00", "2026-03-30 00:30"),
    ("Europe/Berlin", "2026-10-25 00:30", "30 2 * * *", "2026-10-25 00:30", "2026-10-26 01:30"),
    ("Europe/Berlin", "2026-10-25 01:10", "30 2 * * *", "2026-10-25 00:30", "2026-10-26 01:30"),
    # Six fields: seconds last.
    ("Europe/Moscow", "2026-11-30 20:59:52", "* * * * * */5", "2026-11-30 20:59:50", "2026-11-30 20:59:55"),
    ("UTC", "2026-11-30 23:59:59", "*/1 * * * *", "2026-11-30 23:59", "2026-12-01 00:00"),
]


@pytest.mark.parametrize(("zone", "instant", "schedule", "start", "end"), CASES)
def test_period_containing(zone: str, instant: str, schedule: str, start: str, end: str) -> None:
    period = period_containing(utc(instant), schedule, ZoneInfo(zone))
    assert (period.start, period.end) == (utc(start), utc(end))
    assert period.start.tzinfo is UTC  # zoned datetimes would compare by wall clock
    assert utc(instant) in period


@pytest.mark.parametrize(
    ("zone", "day", "start", "end", "hours"),
    [
        ("America/Santiago", date(2026, 9, 6), "2026-09-06 04:00", "2026-09-07 03:00", 23),
        ("America/Santiago", date(2026, 4, 4), "2026-04-04 03:00", "2026-04-05 04:00", 25),
        ("America/Havana", date(2026, 11, 1), "2026-11-01 04:00", "2026-11-02 05:00", 25),
        ("America/Havana", date(2026, 3, 8), "2026-03-08 05:00", "2026-03-09 04:00", 23),
        ("Europe/Moscow", date(2026, 12, 1), "2026-11-30 21:00", "2026-12-01 21:00", 24),
    ],
)
def test_day_bounds(zone: str, day: date, start: str, end: str, hours: int) -> None:
    bounds = day_bounds(day, ZoneInfo(zone))
    assert (bounds.start, bounds.end) == (utc(start), utc(end))
    assert bounds.end - bounds.start == timedelta(hours=hours)


def test_local_day_of_both_passes_of_a_repeated_hour() -> None:
    zone = ZoneInfo("America/Santiago")
    assert local_day(utc("2026-04-05 02:30"), zone) == date(2026, 4, 4)  # 23:30 -03
    assert local_day(utc("2026-04-05 03:30"), zone) == date(2026, 4, 4)  # 23:30 -04
    assert local_day(utc("2026-04-05 04:00"), zone) == date(2026, 4, 5)


def test_skipped_wall_time_maps_to_the_jump() -> None:
    zone = ZoneInfo("Europe/Berlin")
    assert wall_to_instant(datetime(2026, 3, 29, 2, 30), zone) == utc("2026-03-29 01:00")
    assert wall_to_instant(datetime(2026, 3, 29, 2, 0), zone) == utc("2026-03-29 01:00")
    assert wall_to_instant(datetime(2026, 3, 29, 3, 0), zone) == utc("2026-03-29 01:00")
    assert wall_to_instant(datetime(2026, 10, 25, 2, 30), zone) == utc("2026-10-25 00:30")  # first pass


def test_next_period_is_contiguous() -> None:
    zone = ZoneInfo("Europe/Moscow")
    november = period_containing(utc("2026-11-10 00:00"), "0 0 1 * *", zone)
    december = next_period(november, "0 0 1 * *", zone)
    assert december.start == november.end
    assert december.end == utc("2026-12-31 21:00")


@pytest.mark.parametrize("bad", ["", "* * * *", "61 * * * *", "* * * * * * * *", "0 0 31 2 *", "every minute"])
def test_bad_schedules_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        validate_schedule(bad)


@pytest.mark.parametrize("good", ["* * * * *", "0 0 1 * *", "* * * * * */5", "0 0 15 * *", "0 0 * * 1"])
def test_good_schedules_are_accepted(good: str) -> None:
    validate_schedule(good)


ZONES = ["UTC", "Europe/Moscow", "America/Santiago", "America/Havana", "Europe/Berlin", "Australia/Lord_Howe"]
SCHEDULES = ["0 0 1 * *", "0 0 * * *", "30 0 * * *", "30 2 * * *", "0 0 15 * *", "0 0 * * 1", "*/7 * * * *"]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(int(utc("2024-01-01 00:00").timestamp()), int(utc("2030-01-01 00:00").timestamp())),
    st.sampled_from(ZONES),
    st.sampled_from(SCHEDULES),
)
def test_periods_tile_time(ts: int, zone_name: str, schedule: str) -> None:
    """Invariant: every instant is in exactly one period, and periods are contiguous."""
    zone = ZoneInfo(zone_name)
    instant = datetime.fromtimestamp(ts, UTC)
    period = period_containing(instant, schedule, zone)
    assert period.start <= instant < period.end
    after = period_containing(period.end, schedule, zone)
    assert after.start == period.end
    before = period_containing(period.start - timedelta(seconds=1), schedule, zone)
    assert before.end == period.start
    day = day_bounds(local_day(instant, zone), zone)
    assert day.start <= instant < day.end
    assert isinstance(period, Period)
