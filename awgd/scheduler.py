"""When things happen: croniter fire times for samples, the period's end, plans' instants,
daily maintenance.

`Schedule.run` sleeps until the next fire time of the sampling schedule, the current
period's end, the next instant at which a plan's verdict changes by itself (a window's
start, an expiry: `Books.plan_due`) or the daily maintenance, whichever comes first. At a
period's end it takes a boundary sample, booked to the closing period, and then rolls the
books into the new one. At a plan's instant it takes a boundary sample booked to the day
that ends there (so the closing window gets its traffic up to that instant), then a sample
that judges every plan: a block is lifted at its window's start, not at the next
scheduled sample. While a limited peer is past its last warning threshold (`Books.hot`),
samples come every `plans.fast_sampling_seconds`, which bounds the overshoot past a limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from awgd.books import Books
from awgd.config import Config
from awgd.entry import Target
from awgd.periods import Period, hour_start, local_day, next_fire, period_containing
from awgd.sampling import Sampler

log = logging.getLogger(__name__)

# Sleep in slices no longer than this, so a wall-clock jump (NTP, a VM resumed) is noticed
# within that time and the schedule resumes from the new "now".
MAX_SLEEP_SLICE_SECONDS = 5.0
# A boundary sample this late (the host was suspended, the clock jumped) would book traffic
# from after the boundary to the closing period; past this it is skipped, and the next
# sample books to the new period, as after a daemon that was down across the boundary.
BOUNDARY_TOLERANCE = timedelta(seconds=60)


class Schedule:
    def __init__(
        self,
        sampler: Sampler,
        books: Books,
        config: Callable[[], Config],
        maintain: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # "Now" for plans' instants: awgd.trusted_clock's (a wall clock that jumped ahead is
        # not believed at once), so an expiry or a window's start is never taken early. Samples,
        # periods and maintenance follow the wall clock, as the ledger books by it.
        self._clock = clock
        self._sampler = sampler
        self._books = books
        self._config = config
        self._maintain = maintain
        self._wake = asyncio.Event()
        self.next_sample_at: datetime | None = None
        self._handled_due: int | None = None

    def wake(self) -> None:
        """Recompute fire times now (after a reload changed the schedules)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            config = self._config()
            now = datetime.now(UTC)
            sample_at = next_fire(now, config.sampling_schedule, config.zone)
            maintain_at = next_fire(now, config.maintenance_schedule, config.zone)
            boundary = self._books.period.end
            last = self._sampler.health.last_sample_at
            if (self._books.hot or self._books.fleet_hot) and last is not None:
                sample_at = min(sample_at, last + timedelta(seconds=config.plans_fast_sampling_seconds))
            due = self._books.plan_due
            # An instant already handled (its sample failed) waits for the next scheduled sample.
            plan_at = datetime.fromtimestamp(due, UTC) if due is not None and due != self._handled_due else None
            # The wall clock ahead of the trusted one: a plan's instant comes that much later.
            ahead = max(now - self._clock(), timedelta(0))
            self.next_sample_at = sample_at
            wake_at = min(sample_at, maintain_at, boundary, plan_at + ahead if plan_at else boundary)
            if not await self._sleep_until(wake_at):
                continue  # woken by a reload, or a slice passed: recompute
            now = datetime.now(UTC)
            if now >= boundary:
                await self._boundary(boundary, now)
            trusted = self._clock()
            if plan_at is not None and trusted >= plan_at:
                await self._plan_instant(plan_at, trusted)
            if now >= sample_at and sample_at != boundary:
                try:
                    await self._sampler.join_or_start()
                except Exception as exc:  # the sample has logged and recorded its failure
                    log.debug("scheduled sample failed: %s", exc)
            if now >= maintain_at:
                try:
                    await self._maintain()
                except Exception as exc:
                    log.warning("daily maintenance failed: %s", exc)

    async def _boundary(self, boundary: datetime, now: datetime) -> None:
        config = self._config()
        closing = self._books.period
        if now - boundary <= BOUNDARY_TOLERANCE:
            try:
                await self._sampler.boundary(self._booked_before(closing, boundary))
            except Exception as exc:
                log.warning("boundary sample failed (traffic since the last sample goes to the new period): %s", exc)
        else:
            log.warning("period boundary %s passed %s ago without a sample", boundary.isoformat(), now - boundary)
        await self._sampler.roll(period_containing(max(now, closing.end), config.periods_schedule, config.zone))

    def _booked_before(self, period: Period, instant: datetime) -> Target:
        """Where a sample taken for `instant` is booked: the last moment before it."""
        config = self._config()
        last = instant - timedelta(microseconds=1)
        hour = int(hour_start(last, config.zone).timestamp()) if config.hour_retention_days > 0 else None
        return Target(period, local_day(last, config.zone), hour)

    async def _plan_instant(self, instant: datetime, now: datetime) -> None:
        self._handled_due = int(instant.timestamp())
        booked = self._books.last_booked_at
        if now - instant <= BOUNDARY_TOLERANCE and (booked is None or booked < instant):
            try:
                await self._sampler.boundary(self._booked_before(self._books.period, instant))
            except Exception as exc:
                log.warning("sample at a plan's window start failed: %s", exc)
        due = self._books.plan_due
        if due is not None and due <= int(self._clock().timestamp()):
            try:
                await self._sampler.boundary(None)  # its own, never joined to an earlier one
            except Exception as exc:
                log.warning("sample for plans failed (the next one judges them): %s", exc)

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
