"""The bookkeeper: the one owner of the books and the ledger together (docs/DESIGN.md).

Every change to either goes through here and is read, decided and written under one lock:
a sample's booking, a rollover, an admin's settle and store, a reset, the names and
addresses a sample found, enforcement's "restored". What an admin's change decides is
worked out by a function the bookkeeper calls once it holds the lock, from the books as
they are then: a sample can no longer fall between an admin's read and its write, because
there is no read outside the lock to fall after.

Reads that need the ledger's closed rows and the books' running totals to agree (history,
closed buckets) take the lock too. Other reads of the books (the API's answers) take
nothing: the event loop runs one thing at a time, and a change shows or books its reading
in one synchronous step.

The ledger is persistence only; the books build themselves from what it loads (`load`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from awgd.accounting import PeerKey
from awgd.books import Books, PeerBook
from awgd.buckets import Bucket
from awgd.entry import Entry, Target, unix
from awgd.events import Event
from awgd.ledger import Ledger, LedgerError
from awgd.peer_names import Names
from awgd.peer_settings import NO_SETTINGS, Settings
from awgd.periods import Period
from awgd.plans import Judged, PlanState, lifetime, window_at
from awgd.quota import moved

T = TypeVar("T")

BucketRows = Mapping[int, list[Bucket]]  # by peer id
# What a plan's change needs of the ledger while it is worked out: the closed day buckets
# of peer id from a day (YYYYMMDD) on, and what resets removed since a Unix second.
WindowUsage = Callable[[int, int, int], Awaitable[tuple[int, int]]]


class Bookkeeper:
    def __init__(self, books: Books, ledger: Ledger) -> None:
        # Guards `books` and `ledger` as one: every change to either happens while it is
        # held, and nothing else holds a reference that changes them.
        self._lock = asyncio.Lock()
        self.books = books
        self._ledger = ledger

    @classmethod
    def load(
        cls, ledger: Ledger, period: Period, zone: ZoneInfo, schedule: str, *, watched: frozenset[str] = frozenset()
    ) -> Bookkeeper:
        """The books as the ledger left them, `period` (of `schedule` in `zone`) current;
        plans' windows are reckoned in the same zone and schedule. `watched`: the
        interfaces the config names, listed before a reading shows them."""
        contents = ledger.load()
        start = int(period.start.timestamp())
        plans = {}
        for key, progress in contents.progress.items():
            plan = contents.settings[key].plan
            assert plan is not None  # the ledger loads progress only for planned peers
            began = datetime.fromtimestamp(progress.window_start, UTC)
            plans[key] = PlanState(progress, window_at(plan, began, zone, schedule))
        books = Books.load(
            period=period,
            peers=contents.peers,
            interfaces=contents.interfaces,
            open_period=contents.open_period,
            open_day=contents.open_day,
            tracking_since=contents.tracking_since,
            last_booked_at=contents.last_booked_at,
            earlier=ledger.closed_period_usage(start),
            blocked=ledger.blocked_usage(start),
            settings=contents.settings,
            plans=plans,
            ups=contents.ups,
            last_closed_day=ledger.last_closed_day(),
            replaced=contents.replaced,
            open_hour=contents.open_hour,
            stalls=contents.stalls,
            fleet=contents.fleet,
        )
        books.watch(watched)
        return cls(books, ledger)

    # ---- a sample ---------------------------------------------------------------------------

    async def book(
        self,
        target_of: Callable[[Books], Target],
        take: Callable[[Books, Target], Entry],
    ) -> tuple[Entry, int]:
        """Book one reading: `take` shows it and works out its entry (plans judged into it),
        the ledger writes the entry, the books commit it. Returns the entry and the rows
        written; raises LedgerError when the write failed (the books are as they were, but
        for what the reading showed)."""
        async with self._lock:
            books = self.books
            entry = take(books, target_of(books))
            try:
                # An idle sample has nothing to write: no thread hand-off for it.
                written = 0 if entry.empty else await asyncio.to_thread(self._ledger.write, entry)
            except LedgerError:
                books.failed()
                raise
            books.commit(entry)
        return entry, written

    async def found(self, names: Names | None, addresses: Mapping[str, tuple[str, ...]] | None) -> None:
        """What a sample read beside the counters: peers' names, interfaces' addresses."""
        async with self._lock:
            if names is not None:
                self.books.name_peers(names)
            if addresses is not None:
                self.books.address_interfaces(addresses)

    async def roll(self, period: Period) -> None:
        """Enter a new current period, with whatever the ledger already holds for it."""
        start = int(period.start.timestamp())
        async with self._lock:
            earlier = await asyncio.to_thread(self._ledger.closed_period_usage, start)
            blocked = await asyncio.to_thread(self._ledger.blocked_usage, start)
            self.books.roll(period, earlier, blocked)

    async def watch(self, interfaces: frozenset[str]) -> None:
        async with self._lock:
            self.books.watch(interfaces)

    # ---- an admin's changes ---------------------------------------------------------------

    async def settle(
        self, key: PeerKey, change: Callable[[Settings], Settings] | None, events: list[Event]
    ) -> list[Event]:
        """Change the peer's settings by `change` (None: remove them), applied to what they
        are when the write happens, so a change keeps what it does not name. The ledger
        first; the books only once it has them. Returns the events as stored."""
        async with self._lock:
            book = self.books.peers.get(key)
            settings = None if change is None else change(_settings_of(book))
            stored = await asyncio.to_thread(self._ledger.settle, key, settings, events)
            self.books.settle(*key, settings, datetime.now(UTC))
        return stored

    async def rekey(
        self, key: PeerKey, new_public_key: str, change: Callable[[Settings], Settings], events: list[Event]
    ) -> list[Event]:
        """Move the peer's settings (changed by `change`) and its plan's progress to its new
        key (peer.rekey), the window's usage carried over (awgd.quota.moved), in one
        transaction; the old key's history stays under it. Returns the events as stored."""
        async with self._lock:
            books = self.books
            old = books.peers.get(key)
            new_key = (key[0], new_public_key)
            new = books.peers.get(new_key)
            settings = change(_settings_of(old))
            states: dict[PeerKey, PlanState | None] = {}
            state = books.plans.get(key)
            if old is not None and state is not None and settings.plan is not None:
                progress = moved(state.progress, lifetime(old), 0 if new is None else lifetime(new))
                states[new_key] = PlanState(progress, state.window)
            judged = Judged({new_key: settings}, states, events)
            at = datetime.now(UTC)
            judged.events[:] = await asyncio.to_thread(self._ledger.rekey, key, new_public_key, judged, unix(at))
            books.rekeyed(key, new_public_key, judged, at)
        return judged.events

    async def store(self, judge: Callable[[Books, WindowUsage], Awaitable[Judged]]) -> Judged:
        """Store what `judge` decides from the books as they are once the lock is held (it
        may read a plan's window from the ledger), then apply it to the books."""
        async with self._lock:
            judged = await judge(self.books, self._window_usage)
            judged.events[:] = await asyncio.to_thread(self._ledger.store, judged)
            self.books.apply(judged)
        return judged

    async def reset(
        self, book: PeerBook, judge_for: Callable[[Books], Callable[[int], Judged] | None], at: datetime
    ) -> tuple[tuple[int, int], Judged | None]:
        """Zero the peer's usage in the current period. `judge_for` is asked, under the lock,
        what the peer's plan makes of the bytes removed (None: no plan); its verdict is
        stored in the reset's own transaction. Returns what was removed, and the verdict."""
        async with self._lock:
            books = self.books
            removed = (0, 0)  # seen by a reading but never booked: nothing to remove
            made: list[Judged] = []
            period = books.period_bounds
            if book.id is not None:
                judge = judge_for(books)

                def judged(amount: int) -> Judged:
                    assert judge is not None
                    made.append(judge(amount))
                    return made[-1]

                removed = await asyncio.to_thread(
                    self._ledger.reset,
                    book.id,
                    period,
                    running=books.open_period == period,
                    at=at,
                    judge=None if judge is None else judged,
                )
            books.reset(book, period)
            for decided in made:
                books.apply(decided)
        return removed, (made[-1] if made else None)

    async def restored(self, book: PeerBook) -> None:
        """Its allowed IPs are live again (awgd.peer_admin's enforcement)."""
        async with self._lock:
            self.books.restored(book)

    # ---- reads that must agree with the running totals ----------------------------------

    async def history(self, book: PeerBook, granularity: str, limit: int) -> list[Bucket]:
        assert book.id is not None
        async with self._lock:
            books = self.books
            return await asyncio.to_thread(
                self._ledger.history,
                book.id,
                granularity,
                limit,
                open_period=books.open_period,
                open_day=books.open_day,
                open_hour=books.open_hour,
            )

    async def closed_buckets(
        self,
        peer_ids: list[int],
        first_start: int,
        first_day: int,
        then: Callable[[BucketRows, BucketRows], T],
    ) -> T:
        """`then` over the ledger's closed period and day rows of these peers (by peer id),
        run before any change can move a running total into them."""
        async with self._lock:
            periods, days = await asyncio.to_thread(self._ledger.closed_buckets, peer_ids, first_start, first_day)
            return then(periods, days)

    async def _window_usage(self, peer_id: int, first_day: int, since: int) -> tuple[int, int]:
        return await asyncio.to_thread(self._ledger.window_usage, peer_id, first_day, since)


def _settings_of(book: PeerBook | None) -> Settings:
    return NO_SETTINGS if book is None else book.settings
