"""traffic.changes: what changed since a cursor, for awgd-mirror (docs/FLEET.md).

The books stamp every peer whose mirrored figures change (Books.changes): a booking, its
presence or handshake, its settings or label, a reset, a new period. A cursor names a
position in that count, plus the period and day that were open there, and the daemon
instance that gave it. Answering "what changed since" is then:

- the same daemon, the same period and day: the peers stamped after it, with their current
  period and open day from the books alone (the normal case: one sample behind);
- the same daemon, another period or day since: those peers, with their closed period and
  day rows from the ledger too, from the cursor's period and day on (a mirror that fell
  behind across midnight or a rollover);
- another daemon (it restarted) or no cursor: every peer, with its rows from the cursor's
  period and day on (all of them without a cursor), since the count started again.

Every figure is absolute, so whatever a mirror receives twice it writes twice harmlessly;
the cursor only keeps it from asking for everything every time. Pure: the I/O (the
ledger's rows) is passed in.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from awgd.books import Books, PeerBook, day_from_number
from awgd.ledger import Bucket
from awgd.plans import plan_json

# A cursor is "<instance>.<change>.<period start>.<open day or 0>"; an instance is this many
# random hex digits, new at every start of the daemon.
INSTANCE_HEX = 16
MAX_CURSOR_CHARS = 80


class BadCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Cursor:
    instance: str
    change: int
    period_start: int  # Unix seconds: the earliest period bookings could go to then (position)
    open_day: int  # YYYYMMDD: the ledger's open day then; 0 for none

    def encode(self) -> str:
        return f"{self.instance}.{self.change}.{self.period_start}.{self.open_day}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        parts = text.split(".") if len(text) <= MAX_CURSOR_CHARS else []
        if len(parts) != 4 or not all(part.isdigit() for part in parts[1:]) or not parts[0].isalnum():
            raise BadCursor("cursor must be one that traffic.changes returned")
        return cls(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))


def new_instance() -> str:
    return os.urandom(INSTANCE_HEX // 2).hex()


@dataclass(frozen=True, slots=True)
class Plan:
    """How to answer one cursor (see the module's docstring)."""

    since: int  # the peers stamped after this
    first_start: int | None  # None: the books alone; else closed periods starting here on
    first_day: int  # and closed days from this one on (YYYYMMDD)


def plan(cursor: Cursor | None, instance: str, books: Books) -> Plan:
    if cursor is None:
        return Plan(0, 0, 0)
    since = cursor.change if cursor.instance == instance and cursor.change <= books.changes else 0
    same = cursor.period_start == books.period_bounds[0] and cursor.open_day == (books.open_day or 0)
    opened = books.openings and books.openings[-1][0] > since
    # A sample books into the ledger's open period, which only the books' answer covers while
    # it is the current one (after a rollover, until the first booking, it is not).
    open_current = books.open_period is None or books.open_period == books.period_bounds
    if since and same and open_current and not opened and not books.day_reopened:
        return Plan(since, None, 0)
    # From the cursor's period and day, and never after the ledger's open ones: their closed
    # rows (if any) are added to the running totals.
    first_start, first_day = cursor.period_start, cursor.open_day
    for change, period, day in books.openings:
        if change > since:  # booked there after the cursor: from there on
            first_start = min(first_start, period[0]) if period is not None else first_start
            first_day = min(first_day, day) if day is not None else first_day
    if books.open_period is not None:
        first_start = min(first_start, books.open_period[0])
    if books.open_day is not None:
        first_day = min(first_day, books.open_day)
    return Plan(since, first_start, first_day)


def position(instance: str, books: Books) -> Cursor:
    """Where a reader stands now. Its period is the earliest a later booking may go to without
    opening another: the current one, or the ledger's open one before it (after a rollover,
    until the first booking; or a clock that went back)."""
    start = books.period_bounds[0]
    if books.open_period is not None:
        start = min(start, books.open_period[0])
    return Cursor(instance, books.changes, start, books.open_day or 0)


def changed(books: Books, since: int) -> list[PeerBook]:
    """The books stamped after `since`, in (interface, public key) order: the order pages
    are cut in, which a change between two pages cannot shift."""
    found = [book for book in books if book.stamp > since]
    found.sort(key=_key)
    return found


def page(found: list[PeerBook], after: tuple[str, str] | None, limit: int) -> tuple[list[PeerBook], bool]:
    """Up to `limit` of `found` after the key `after`; and whether more follow."""
    start = 0 if after is None else bisect_right(found, after, key=_key)
    chosen = found[start : start + limit]
    return chosen, start + limit < len(found)


def _key(book: PeerBook) -> tuple[str, str]:
    return (book.interface, book.public_key)


def peer_change(
    book: PeerBook,
    books: Books,
    closed_periods: list[Bucket] | None,
    closed_days: list[Bucket] | None,
) -> dict[str, Any]:
    """One peer's figures as traffic.changes gives them: instants in Unix seconds, days as
    ISO dates, byte counts as [rx, tx]. `period` is the current period and `day` the ledger's
    open day (null without traffic), each whole; `periods` and `days` the others that may
    have changed. `closed_*` None: the current period and the open day alone (the books'
    case); else the ledger's closed rows, merged with the running totals where they are open."""
    start, end = books.period_bounds
    period_rx, period_tx = books.period_usage(book)
    periods: dict[int, list[int]] = {}
    days: dict[int, list[int]] = {}
    if closed_periods is not None:
        for bucket in closed_periods:
            periods[bucket.start] = [bucket.start, bucket.end, bucket.rx, bucket.tx]
        open_period = books.open_period
        if open_period is not None and open_period[0] != start:
            running_rx, running_tx = book.running_period
            if running_rx or running_tx:
                row = periods.setdefault(open_period[0], [open_period[0], open_period[1], 0, 0])
                row[2] += running_rx
                row[3] += running_tx
    periods.pop(start, None)  # the books have the current period whole: `period`
    if closed_days is not None:
        for bucket in closed_days:
            days[bucket.start] = [bucket.start, bucket.rx, bucket.tx]
    open_day = books.open_day
    today: list[Any] | None = None
    if open_day is not None:
        running_rx, running_tx = book.running_day
        closed = days.pop(open_day, None)
        if closed is not None:
            running_rx, running_tx = running_rx + closed[1], running_tx + closed[2]
        if running_rx or running_tx:
            today = [day_from_number(open_day).isoformat(), running_rx, running_tx]
    line = book.line
    settings = book.settings
    return {
        "interface": book.interface,
        "public_key": book.public_key,
        "label": settings.label or book.found_name,
        "present": book.present,
        "latest_handshake": line.latest_handshake or None if line is not None else None,
        "first_seen": int(book.first_seen.timestamp()),
        "lifetime": [book.lifetime_rx, book.lifetime_tx],
        "period": [start, end, period_rx, period_tx],
        "day": today,
        "blocked": list(settings.blocked),
        "plan": None if settings.plan is None else plan_json(settings.plan),
        "periods": [periods[key] for key in sorted(periods)],
        "days": [[day_from_number(day).isoformat(), rx, tx] for day, rx, tx in (days[key] for key in sorted(days))],
    }


def closed_rows(
    chosen: list[PeerBook], periods: Mapping[int, list[Bucket]], days: Mapping[int, list[Bucket]]
) -> list[tuple[list[Bucket], list[Bucket]]]:
    """Each chosen book's closed rows from the ledger's answer (none for a book never booked)."""
    return [(periods.get(book.id, []), days.get(book.id, [])) if book.id is not None else ([], []) for book in chosen]
