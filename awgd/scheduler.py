"""When samples happen: croniter fire times, period boundaries, pruning, and joining.

Samples never overlap. `SampleRunner` holds the one running sample: a scheduled sample,
`traffic.sample` and `fresh` requests all join it rather than start another, and `fresh`
starts a new one at most every FRESH_INTERVAL_SECONDS (a burst of bot requests costs one
tool run). The loop in `Schedule` sleeps until the next fire time of the sampling
schedule, the period's end or the daily maintenance, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from awgd.periods import Period, local_day, next_fire, period_containing

log = logging.getLogger("awgd.scheduler")

# API.md: fresh takes a sample "unless one finished in the last 5 s".
FRESH_INTERVAL_SECONDS = 5.0
# Sleep in slices no longer than this, so a wall-clock jump (NTP, a VM resumed) is noticed
# within that time and the schedule resumes from the new "now".
MAX_SLEEP_SLICE_SECONDS = 5.0
# A boundary sample this late (the host was suspended, the clock jumped) would book traffic
# from after the boundary to the closing period; past this it is skipped, and the next
# sample books to the new period, as after a daemon that was down across the boundary.
BOUNDARY_TOLERANCE = timedelta(seconds=60)

BookTo = tuple[Period, date] | None
Take = Callable[[BookTo], Awaitable[datetime]]


class SampleRunner:
    def __init__(self, take: Take) -> None:
        self._take = take
        self._running: asyncio.Task[datetime] | None = None
        self._last_finished = -float("inf")
        self._last_outcome: datetime | Exception | None = None

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

    async def boundary(self, book_to: tuple[Period, date]) -> datetime:
        """A sample of its own (never joined to one that started before the boundary)."""
        while self._running is not None:
            with contextlib.suppress(Exception):  # the running sample reports its own failure
                await asyncio.shield(self._running)
        self._running = asyncio.ensure_future(self._run(book_to))
        return await asyncio.shield(self._running)

    async def _run(self, book_to: BookTo) -> datetime:
        try:
            outcome = await self._take(book_to)
        except Exception as exc:
            self._last_outcome = exc
            raise
        else:
            self._last_outcome = outcome
            return outcome
        finally:
            self._running = None
            self._last_finished = time.monotonic()


class Schedule:
    def __init__(
        self,
        runner: SampleRunner,
        *,
        sampling: Callable[[], str],
        maintenance: Callable[[], str],
        periods: Callable[[], str],
        zone: Callable[[], ZoneInfo],
        current_period: Callable[[], Period],
        roll: Callable[[Period], Awaitable[None]],
        maintain: Callable[[], Awaitable[None]],
    ) -> None:
        self._runner = runner
        self._sampling = sampling
        self._maintenance = maintenance
        self._periods = periods
        self._zone = zone
        self._current_period = current_period
        self._roll = roll
        self._maintain = maintain
        self._wake = asyncio.Event()
        self.next_sample_at: datetime | None = None

    def wake(self) -> None:
        """Recompute fire times now (after a reload changed the schedules)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            zone = self._zone()
            now = datetime.now(UTC)
            sample_at = next_fire(now, self._sampling(), zone)
            maintain_at = next_fire(now, self._maintenance(), zone)
            boundary = self._current_period().end
            self.next_sample_at = sample_at
            target = min(sample_at, maintain_at, boundary)
            if not await self._sleep_until(target):
                continue  # woken by a reload: recompute
            now = datetime.now(UTC)
            if now >= boundary:
                await self._boundary(boundary, now)
            if now >= sample_at and sample_at != boundary:
                try:
                    await self._runner.join_or_start()
                except Exception as exc:  # the sample has logged and recorded its failure
                    log.debug("scheduled sample failed: %s", exc)
            if now >= maintain_at:
                try:
                    await self._maintain()
                except Exception as exc:
                    log.warning("daily maintenance failed: %s", exc)

    async def _boundary(self, boundary: datetime, now: datetime) -> None:
        closing = self._current_period()
        if now - boundary <= BOUNDARY_TOLERANCE:
            day = local_day(boundary - timedelta(microseconds=1), self._zone())
            try:
                await self._runner.boundary((closing, day))
            except Exception as exc:
                log.warning("boundary sample failed (traffic since the last sample goes to the new period): %s", exc)
        else:
            log.warning("period boundary %s passed %s ago without a sample", boundary.isoformat(), now - boundary)
        await self._roll(period_containing(max(now, closing.end), self._periods(), self._zone()))

    async def _sleep_until(self, target: datetime) -> bool:
        """True once `target` has come; False after one slice, or when woken by `wake()`,
        so that the fire times are computed again from the wall clock's new "now" (it may
        have jumped either way meanwhile)."""
        remaining = (target - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return True
        self._wake.clear()
        try:
            async with asyncio.timeout(min(remaining, MAX_SLEEP_SLICE_SECONDS)):
                await self._wake.wait()
            return False
        except TimeoutError:
            return datetime.now(UTC) >= target
