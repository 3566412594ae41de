"""Taking samples: read the system, show and book the reading, one sample at a time.

A sample is: run the tool (and `ip`, and read the boot id), parse the dump, let the books
take the reading, write the entry in the ledger, and commit it to the books. Samples never
overlap: a scheduled sample, `traffic.sample` and `fresh` requests join the running one
rather than start another, and `fresh` starts a new one at most every
FRESH_INTERVAL_SECONDS (a burst of bot requests costs one tool run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from awgd.bookkeeper import Bookkeeper
from awgd.books import Books
from awgd.config import Config
from awgd.dump_parser import DumpParser
from awgd.entry import Entry, Target
from awgd.events import Event
from awgd.gc_policy import CollectorPolicy
from awgd.interface_addresses import AddressReader
from awgd.ledger import LedgerError
from awgd.peer_names import NameReader
from awgd.periods import Period, day_bounds
from awgd.system_reader import AUTO_TOOLS, Reading, SamplingError, UapiWish, read_system, tool_candidates
from awgd.uapi_parser import UapiParser
from awgd.uapi_reader import DEFAULT_SOCKET_DIRS, UapiReader, reachable, x25519_public

log = logging.getLogger(__name__)

# docs/API.md: fresh takes a sample "unless one finished in the last 5 s".
FRESH_INTERVAL_SECONDS = 5.0


class SamplingFailed(Exception):
    """A sample that did not happen (tool or ledger); the message says why, safe to show."""


@dataclass(slots=True)
class Health:
    last_sample_at: datetime | None = None
    last_success_at: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    tool: str | None = None
    last_duration: float | None = None  # seconds: tool run, parse and booking
    # Why the last sample was read by the tool although the control sockets were wanted.
    reader_problem: str | None = None


class Sampler:
    def __init__(
        self,
        bookkeeper: Bookkeeper,
        config: Callable[[], Config],
        *,
        on_sample: Callable[[], None] = lambda: None,
        on_ledger_failure: Callable[[], None] = lambda: None,
        publish: Callable[[list[Event]], None] = lambda events: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bookkeeper = bookkeeper
        self._clock = clock  # plans are judged by it (awgd.trusted_clock)
        self.health = Health()
        self._config = config
        self._on_sample = on_sample
        self._on_ledger_failure = on_ledger_failure
        self._publish = publish
        self._parser = DumpParser(bookkeeper.books.order)
        derive = x25519_public()
        self._uapi = None if derive is None else UapiReader(UapiParser(derive, bookkeeper.books.order))
        self._last_reader: str | None = None  # "uapi" or "tool": who read the last sample
        self._names = NameReader()
        self._addresses = AddressReader()
        self._warned: frozenset[str] = frozenset()  # the last sample's warnings, logged once
        self._collector = CollectorPolicy()
        self._running: asyncio.Task[datetime] | None = None
        self._last_finished = -float("inf")
        self._last_outcome: datetime | Exception | None = None
        # Run after every successful sample: awgd.peer_admin's enforcement of blocks.
        self.after: Callable[[], Awaitable[None]] | None = None

    # ---- when -----------------------------------------------------------------------------

    async def join_or_start(self) -> datetime:
        """`traffic.sample` and the schedule: join the running sample, or start one."""
        if self._running is None:
            self._running = asyncio.ensure_future(self._run(None))
        return await asyncio.shield(self._running)

    async def fresh(self) -> datetime:
        """`fresh`: join the running sample; else start one unless one finished in the last
        FRESH_INTERVAL_SECONDS, whose outcome (its time, or its failure) is then the answer."""
        outcome = self._last_outcome
        if self._running is None and time.monotonic() - self._last_finished < FRESH_INTERVAL_SECONDS:
            if isinstance(outcome, Exception):
                raise outcome.with_traceback(None)
            if outcome is not None:
                return outcome
        return await self.join_or_start()

    async def boundary(self, target: Target | None) -> datetime:
        """A sample of its own, booked to `target` (never joined to one that started before
        the boundary, which would book to the wrong side of it)."""
        while self._running is not None:
            with contextlib.suppress(Exception):  # the running sample reports its own failure
                await asyncio.shield(self._running)
        self._running = asyncio.ensure_future(self._run(target))
        return await asyncio.shield(self._running)

    async def _run(self, target: Target | None) -> datetime:
        try:
            with self._collector.sampling():
                outcome = await self._take(target)
        except Exception as exc:
            self._last_outcome = exc
            raise
        else:
            self._last_outcome = outcome
            return outcome
        finally:
            self._running = None
            self._last_finished = time.monotonic()

    # ---- what -----------------------------------------------------------------------------

    async def _take(self, target: Target | None) -> datetime:
        config = self._config()
        started = time.monotonic()
        try:
            wish = self._uapi_wish(config)
            # Which tool is found (a PATH search) only when the tool is to read.
            tools = partial(tool_candidates, config.tool, config.exec_prefix)
            reading = await read_system(tools, config.exec_prefix, config.tool_timeout, self._parser.parse, uapi=wish)
        except SamplingError as exc:
            # Neither reader's memory is the books' last reading now (the sockets may have
            # answered in part before the tool failed): both start afresh.
            self._last_reader = None
            if self._uapi is not None:
                self._uapi.forget()
            self._failed(str(exc))
            log.warning("sample failed: %s", exc)
            raise SamplingFailed(str(exc)) from None
        # A tool's complaint repeats at every sample while its cause lasts (a docker CLI
        # warning, an interface it cannot read): logged when it appears, not every minute.
        for warning in reading.warnings:
            if warning not in self._warned:
                log.warning("%s", warning)
        self._warned = frozenset(reading.warnings)
        # The other reader's last reading (or half of one, when the sockets failed midway)
        # is now older than the books' last one: what it reads next must not be compared with it.
        reader = "uapi" if "uapi" in reading.readers.values() else "tool"
        if reader == "uapi" and self._last_reader != "uapi":
            self._parser = DumpParser(self.bookkeeper.books.order)
        elif reader == "tool" and self._uapi is not None:
            self._uapi.forget()
        self._last_reader = reader
        self.health.reader_problem = reading.reader_problem
        entry, written = await self.book(reading, target)
        read = [i.name for i in reading.interfaces if not config.interfaces or i.name in config.interfaces]
        names = await self._names.read(config, reading.tool, read)
        addresses = await self._addresses.read(config.exec_prefix, config.tool_timeout, read)
        if names is not None or addresses is not None:
            await self.bookkeeper.found(names, addresses)
        health = self.health
        health.last_sample_at = health.last_success_at = reading.taken_at
        health.consecutive_failures = 0
        health.last_error = None
        health.last_duration = time.monotonic() - started
        if self.after is not None:
            try:
                await self.after()
            except Exception:  # never fails the sample: the next one tries again
                log.exception("enforcing blocks after the sample failed")
        log.info(
            "sample: %d interfaces, %d peers, %d moved, %d rows written%s",
            len(entry.in_step),
            self.books.peers_seen(),
            entry.movers,
            written,
            "" if target is None else " (booked to the closing period)",
        )
        self._on_sample()
        return reading.taken_at

    @property
    def books(self) -> Books:
        return self.bookkeeper.books

    def _uapi_wish(self, config: Config) -> UapiWish | None:
        """What the control sockets should read this sample, or None: the tool reads it
        (docs/config.md, `wireguard.reader`)."""
        if config.reader == "tool":
            return None
        if self._uapi is None:
            if config.reader == "uapi":
                raise SamplingError('wireguard.reader = "uapi" needs python3-cryptography')
            return None
        if config.reader == "auto" and not reachable(config.exec_prefix, config.socket_dirs != DEFAULT_SOCKET_DIRS):
            return None
        tool = self.health.tool
        if config.tool != "auto":
            tool = os.path.basename(config.tool)
        elif tool is None:
            if config.exec_prefix:
                # Which of awg and wg a container has is found by running it: the first sample
                # is the tool's (and the one admin changes then run).
                return None
            tool = next((name for name in AUTO_TOOLS if shutil.which(name)), "awg")
        return UapiWish(
            self._uapi,
            config.socket_dirs,
            frozenset(config.interfaces),
            tool,
            need_qdiscs=bool(self.books.shaped),
            insist=config.reader == "uapi",
        )

    async def book(self, reading: Reading, target: Target | None = None) -> tuple[Entry, int]:
        """Show and book one reading (awgd.bookkeeper). Returns the entry and the rows
        written; raises SamplingFailed when the ledger could not write it (the books are
        then as they were, but for what it showed)."""
        config = self._config()
        self.health.tool = reading.tool

        def target_of(books: Books) -> Target:
            return target or books.target(
                reading.taken_at, config.periods_schedule, config.zone, hours=config.hour_retention_days > 0
            )

        def take(books: Books, target: Target) -> Entry:
            entry = books.take(reading, watched=frozenset(config.interfaces), target=target)
            if books.plans:  # judged_at reckons a local day: not worth it on a server without plans
                instant = judged_at(min(reading.taken_at, self._clock()), target, config)
                books.judge(entry, instant, config.zone, config.periods_schedule)
            if books.fleet_users:
                books.judge_fleet(entry, min(reading.taken_at, self._clock()))
            books.watch_stalls(entry, config.stall_seconds, config.zone)
            return entry

        try:
            entry, written = await self.bookkeeper.book(target_of, take)
        except LedgerError as exc:
            reason = f"the ledger could not book the sample: {exc}"
            self._failed(reason)
            log.error("%s (the next sample books it)", reason)
            self._on_ledger_failure()
            raise SamplingFailed(reason) from None
        self._publish(entry.judged.events)
        return entry, written

    def _failed(self, reason: str) -> None:
        health = self.health
        health.last_sample_at = datetime.now(UTC)
        health.consecutive_failures += 1
        health.last_error = reason
        self._on_sample()

    # ---- the rollover ---------------------------------------------------------------------

    async def roll(self, period: Period) -> None:
        """Enter a new current period, with whatever the ledger already holds for it."""
        await self.bookkeeper.roll(period)
        log.info("new period %s .. %s", period.start.isoformat(), period.end.isoformat())


def judged_at(taken_at: datetime, target: Target, config: Config) -> datetime:
    """The instant plans are judged at: the reading's, or, for a boundary sample booked to
    the closing period or day, the last instant of what it is booked to."""
    last = min(target.period.end, day_bounds(target.day, config.zone).end) - timedelta(microseconds=1)
    return min(taken_at, last)
