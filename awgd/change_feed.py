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
import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from awgd.books import Books, PeerBook
from awgd.buckets import Bucket, with_running
from awgd.entry import day_from_number
from awgd.plans import plan_json
from awgd_client import change_rows

# A cursor is "<instance>.<change>.<period start>.<open day or 0>"; an instance is this many
# random hex digits, new at every start of the daemon.
INSTANCE_HEX = 16
MAX_CURSOR_CHARS = 80
# Its parts as traffic.changes writes them: ASCII only (str.isdigit also takes "²" and
# Arabic-Indic digits, which int() then refuses), and numbers SQLite can bind (a 40-digit
# one is an OverflowError at the ledger).
_CURSOR_RE = re.compile(r"([0-9a-f]{1,32})\.([0-9]{1,18})\.([0-9]{1,18})\.([0-9]{1,8})", re.ASCII)


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
        found = _CURSOR_RE.fullmatch(text) if len(text) <= MAX_CURSOR_CHARS else None
        if found is None:
            raise BadCursor("cursor must be one that traffic.changes returned")
        return cls(found[1], int(found[2]), int(found[3]), int(found[4]))


def new_instance() -> str:
    return os.urandom(INSTANCE_HEX // 2).hex()


@dataclass(frozen=True, slots=True)
class Scope:
    """How to answer one cursor (see the module's docstring)."""

    since: int  # the peers stamped after this
    first_start: int | None  # None: the books alone; else closed periods starting here on
    first_day: int  # and closed days from this one on (YYYYMMDD)


def scope(cursor: Cursor | None, instance: str, books: Books) -> Scope:
    if cursor is None:
        return Scope(0, 0, 0)
    since = cursor.change if cursor.instance == instance and cursor.change <= books.changes else 0
    same = cursor.period_start == books.period_bounds[0] and cursor.open_day == (books.open_day or 0)
    opened = books.openings and books.openings[-1][0] > since
    # A sample books into the ledger's open period, which only the books' answer covers while
    # it is the current one (after a rollover, until the first booking, it is not).
    open_current = books.open_period is None or books.open_period == books.period_bounds
    if since and same and open_current and not opened and not books.day_reopened:
        return Scope(since, None, 0)
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
    return Scope(since, first_start, first_day)


def position(instance: str, books: Books) -> Cursor:
    """Where a reader stands now. Its period is the earliest a later booking may go to without
    opening another: the current one, or the ledger's open one before it (after a rollover,
    until the first booking; or a clock that went back)."""
    start = books.period_bounds[0]
    if books.open_period is not None:
        start = min(start, books.open_period[0])
    return Cursor(instance, books.changes, start, books.open_day or 0)


def changed(books: Books, since: int) -> list[PeerBook]:
    """The books stamped after `since`, in the order they were made (PeerBook.serial): the
    order pages are cut in, which a change between two pages cannot shift, and the order the
    books sit in memory."""
    return [book for book in books if book.stamp > since]


def page(found: list[PeerBook], after: int | None, limit: int) -> tuple[list[PeerBook], bool]:
    """Up to `limit` of `found` after the serial `after`; and whether more follow."""
    start = 0 if after is None else bisect_right(found, after, key=_serial)
    chosen = found[start : start + limit]
    return chosen, start + limit < len(found)


def _serial(book: PeerBook) -> int:
    return book.serial


@dataclass(slots=True)
class Page:
    """One page of traffic.changes, as the answer carries it (docs/API.md)."""

    period: list[int]  # [start, end]: the current period, every row's period figures'
    day: str | None  # the ledger's open local day ("YYYY-MM-DD"), every row's day figures'
    rows: list[str]  # a line of COPY text per peer (awgd_client.change_rows)
    periods: list[list[Any]]  # [interface, public key, start, end, rx, tx]: others that may have changed
    days: list[list[Any]]  # [interface, public key, "YYYY-MM-DD", rx, tx]


def page_rows(
    chosen: list[PeerBook], books: Books, closed: list[tuple[list[Bucket], list[Bucket]]] | None = None
) -> Page:
    """The chosen books' figures: every row's period is the current one, and its day the
    ledger's open day, each whole. `closed` None: the books alone (the normal case); else
    each book's closed rows from the ledger (closed_rows), merged with the running totals
    where they are open, and given as the page's other periods and days.

    Once per changed peer (every peer of a busy 50,000-peer server after each sample)."""
    start, end = books.period_bounds
    open_day = books.open_day
    today = None if open_day is None else day_from_number(open_day).isoformat()
    page = Page([start, end], today, [], [], [])
    rows = page.rows
    text, null = change_rows.text, change_rows.NULL
    period_usage = books.period_usage
    for index, book in enumerate(chosen):
        period_rx, period_tx = period_usage(book)
        day_rx, day_tx = (0, 0) if open_day is None else book.running_day
        if closed is not None:
            day_rx, day_tx = _closed(
                book, books, closed[index], current_start=start, open_day=open_day, day=(day_rx, day_tx), out=page
            )
        line, settings = book.line, book.settings
        label = settings.label or book.found_name
        plan = settings.plan
        rows.append(
            f"{book.interface}\t{book.public_key}\t{null if label is None else text(label)}\t"
            f"{'t' if book.present else 'f'}\t{line[3] or null if line is not None else null}\t"
            f"{book.first_seen_unix}\t{book.lifetime_rx}\t{book.lifetime_tx}\t{period_rx}\t{period_tx}\t{day_rx}\t{day_tx}\t"
            f"{','.join(settings.blocked)}\t{null if plan is None else change_rows.plan_field(plan_json(plan))}"
        )
    return page


def _closed(
    book: PeerBook,
    books: Books,
    buckets: tuple[list[Bucket], list[Bucket]],
    *,
    current_start: int,
    open_day: int | None,
    day: tuple[int, int],
    out: Page,
) -> tuple[int, int]:
    """The book's closed rows, added to the page (the current period's left out: the row has
    it whole); returns its open day's usage, with that day's closed row if it has one."""
    key = (book.interface, book.public_key)
    found = {bucket.start: bucket for bucket in buckets[0]}
    open_period = books.open_period
    if open_period is not None and open_period[0] != current_start:
        running = book.running_period
        if running != (0, 0):
            found[open_period[0]] = with_running(found.get(open_period[0]), *open_period, running)
    found.pop(current_start, None)
    out.periods += [[*key, b.start, b.end, b.rx, b.tx] for b in sorted(found.values(), key=attrgetter("start"))]
    day_rx, day_tx = day
    for bucket in sorted(buckets[1], key=attrgetter("start")):
        if bucket.start == open_day:
            merged = with_running(bucket, bucket.start, bucket.end, (day_rx, day_tx))
            day_rx, day_tx = merged.rx, merged.tx
        else:
            out.days.append([*key, day_from_number(bucket.start).isoformat(), bucket.rx, bucket.tx])
    return day_rx, day_tx


def closed_rows(
    chosen: list[PeerBook], periods: Mapping[int, list[Bucket]], days: Mapping[int, list[Bucket]]
) -> list[tuple[list[Bucket], list[Bucket]]]:
    """Each chosen book's closed rows from the ledger's answer (none for a book never booked)."""
    return [(periods.get(book.id, []), days.get(book.id, [])) if book.id is not None else ([], []) for book in chosen]
