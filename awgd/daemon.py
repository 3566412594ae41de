"""The daemon's life: start, serve, sample on schedule, reload, stop (docs/DESIGN.md).

Start: config, ledger, books, a first sample, the socket, READY=1. SIGHUP reloads the config
(a bad one is logged and the old one stays). SIGTERM/SIGINT: STOPPING=1, stop accepting,
finish in-flight requests, take a last sample so the counters up to shutdown are booked,
close the ledger, remove the socket, exit 0.

The Daemon is also the `View` the RPC methods see (awgd.api): the config, the books, the
health of the sampler and the ledger, and the actions a method may ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import signal
import time
from datetime import UTC, datetime
from typing import TypeVar

from awgd import __version__
from awgd.api import Api, LedgerHealth
from awgd.bookkeeper import Bookkeeper
from awgd.books import Books
from awgd.change_feed import new_instance
from awgd.config import DEFAULT_ADMIN_GROUP, DEFAULT_FLEET_GROUP, Config, ConfigError, load
from awgd.event_feed import EventFeed
from awgd.events import Event
from awgd.ledger import Ledger
from awgd.notify import Notifier
from awgd.peer_admin import PeerAdmin
from awgd.periods import local_day, period_containing
from awgd.rpc_server import RpcServer, prepare_socket_path
from awgd.sampling import Health, Sampler, SamplingFailed
from awgd.scheduler import Schedule
from awgd.trusted_clock import TrustedClock
from awgd_client.formatting import plural

T = TypeVar("T")

log = logging.getLogger(__name__)

# The last sample at shutdown gets at most this long beyond the tool's own timeout.
FINAL_SAMPLE_SLACK_SECONDS = 5.0
# After a failed ledger write the file is checked (quick_check reads all of it: seconds on a
# large ledger), but not again sooner than this while writes keep failing.
LEDGER_CHECK_AFTER_FAILURE_SECONDS = 600.0


class Daemon:
    def __init__(self, config: Config, config_path: str | None, ledger: Ledger) -> None:
        self._config = config
        self.config_path = config_path
        self.ledger = ledger
        self._started_at = datetime.now(UTC)
        self._instance = new_instance()
        self._admin_gids = resolve_groups(config.admin_groups)
        self._fleet_gids = resolve_groups(config.fleet_groups)
        self._ledger_health = LedgerHealth()
        self.bookkeeper = Bookkeeper.load(
            ledger,
            period_containing(self._started_at, config.periods_schedule, config.zone),
            config.zone,
            config.periods_schedule,
            watched=frozenset(config.interfaces),
        )
        self._books = self.bookkeeper.books  # read by the API; changed only by the bookkeeper
        self._feed = EventFeed()
        self.notifier = Notifier()
        self.clock = TrustedClock()
        self.sampler = Sampler(
            self.bookkeeper,
            lambda: self._config,
            on_sample=self._status,
            on_ledger_failure=self._ledger_failed,
            publish=self._feed.publish,
            clock=self.clock.now,
        )
        self._admin = PeerAdmin(
            self.bookkeeper,
            lambda: self._config,
            self.sampler.join_or_start,
            lambda: self.sampler.health.tool,
            publish=self._feed.publish,
            clock=self.clock.now,
        )
        self.sampler.after = self._admin.enforce
        self.schedule = Schedule(self.sampler, self._books, lambda: self._config, self._maintain, clock=self.clock.now)
        self.server = RpcServer(Api(self), config.socket, config.group)
        self._stop = asyncio.Event()
        self._last_ledger_check = -float("inf")
        self._ledger_check: asyncio.Task[None] | None = None

    # ---- the View of awgd.api ----------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @property
    def books(self) -> Books:
        return self._books

    @property
    def health(self) -> Health:
        return self.sampler.health

    @property
    def ledger_health(self) -> LedgerHealth:
        return self._ledger_health

    @property
    def started_at(self) -> datetime:
        return self._started_at

    @property
    def admin_gids(self) -> frozenset[int]:
        return self._admin_gids

    @property
    def fleet_gids(self) -> frozenset[int]:
        return self._fleet_gids

    @property
    def admin(self) -> PeerAdmin:
        return self._admin

    def next_sample_at(self) -> datetime | None:
        return self.schedule.next_sample_at

    @property
    def feed(self) -> EventFeed:
        return self._feed

    async def events(self, since: int, limit: int, types: tuple[str, ...] | None) -> tuple[list[Event], int]:
        return await asyncio.to_thread(self.ledger.events, since, limit, types)

    async def sample(self, *, rate_limited: bool) -> datetime:
        return await (self.sampler.fresh() if rate_limited else self.sampler.join_or_start())

    @property
    def instance(self) -> str:
        return self._instance

    # ---- status and the ledger's health ----------------------------------------------------

    def _status(self) -> None:
        health = self.sampler.health
        read = sum(1 for i in self._books.interfaces.values() if i.read)
        last = health.last_success_at
        shown = last.astimezone(self._config.zone).strftime("%H:%M:%S") if last else "never"
        peers = self._books.peers_seen()
        text = f"watching {plural(read, 'interface')}, {plural(peers, 'peer')}; last sample {shown}"
        if health.last_error:
            text += f"; failing: {health.last_error}"
        if self._ledger_health.error:
            text += f"; ledger damaged: {self._ledger_health.error}"
        self.notifier.send(f"STATUS={text[:200]}")

    def _ledger_failed(self) -> None:
        if time.monotonic() - self._last_ledger_check >= LEDGER_CHECK_AFTER_FAILURE_SECONDS:
            self._start_ledger_check()

    async def _maintain(self) -> None:
        """Daily: prune day and hour buckets past their retention, and check the ledger's file."""
        today = local_day(datetime.now(UTC), self._config.zone)
        keep_from = today.fromordinal(today.toordinal() - self._config.day_retention_days + 1)
        try:
            removed = await asyncio.to_thread(self.ledger.prune_days, keep_from)
            if removed:
                log.info("pruned %d day buckets before %s", removed, keep_from.isoformat())
            hours_before = int(time.time()) - self._config.hour_retention_days * 86400
            removed = await asyncio.to_thread(self.ledger.prune_hours, hours_before)
            if removed:
                log.info("pruned %d hour buckets older than %d days", removed, self._config.hour_retention_days)
            days = self._config.events_retention_days
            events = await asyncio.to_thread(self.ledger.prune_events, int(time.time()) - days * 86400)
            if events:
                log.info("pruned %d events older than %d days", events, days)
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
        self._ledger_health.checked_at = datetime.now(UTC)
        self._ledger_health.error = fault
        if fault:
            log.error("the ledger is damaged (%s): awgd serves from memory; restore the ledger and restart", fault)
        self._status()

    # ---- life -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(SamplingFailed):  # logged; the daemon serves and retries on schedule
            await self.sampler.join_or_start()
        await self.server.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        tasks = [asyncio.ensure_future(self.schedule.run())]
        interval = self.notifier.watchdog_interval()
        if interval:
            tasks.append(asyncio.ensure_future(self._watchdog(interval)))
        log.info("awgd %s ready on %s", __version__, self._config.socket)
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
            async with asyncio.timeout(self._config.tool_timeout + FINAL_SAMPLE_SLACK_SECONDS):
                await self.sampler.join_or_start()
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
        old = self._config
        for name, what in (("socket", "rpc.socket"), ("group", "rpc.group"), ("ledger_url", "ledger.url")):
            if getattr(new, name) != getattr(old, name):
                log.warning("%s changed: takes effect at the next restart", what)
        self._config = new
        self._admin_gids = resolve_groups(new.admin_groups)
        self._fleet_gids = resolve_groups(new.fleet_groups)
        await self.bookkeeper.watch(frozenset(new.interfaces))
        if (new.periods_schedule, new.zone) != (old.periods_schedule, old.zone):
            await self.sampler.roll(period_containing(datetime.now(UTC), new.periods_schedule, new.zone))
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
            # The default group is made by the package; elsewhere its absence is no mistake.
            level = logging.INFO if name in (DEFAULT_ADMIN_GROUP, DEFAULT_FLEET_GROUP) else logging.WARNING
            log.log(level, "group %s does not exist", name)
    return frozenset(gids)


async def serve(config: Config, config_path: str | None) -> int:
    # Before the ledger is touched: a second daemon booking the same counters would count
    # twice, and a socket directory someone else controls is refused outright.
    prepare_socket_path(config.socket)
    ledger = Ledger.open(config.ledger_url)
    try:
        daemon = Daemon(config, config_path, ledger)
        return await daemon.run()
    finally:
        with contextlib.suppress(Exception):
            ledger.close()
