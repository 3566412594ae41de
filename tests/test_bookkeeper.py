"""The bookkeeper (awgd.bookkeeper) over a real ledger file: a sample's ledger write held
open while an admin's change arrives, as happens when the disk is slow. The admin's change
is decided from the books the sample left, never from the books before it, and neither
the sample's booking nor the admin's change is lost (in the books, and in the ledger that
the next start loads)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from helpers.booking import reading

from awgd.bookkeeper import Bookkeeper, WindowUsage
from awgd.books import Books
from awgd.config import Config
from awgd.entry import Entry
from awgd.events import Event
from awgd.ledger import Ledger
from awgd.periods import period_containing
from awgd.plans import Judged, PlanState, lifetime, window_at
from awgd.quota import Plan, start
from awgd.sampling import Sampler

ZONE = ZoneInfo("Europe/Moscow")
KEY = "K" * 42 + "A="
PEER = ("wg0", KEY)
LIMIT = 1000
# How long a test waits for the held write to be reached: far beyond a slow machine.
WAIT_SECONDS = 30


class HeldLedger(Ledger):
    """A real ledger whose next write waits until `release` (a slow disk's fsync)."""

    holding = False
    entered: threading.Event
    gate: threading.Event

    def write(self, entry: Entry) -> int:
        if self.holding:
            self.holding = False
            self.entered.set()
            assert self.gate.wait(WAIT_SECONDS), "the test never released the write"
        return super().write(entry)


class Bed:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.at = datetime(2026, 11, 20, 12, tzinfo=UTC)
        self.config = Config(zone=ZONE)
        ledger = HeldLedger.open(f"sqlite:///{path}")
        assert isinstance(ledger, HeldLedger)
        ledger.entered, ledger.gate = threading.Event(), threading.Event()
        self.ledger = ledger
        self.bookkeeper = self._load(ledger)
        self.sampler = Sampler(self.bookkeeper, lambda: self.config, clock=lambda: self.at)

    def _load(self, ledger: Ledger) -> Bookkeeper:
        schedule = self.config.periods_schedule
        return Bookkeeper.load(ledger, period_containing(self.at, schedule, ZONE), ZONE, schedule)

    async def sample(self, rx: int, tx: int) -> None:
        self.at += timedelta(minutes=1)
        await self.sampler.book(reading(self.at, {"wg0": {KEY: (rx, tx)}}))

    async def plan(self, limit: int) -> None:
        async def judge(books: Books, window_usage: WindowUsage) -> Judged:
            book = books.peers[PEER]
            plan = Plan(limit, "month", date(2026, 11, 1))
            window = window_at(plan, self.at, ZONE, self.config.periods_schedule)
            judged = Judged.nothing()
            judged.settled[PEER] = replace(book.settings, plan=plan)
            judged.states[PEER] = PlanState(start(window, lifetime(book)), window)
            return judged

        await self.bookkeeper.store(judge)

    async def held_sample(self, rx: int, tx: int) -> asyncio.Task[None]:
        """A sample whose ledger write is held: returns once the write is reached."""
        self.ledger.holding = True
        task = asyncio.ensure_future(self.sample(rx, tx))
        assert await asyncio.to_thread(self.ledger.entered.wait, WAIT_SECONDS), "the sample never wrote"
        return task

    def reloaded(self) -> Books:
        """The books the next start would load from the ledger file."""
        ledger = Ledger.open(f"sqlite:///{self.path}")
        try:
            return self._load(ledger).books
        finally:
            ledger.close()


async def started(coroutine: object) -> asyncio.Task[object]:
    """Run `coroutine` until it waits (on the bookkeeper's lock, if the rule holds)."""
    task: asyncio.Task[object] = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
    for _ in range(10):  # every step of it that does not wait on something
        await asyncio.sleep(0)
    return task


def test_an_admin_change_during_a_sample_write_keeps_both(tmp_path: Path) -> None:
    async def scenario() -> None:
        bed = Bed(tmp_path / "ledger.sqlite3")
        await bed.sample(0, 0)
        await bed.plan(LIMIT)
        # The sample that carries the peer past its limit: its verdict (a quota block) is in
        # the entry being written when the admin relabels the peer.
        sample = await bed.held_sample(700, 500)
        event = Event("peer.updated", 0, *PEER, {})
        admin = await started(bed.bookkeeper.settle(PEER, lambda kept: replace(kept, label="Dave"), [event]))
        assert not admin.done(), "the admin's change ran inside the sample's booking"
        bed.ledger.gate.set()
        await sample
        await admin
        for books in (bed.bookkeeper.books, bed.reloaded()):
            settings = books.peers[PEER].settings
            assert settings.label == "Dave"  # the admin's change
            assert settings.blocked == ("quota",)  # the sample's verdict
            assert settings.plan is not None and settings.plan.limit_bytes == LIMIT
            assert lifetime(books.peers[PEER]) == 1200
        bed.ledger.close()

    asyncio.run(scenario())


def test_an_admin_decides_from_the_books_the_sample_left(tmp_path: Path) -> None:
    seen: list[int] = []

    async def scenario() -> None:
        bed = Bed(tmp_path / "ledger.sqlite3")
        await bed.sample(0, 0)
        await bed.plan(10 * LIMIT)
        sample = await bed.held_sample(300, 100)

        async def judge(books: Books, window_usage: WindowUsage) -> Judged:
            book = books.peers[PEER]
            seen.append(lifetime(book))
            state = books.plans[PEER]
            assert book.settings.plan is not None
            judged = Judged.nothing()
            judged.settled[PEER] = replace(book.settings, plan=replace(book.settings.plan, limit_bytes=LIMIT // 2))
            judged.states[PEER] = state
            return judged

        admin = await started(bed.bookkeeper.store(judge))
        assert not seen, "the admin read the books while the sample's write was open"
        bed.ledger.gate.set()
        await sample
        await admin
        assert seen == [400]  # the sample's bytes, seen by the admin's decision
        books = bed.reloaded()
        assert books.plans[PEER].progress.used(lifetime(books.peers[PEER])) == 400  # nothing lost
        bed.ledger.close()

    asyncio.run(scenario())


def test_a_reset_during_a_sample_write_takes_what_the_sample_booked(tmp_path: Path) -> None:
    async def scenario() -> None:
        bed = Bed(tmp_path / "ledger.sqlite3")
        await bed.sample(0, 0)
        await bed.plan(10 * LIMIT)
        sample = await bed.held_sample(300, 100)
        book = bed.bookkeeper.books.peers[PEER]
        states: list[PlanState] = []

        def judge_for(books: Books) -> None:
            states.append(books.plans[PEER])

        reset = await started(bed.bookkeeper.reset(book, judge_for, bed.at))
        assert not states, "the reset read the plan while the sample's write was open"
        bed.ledger.gate.set()
        await sample
        removed, _ = await reset  # type: ignore[misc]
        assert removed == (300, 100)  # the sample's bytes were booked before the reset took them
        assert sum(bed.reloaded().period_usage(bed.reloaded().peers[PEER])) == 0
        bed.ledger.close()

    asyncio.run(scenario())


NEW_KEY = "N" * 42 + "A="


def test_a_rekey_during_a_sample_write_carries_what_the_sample_booked(tmp_path: Path) -> None:
    """peer.rekey's bookkeeping: the settings and the plan's progress move to the new key with
    the window's usage the sample just booked (a rekey never gives a quota back), the old key
    names its successor, and the next start loads exactly that."""

    async def scenario() -> None:
        bed = Bed(tmp_path / "ledger.sqlite3")
        await bed.sample(0, 0)
        await bed.plan(10 * LIMIT)
        await bed.bookkeeper.settle(PEER, lambda kept: replace(kept, label="Phone"), [])
        sample = await bed.held_sample(300, 100)
        event = Event("peer.rekeyed", 0, *PEER, {"new_public_key": NEW_KEY})
        rekey = await started(
            bed.bookkeeper.rekey(PEER, NEW_KEY, lambda kept: replace(kept, allowed_ips=("10.8.0.2/32",)), [event])
        )
        assert not rekey.done(), "the rekey ran inside the sample's booking"
        bed.ledger.gate.set()
        await sample
        stored = await rekey
        assert [e.id is not None for e in stored] == [True]  # type: ignore[attr-defined]
        new = ("wg0", NEW_KEY)
        for books in (bed.bookkeeper.books, bed.reloaded()):
            old_book, new_book = books.peers[PEER], books.peers[new]
            assert old_book.replaced_by == NEW_KEY and new_book.replaced_by is None
            assert old_book.settings.plan is None and PEER not in books.plans and PEER not in books.blocking
            settings = new_book.settings
            assert (settings.label, settings.allowed_ips) == ("Phone", ("10.8.0.2/32",))
            assert settings.plan is not None and settings.plan.limit_bytes == 10 * LIMIT
            assert books.plans[new].progress.used(lifetime(new_book)) == 400  # the window's usage, carried
            assert lifetime(old_book) == 400  # the old key's history stays its own
        # The new key's traffic adds to the carried usage.
        bed.at += timedelta(minutes=1)
        await bed.sampler.book(reading(bed.at, {"wg0": {NEW_KEY: (50, 50)}}))
        books = bed.bookkeeper.books
        assert books.plans[new].progress.used(lifetime(books.peers[new])) == 500
        # A block moves with the keys too.
        await bed.bookkeeper.settle(new, lambda kept: replace(kept, blocked=("admin",)), [])
        newest = "M" * 42 + "A="
        await bed.bookkeeper.rekey(new, newest, lambda kept: kept, [])
        for books in (bed.bookkeeper.books, bed.reloaded()):
            assert books.peers[("wg0", newest)].settings.blocked == ("admin",) and ("wg0", newest) in books.blocking
            assert new not in books.blocking and books.peers[new].replaced_by == newest
            assert books.plans[("wg0", newest)].progress.used(0) == 500
        bed.ledger.close()

    asyncio.run(scenario())
