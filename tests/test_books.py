"""The books (awgd.books) alone, without a ledger: what `take` shows and what it books, that
nothing is applied before `commit`, what `failed` leaves, which planned peers a sample judges,
and what an admin's `settle` does to a book. The incremental paths against the plain rules
are tests/test_incremental.py; the books with a real ledger, tests/test_bookkeeper.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from helpers.booking import reading

from awgd.books import Books
from awgd.entry import Entry
from awgd.peer_settings import NO_SETTINGS, Settings
from awgd.periods import period_containing
from awgd.plans import Judged, PlanState, lifetime, window_at
from awgd.quota import Plan, start

ZONE = ZoneInfo("UTC")
MONTHLY = "0 0 1 * *"
T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
A, B = "A" * 42 + "A=", "B" * 42 + "A="


class Bed:
    """Books and a clock; `book` does what the bookkeeper does, with the ledger's write
    standing in as `written` (True: it succeeded)."""

    def __init__(self) -> None:
        self.at = T0
        self.books = Books(period_containing(T0, MONTHLY, ZONE))
        self.ids = 0

    def take(self, counters: dict[str, tuple[int, int]]) -> Entry:
        self.at += timedelta(minutes=1)
        target = self.books.target(self.at, MONTHLY, ZONE)
        entry = self.books.take(reading(self.at, {"wg0": counters}), watched=frozenset(), target=target)
        if self.books.plans:
            self.books.judge(entry, self.at, ZONE, MONTHLY)
        return entry

    def book(self, counters: dict[str, tuple[int, int]], *, written: bool = True) -> Entry:
        entry = self.take(counters)
        if written:
            self.books.commit(entry)
        else:
            self.books.failed()
        return entry

    def total(self, key: str) -> int:
        return lifetime(self.books.peers[("wg0", key)])

    def plan(self, key: str, limit: int) -> None:
        book = self.books.peers[("wg0", key)]
        plan = Plan(limit, "month", date(2026, 11, 1))
        window = window_at(plan, self.at, ZONE, MONTHLY)
        judged = Judged.nothing()
        judged.settled[book.key] = replace(book.settings, plan=plan)
        judged.states[book.key] = PlanState(start(window, lifetime(book)), window)
        self.books.apply(judged)


def test_take_shows_at_once_and_books_only_at_commit() -> None:
    bed = Bed()
    bed.book({A: (0, 0)})  # the first sample is a baseline
    entry = bed.take({A: (100, 50)})
    book = bed.books.peers[("wg0", A)]
    assert book.line is not None and (book.line.rx_bytes, book.line.tx_bytes) == (100, 50)  # shown
    assert bed.total(A) == 0 and entry.moved  # nothing booked yet: the ledger has not written it
    bed.books.commit(entry)
    assert bed.total(A) == 150


def test_a_failed_write_books_nothing_and_the_next_sample_books_it_once() -> None:
    bed = Bed()
    bed.book({A: (0, 0)})
    bed.book({A: (100, 50)}, written=False)
    assert bed.total(A) == 0
    bed.book({A: (130, 70)})
    assert bed.total(A) == 200  # from the same checkpoint: nothing lost, nothing twice


def test_a_sample_judges_a_planned_peer_only_past_its_trigger() -> None:
    bed = Bed()
    bed.book({A: (0, 0), B: (0, 0)})
    bed.plan(A, 1000)
    book = bed.books.peers[("wg0", A)]
    assert book.trigger == 800  # the 80 % warning comes first
    quiet = bed.book({A: (300, 300), B: (5000, 5000)})  # B has no plan: never judged
    assert not quiet.judged
    warned = bed.book({A: (500, 400)})
    assert [event.type for event in warned.judged.events] == ["quota.warning"]
    assert book.trigger == 1000
    over = bed.book({A: (600, 500)})
    assert "quota.exceeded" in [event.type for event in over.judged.events]
    assert book.settings.blocked == ("quota",)


def test_settle_none_drops_a_book_no_sample_saw_and_keeps_a_booked_one() -> None:
    bed = Bed()
    bed.book({A: (0, 0)})
    bed.book({A: (10, 10)})
    bed.books.settle("wg0", B, Settings(label="added"), T0)  # added by an admin, not yet sampled
    assert ("wg0", B) in bed.books.peers
    bed.books.settle("wg0", B, None, T0)
    assert ("wg0", B) not in bed.books.peers and B not in bed.books.by_key
    bed.books.settle("wg0", A, Settings(label="Dave", blocked=("admin",)), T0)
    assert ("wg0", A) in bed.books.blocking
    bed.books.settle("wg0", A, None, T0)
    book = bed.books.peers[("wg0", A)]  # booked: its history stays
    assert book.settings is NO_SETTINGS and ("wg0", A) not in bed.books.blocking
    assert bed.total(A) == 20
