"""Plan windows (awgd.plan_windows), property-tested: anchors 29-31 over every month length
and leap years, DST days in zones with and without a skipped midnight, weeks across year ends;
windows start at local midnight and tile time."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awgd.periods import day_bounds, local_day
from awgd.plan_windows import Window, anchor_day, next_window, window_containing

# Moscow: no DST. Berlin: DST at 02:00/03:00. Santiago and Havana (and Beirut, Asuncion):
# clocks jump at midnight, so some days have no 00:00. Lord Howe: a 30-minute DST.
ZONES = [
    ZoneInfo(z)
    for z in (
        "Europe/Moscow",
        "Europe/Berlin",
        "America/Santiago",
        "America/Havana",
        "Asia/Beirut",
        "America/Asuncion",
        "Australia/Lord_Howe",
        "UTC",
    )
]
MONTHLY = "0 0 1 * *"

instants = st.integers(
    int(datetime(2023, 1, 1, tzinfo=UTC).timestamp()), int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
).map(lambda ts: datetime.fromtimestamp(ts, UTC))
anchors = st.dates(date(2020, 1, 1), date(2032, 12, 31))
renewing = st.sampled_from(["month", "week", "day", "period"])


def starts_a_local_day(instant: datetime, zone: ZoneInfo) -> bool:
    return day_bounds(local_day(instant, zone), zone).start == instant


@settings(max_examples=600, deadline=None)
@given(instants, st.sampled_from(ZONES), anchors, renewing)
def test_windows_contain_their_instant_start_at_midnight_and_tile(
    instant: datetime, zone: ZoneInfo, anchor: date, reset: str
) -> None:
    window = window_containing(instant, reset, anchor, zone, MONTHLY)
    assert window.end is not None and window.start <= instant < window.end
    assert starts_a_local_day(window.start, zone) and starts_a_local_day(window.end, zone)
    following = next_window(window, reset, anchor, zone, MONTHLY)
    assert following is not None and following.start == window.end  # no gap, no overlap
    assert window_containing(window.start, reset, anchor, zone, MONTHLY) == window
    before = window_containing(window.start - timedelta(seconds=1), reset, anchor, zone, MONTHLY)
    assert before.end == window.start


@settings(max_examples=600, deadline=None)
@given(instants, st.sampled_from(ZONES), st.integers(1, 31))
def test_month_windows_start_on_the_anchor_day_clamped_to_the_month(
    instant: datetime, zone: ZoneInfo, day: int
) -> None:
    assert anchor_day(2023, 2, day).day == min(day, 28) and anchor_day(2024, 2, day).day == min(day, 29)
    window = window_containing(instant, "month", date(2024, 1, day), zone, MONTHLY)
    assert window.end is not None
    first, last = local_day(window.start, zone), local_day(window.end, zone)
    assert first.day == min(day, calendar.monthrange(first.year, first.month)[1])
    assert last.day == min(day, calendar.monthrange(last.year, last.month)[1])
    assert (last.year * 12 + last.month) - (first.year * 12 + first.month) == 1  # one month long


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (31, ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31"]),
        (30, ["2023-01-30", "2023-02-28", "2023-03-30", "2023-04-30", "2023-05-30"]),
        (29, ["2023-01-29", "2023-02-28", "2023-03-29", "2023-04-29", "2023-05-29"]),
    ],
)
def test_anchors_29_to_31_across_short_months_and_leap_years(day: int, expected: list[str]) -> None:
    zone = ZoneInfo("Europe/Moscow")
    year = int(expected[0][:4])
    window: Window | None = window_containing(
        datetime(year, 1, day, 12, tzinfo=zone), "month", date(2020, 1, day), zone, MONTHLY
    )
    starts = []
    for _ in expected:
        assert window is not None
        starts.append(local_day(window.start, zone).isoformat())
        window = next_window(window, "month", date(2020, 1, day), zone, MONTHLY)
    assert starts == expected


def test_a_skipped_midnight_starts_the_window_when_the_day_begins() -> None:
    zone = ZoneInfo("America/Santiago")  # 2024-09-08: 00:00 -> 01:00
    window = window_containing(datetime(2024, 9, 8, 12, tzinfo=zone), "day", date(2024, 1, 1), zone, MONTHLY)
    assert window.start.astimezone(zone).replace(tzinfo=None) == datetime(2024, 9, 8, 1, 0)
    assert window.end is not None and window.end - window.start == timedelta(hours=23)


@given(st.integers(2020, 2031), st.sampled_from(ZONES), st.integers(0, 6))
def test_weeks_run_across_year_ends(year: int, zone: ZoneInfo, weekday: int) -> None:
    anchor = date(2024, 1, 1) + timedelta(days=weekday)
    instant = day_bounds(date(year, 12, 31), zone).start + timedelta(hours=12)
    window = window_containing(instant, "week", anchor, zone, MONTHLY)
    assert window.end is not None
    first, last = local_day(window.start, zone), local_day(window.end, zone)
    assert first.weekday() == anchor.weekday() and (last - first).days == 7


def test_none_is_one_window_from_the_anchor_day_that_never_ends() -> None:
    zone = ZoneInfo("Europe/Moscow")
    window = window_containing(datetime(2030, 5, 1, tzinfo=UTC), "none", date(2026, 11, 17), zone, MONTHLY)
    assert window.start == datetime(2026, 11, 17, tzinfo=zone).astimezone(UTC) and window.end is None
    assert datetime(2026, 11, 16, 23, tzinfo=zone) not in window
    assert next_window(window, "none", date(2026, 11, 17), zone, MONTHLY) is None
    with pytest.raises(ValueError, match="unknown reset"):
        window_containing(datetime(2030, 5, 1, tzinfo=UTC), "year", date(2026, 1, 1), zone, MONTHLY)
