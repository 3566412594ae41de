"""A plan's windows: the stretch of time whose usage counts against its limit. Pure.

docs/API.md ("plan.set", its windows), with `reset` one of:

- "period": the server's billing period (`periods.schedule`, awgd.periods);
- "month": from 00:00 local time on the anchor's day of the month to the same day of the next
  month; a day a month lacks is that month's last day (anchor 31: 31 Jan, 28 or 29 Feb, 31 Mar);
- "week": from 00:00 on the anchor's weekday, seven local days;
- "day": each local calendar day;
- "none": one window from 00:00 on the anchor day, never renewed (no end).

A window starts at local midnight, or, in a zone whose clocks jump over midnight that day, at
the instant the day begins (awgd.periods.day_bounds). Windows that renew tile time: each ends
where the next begins, with no gap and no overlap, also before the anchor (the anchor only
fixes their phase). Instants are aware datetimes in UTC, as in awgd.periods.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from awgd.periods import day_bounds, local_day, period_containing

RESETS = ("period", "month", "week", "day", "none")


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # aware, UTC
    end: datetime | None  # None: never renewed ("none")

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant and (self.end is None or instant < self.end)


def anchor_day(year: int, month: int, anchor: int) -> date:
    """The month's day for an anchor day of the month, clamped to the month's length."""
    return date(year, month, min(anchor, calendar.monthrange(year, month)[1]))


def _month_after(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _month_before(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def window_containing(instant: datetime, reset: str, anchor: date, zone: ZoneInfo, schedule: str) -> Window:
    """The window of a plan (`reset`, `anchor`) that contains `instant`; for "none", its one
    window, which an instant before the anchor day is not in."""
    instant = instant.astimezone(UTC)
    if reset == "period":
        period = period_containing(instant, schedule, zone)
        return Window(period.start, period.end)
    if reset == "none":
        return Window(day_bounds(anchor, zone).start, None)
    today = local_day(instant, zone)
    if reset == "day":
        first, following = today, today + timedelta(days=1)
    elif reset == "week":
        first = today - timedelta(days=(today.weekday() - anchor.weekday()) % 7)
        following = first + timedelta(days=7)
    elif reset == "month":
        first = anchor_day(today.year, today.month, anchor.day)
        if today < first:
            first = anchor_day(*_month_before(today.year, today.month), anchor.day)
        following = anchor_day(*_month_after(first.year, first.month), anchor.day)
    else:
        raise ValueError(f"unknown reset {reset!r}")
    return Window(day_bounds(first, zone).start, day_bounds(following, zone).start)


def next_window(window: Window, reset: str, anchor: date, zone: ZoneInfo, schedule: str) -> Window | None:
    """The window after `window`; None when it never ends."""
    if window.end is None:
        return None
    return window_containing(window.end, reset, anchor, zone, schedule)
