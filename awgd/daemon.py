"""The daemon's life: start, serve, sample on schedule, reload, stop (DESIGN.md).

Start: config, ledger, a first sample, the socket, READY=1. SIGHUP reloads the config
(a bad one is logged and the old one stays). SIGTERM/SIGINT: STOPPING=1, stop accepting,
finish in-flight requests, take a last sample so the counters up to shutdown are booked,
close the ledger, remove the socket, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import signal
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from awgd import __version__
from awgd.api import RpcError
from awgd.config import Config, ConfigError, load
from awgd.dump_parser import DumpParser
from awgd.gc_policy import CollectorPolicy
from awgd.ledger import Ledger, LedgerError
from awgd.notify import Notifier
from awgd.periods import Period, local_day, period_containing
from awgd.rpc_server import RpcServer, prepare_socket_path
from awgd.sampler import Sampler
from awgd.scheduler import BookTo, SampleRunner, Schedule
from awgd.state import State
from awgd.system_reader import SamplingError, read_system, tool_candidates
from awgd_client import protocol as rpc

log = logging.getLogger("awgd")
T = TypeVar("T")

# The last sample at shutdown gets at most this long beyond the tool's own timeout.
FINAL_SAMPLE_SLACK_SECONDS = 5.0
# After a failed ledger write the file is checked (quick_check reads all of it: seconds on a
# large ledger), but not again sooner than this while writes keep failing.
LEDGER_CHECK_AFTER_FAILURE_SECONDS = 600.0


class SamplingFailed(Exception):
    """A sample that did not happen (tool or ledger); the message says why."""


class Daemon:
    def __init__(self, config: Config, config_path: str | None, ledger: Ledger) -> None:
        self.config = config
        self.config_path = config_path
        self.ledger = ledger
        self.started_at = datetime.now(UTC)
        self.admin_gids = resolve_groups(config.admin_groups)
        now = datetime.now(UTC)
        self.state = State.from_ledger(ledger, self._period_at(now), frozenset(config.interfaces), config.online_window)
        self.sampler = Sampler(
            ledger,
            watched=config.interfaces,
            schedule=config.periods_schedule,
            zone=config.zone,
        )
        self.notifier = Notifier()
        self.dump_parser = DumpParser()
        self.collector = CollectorPolicy()
        self.runner = SampleRunner(self._take)
        self.schedule = Schedule(
            self.runner,
            sampling=lambda: self.config.sampling_schedule,
            maintenance=lambda: self.config.maintenance_schedule,
            periods=lambda: self.config.periods_schedule,
            zone=lambda: self.config.zone,
            current_period=lambda: self.state.period,
            roll=self._roll,
            maintain=self._maintain,
        )
        self.server = RpcServer(self, config.socket, config.group)
        self._stop = asyncio.Event()
        self._last_ledger_check = -float("inf")
        self._ledger_check: asyncio.Task[None] | None = None

    def _period_at(self, instant: datetime) -> Period:
        return period_containing(instant, self.config.periods_schedule, self.config.zone)

    # ---- what the API needs -------------------------------------------------------------

    async def sample_now(self) -> datetime:
        return await self._rpc_sample(self.runner.join_or_start())

    async def sample_fresh(self) -> datetime:
        return await self._rpc_sample(self.runner.fresh())

    async def _rpc_sample(self, waiting: Awaitable[T]) -> T:
        try:
            return await waiting
        except SamplingFailed as exc:
            raise RpcError(rpc.SAMPLING_FAILED, f"sampling failed: {exc}", {"reason": str(exc)}) from None

    def next_sample_at(self) -> datetime | None:
        return self.schedule.next_sample_at

    # ---- sampling ---------------------------------------------------------------------------

    async def _take(self, book_to: BookTo) -> datetime:
        with self.collector.sampling():
            return await self._take_sample(book_to)

    async def _take_sample(self, book_to: BookTo) -> datetime:
        config = self.config
        try:
            tools = tool_candidates(config.tool, config.exec_prefix)
            reading = await read_system(tools, config.exec_prefix, config.tool_timeout, self.dump_parser.parse)
        except SamplingError as exc:
            self.state.sample_failed(str(exc))
            log.warning("sample failed: %s", exc)
            self._status()
            raise SamplingFailed(str(exc)) from None
        for warning in reading.warnings:
            log.warning("%s", warning)
        self.state.observe(reading)
        try:
            result = await self.sampler.book(reading, book_to=book_to)
        except LedgerError as exc:
            reason = f"the ledger could not book the sample: {exc}"
            self.state.sample_failed(reason)
            log.error("%s (the next sample books it)", reason)
            self._status()
            if time.monotonic() - self._last_ledger_check >= LEDGER_CHECK_AFTER_FAILURE_SECONDS:
                self._start_ledger_check()
            raise SamplingFailed(reason) from None
        self.state.book(result.deltas, result.period)
        self.state.sample_succeeded(reading.taken_at)
        log.info(
            "sample: %d interfaces, %d peers, %d moved, %d rows written%s",
            len(reading.interfaces),
            self.state.sampler.peers_seen,
            result.peers_moved,
            result.rows_written,
            " (booked to the closing period)" if book_to else "",
        )
        self._status()
        return reading.taken_at

    def _status(self) -> None:
        state = self.state
        read = sum(1 for i in state.interfaces.values() if i.read)
        last = state.sampler.last_success_at
        shown = last.astimezone(self.config.zone).strftime("%H:%M:%S") if last else "never"
        text = f"watching {read} interfaces, {state.sampler.peers_seen} peers; last sample {shown}"
        if state.sampler.last_error:
            text += f"; failing: {state.sampler.last_error}"
        if state.ledger.error:
            text += f"; ledger damaged: {state.ledger.error}"
        self.notifier.send(f"STATUS={text[:200]}")

    async def _roll(self, period: Period) -> None:
        usage = await asyncio.to_thread(self.ledger.period_usage, period)
        self.state.roll(period, usage)
        log.info("new period %s .. %s", period.start.isoformat(), period.end.isoformat())

    async def _maintain(self) -> None:
        """Daily: prune day buckets past their retention, and check the ledger's file."""
        today = local_day(datetime.now(UTC), self.config.zone)
        keep_from = today.fromordinal(today.toordinal() - self.config.day_retention_days + 1)
        try:
            removed = await asyncio.to_thread(self.ledger.prune_days, keep_from)
            if removed:
                log.info("pruned %d day buckets before %s", removed, keep_from.isoformat())
        finally:
            self._start_ledger_check()
            if self._ledger_check is not None:
                await asyncio.shield(self._ledger_check)

    def _start_ledger_check(self) -> None:
        if self._ledger_check is None or self._ledger_check.done():
            self._last_ledger_check = time.monotonic()
            self._ledger_check = asyncio.ensure_future(self._check_ledger())

    async def _check_ledger(self) -> None:
        fault = await asyncio.to_thread(self.ledger.quick_check)
        self.state.ledger_checked(datetime.now(UTC), fault)
        if fault:
            log.error("the ledger is damaged (%s): awgd serves from memory; restore the ledger and restart", fault)
        self._status()

    # ---- life -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(SamplingFailed):  # logged; the daemon serves and retries on schedule
            await self.runner.join_or_start()
        await self.server.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        tasks = [asyncio.ensure_future(self.schedule.run())]
        interval = self.notifier.watchdog_interval()
        if interval:
            tasks.append(asyncio.ensure_future(self._watchdog(interval)))
        log.info("awgd %s ready on %s", __version__, self.config.socket)
        self.notifier.send("READY=1")
        self._status()
        await self._stop.wait()
        log.info("stopping")
        self.notifier.send("STOPPING=1")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.server.close()
        try:
            async with asyncio.timeout(self.config.tool_timeout + FINAL_SAMPLE_SLACK_SECONDS):
                await self.runner.join_or_start()
        except (SamplingFailed, TimeoutError) as exc:
            log.warning("last sample at shutdown failed: %s", exc)
        if self._ledger_check is not None:
            await asyncio.gather(self._ledger_check, return_exceptions=True)
        self.ledger.close()
        log.info("stopped")
        return 0

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def reload(self) -> None:
        self.notifier.send("RELOADING=1")
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            log.error("reload rejected, the old config stays: %s", exc)
            self.notifier.send("READY=1")
            return
        for name, what in (("socket", "rpc.socket"), ("group", "rpc.group"), ("ledger_url", "ledger.url")):
            if getattr(new, name) != getattr(self.config, name):
                log.warning("%s changed: takes effect at the next restart", what)
        old = self.config
        self.config = new
        self.admin_gids = resolve_groups(new.admin_groups)
        self.sampler.watched = frozenset(new.interfaces)
        self.sampler.schedule = new.periods_schedule
        self.sampler.zone = new.zone
        self.state.set_watched(frozenset(new.interfaces))
        self.state.online_window = new.online_window
        if (new.periods_schedule, new.zone) != (old.periods_schedule, old.zone):
            await self._roll(self._period_at(datetime.now(UTC)))
        self.schedule.wake()
        log.info("config reloaded")
        self.notifier.send("READY=1")
        self._status()


def resolve_groups(names: tuple[str, ...]) -> frozenset[int]:
    gids = set()
    for name in names:
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            log.warning("admin group %s does not exist", name)
    return frozenset(gids)


async def serve(config: Config, config_path: str | None) -> int:
    # Before the ledger is touched: a second daemon booking the same counters would count
    # twice, and a socket directory someone else controls is refused outright.
    prepare_socket_path(config.socket)
    ledger = Ledger.open(config.ledger_url)
    daemon = Daemon(config, config_path, ledger)
    try:
        return await daemon.run()
    finally:
        with contextlib.suppress(Exception):
            ledger.close()
