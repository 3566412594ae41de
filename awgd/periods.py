"""Billing periods and local days: which [start, end) contains an instant. Pure.

A period runs between two consecutive fire times of `periods.schedule` (a cron expression,
five fields, or six with seconds last) read as wall-clock times in `periods.timezone`.

croniter is only asked for naive wall-clock times, and the mapping to instants is done
here with zoneinfo, because croniter's own DST handling differs between 1.3.5 (Debian 12)
and current releases. The mapping, for a wall time that:
- exists once: that instant;
- exists twice (clocks set back): the first occurrence, so a fire happens once;
- does not exist (clocks set forward): the instant the clocks jumped, so a month that
  "starts at 00:00" in a zone whose midnight is skipped starts when the day does.
The mapping never decreases, so consecutive fire times give well-ordered periods; fire
times that map to the same instant collapse into one.

Every instant here is an aware datetime in UTC. Aware datetimes that share a tzinfo
compare by wall clock and ignore `fold` (PEP 495), which orders the two passes of a
repeated hour wrongly; the configured zone is applied only when a time is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

# Offsets change by at most 2 h at a DST transition (Antarctica/Troll); starting the slow
# path's scan this far back is always before the period that contains the instant.
_DST_MARGIN = timedelta(hours=3)
# The longest DST gap in the tz database is 2 h; the binary search works in seconds.
_MAX_GAP_SECONDS = 3 * 3600


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # aware, UTC
    end: datetime

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


def validate_schedule(expression: str) -> None:
    """Raise ValueError naming the fault when croniter cannot use `expression`."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"expected 5 or 6 fields (seconds last), got {len(fields)}")
    if not croniter.is_valid(expression):
        raise ValueError("not a valid cron expression")
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except Exception as exc:  # croniter raises several types, CroniterBadDateError among them
        raise ValueError(f"never fires ({exc.__class__.__name__})") from None


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Map a naive wall-clock time in `zone` to an instant in UTC (rules in the module doc)."""
    first = wall.replace(tzinfo=zone, fold=0)
    utc = first.astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return utc
    # A skipped wall time: find the first second whose local time is past it.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())  # before the jump
    high = int(utc.timestamp())  # after the jump
    if high - low > _MAX_GAP_SECONDS:  # pragma: no cover - would mean a broken tz database
        return utc
    while low + 1 < high:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def period_containing(instant: datetime, schedule: str, zone: ZoneInfo) -> Period:
    """The [start, end) between consecutive fire times that contains `instant` (aware)."""
    instant = instant.astimezone(UTC)
    wall = instant.astimezone(zone).replace(tzinfo=None)
    end_wall = croniter(schedule, wall).get_next(datetime)
    start_wall = croniter(schedule, end_wall).get_prev(datetime)
    start, end = wall_to_instant(start_wall, zone), wall_to_instant(end_wall, zone)
    if start <= instant < end:
        return Period(start, end)
    return _scan(instant, schedule, zone)


def _scan(instant: datetime, schedule: str, zone: ZoneInfo) -> Period:
    """Slow path near a DST transition: walk the fire times from safely before `instant` (UTC)."""
    wall = (instant.astimezone(zone) - _DST_MARGIN).replace(tzinfo=None)
    walker = croniter(schedule, wall)
    start_wall = walker.get_prev(datetime)
    start = wall_to_instant(start_wall, zone)
    walker = croniter(schedule, start_wall)
    while True:
        end = wall_to_instant(walker.get_next(datetime), zone)
        if end > instant:
            if end > start:
                return Period(start, end)
        elif end > start:
            start = end


def next_period(period: Period, schedule: str, zone: ZoneInfo) -> Period:
    return period_containing(period.end, schedule, zone)


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def day_bounds(day: date, zone: ZoneInfo) -> Period:
    """[start, end) of a local calendar day; 23 or 25 hours long on DST days."""
    start = wall_to_instant(datetime(day.year, day.month, day.day), zone)
    following = day + timedelta(days=1)
    return Period(start, wall_to_instant(datetime(following.year, following.month, following.day), zone))


def next_fire(instant: datetime, schedule: str, zone: ZoneInfo) -> datetime:
    """The first fire time of `schedule` strictly after `instant` (UTC)."""
    return period_containing(instant, schedule, zone).end


# Every zone's offsets and changes fall on quarter hours, so a local hour ends at one; its
# end is looked for at most this far on (an hour that a 2 h change repeats lasts 3 h).
_QUARTER = timedelta(minutes=15)
_LONGEST_HOUR = timedelta(hours=3)


def hour_start(instant: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the local hour containing `instant` began: its wall clock's hour,
    in the pass of it `instant` is in. An hour a clock change repeats is two hours (one per
    pass); an hour it skips has no instant and so no start."""
    local = instant.astimezone(zone)
    start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    if start > instant:  # the other pass of a repeated wall time: the hour began in the first
        start = local.replace(minute=0, second=0, microsecond=0, fold=1 - local.fold).astimezone(UTC)
    return start


def hour_bounds(start: datetime, zone: ZoneInfo) -> Period:
    """[start, end) of the local hour that begins at `start` (from hour_start)."""
    step = start + timedelta(hours=1)
    following = hour_start(step, zone)
    if following == step:  # every hour but those at a clock change
        return Period(start, step)
    step = start + _QUARTER
    while step - start <= _LONGEST_HOUR:
        following = hour_start(step, zone)
        if following > start:
            return Period(start, following)
        step += _QUARTER
    return Period(start, start + timedelta(hours=1))  # pragma: no cover - no such zone
