"""Changing the server's peers: add, remove, update, block and unblock (docs/API.md, v2).

awgd is the only process that runs the tool, so every change a bot makes goes through here.
A change is, in this order, under one lock (changes never interleave, so two `peer.add`
calls racing for an address get different ones):

1. a sample, so the books show the interface as it is now (and book what came before);
2. the live interface, with the tool (`awg set`); a preshared key goes on its stdin;
3. the interface's config file (awgd.wg_config, awgd.server_files), so `awg-quick up` or a
   container restart brings back exactly the peers that were added; if the file cannot be
   written, step 2 is undone and the change fails as a whole;
4. Amnezia's clientsTable, where there is one (names only: a failure there is logged);
5. the ledger: the peer's settings and the change's events, in one transaction;
6. a sample, so the answer shows the change.

**Blocks.** A blocked peer keeps its keys, preshared key, endpoint and counters, and has no
allowed IPs on the live interface: WireGuard then routes nothing to it and drops what it
sends, while its handshakes still complete (measured on amneziawg-go, docs/DESIGN.md). Its
own allowed IPs are kept in the ledger and restored exactly on unblock, so the user's client
config works again unchanged. The ledger is the source of blocks, never the config file;
after every sample `enforce` makes the interface agree with it: a blocked peer that shows
allowed IPs (awgd restarted, the interface re-created from its file, a reboot) loses them
again, and an unblocked one whose restore did not happen gets them back.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from awgd.addresses import Address, next_free, outside, owners, taken_by
from awgd.bookkeeper import Bookkeeper, WindowUsage
from awgd.books import Books, PeerBook
from awgd.clients_table import rekey_client, remove_client, set_client
from awgd.config import Config
from awgd.entry import day_number
from awgd.events import Event
from awgd.fleet_plans import FLEET_REASONS, MAX_FLEET_USERS, FleetUser, accept, joined, unix
from awgd.fleet_sync import BadFleet, check_distinct
from awgd.interface_addresses import read_addresses
from awgd.peer_names import AMNEZIA_CLIENTS_TABLE
from awgd.peer_settings import NO_SETTINGS, Settings
from awgd.periods import local_day
from awgd.plan_windows import Window
from awgd.plans import Judged, PlanState, decide, lifetime, verdict, window_at
from awgd.quota import Plan, Progress, Verdict, after_reset, carried, start
from awgd.server_files import FileChanged, FileError, ensure_stdin, read_text, replace_text, with_stdin
from awgd.shaper import Shaper
from awgd.shaping import RateLimit
from awgd.tool_runner import ToolError, run_command
from awgd.wg_config import UnsafeText, add_peer, config_path, rekey_peer, remove_peer, update_peer
from awgd_client.names import KEY_PATTERN

log = logging.getLogger(__name__)

ADMIN = "admin"
# A config file edited by someone else between awgd's read and its write is read again and
# the change applied again; more collisions than this in a row are reported as a failure.
MAX_FILE_ATTEMPTS = 5
_KEY_IN_TEXT = re.compile(KEY_PATTERN, re.ASCII)
# A reason quoted from the tool's stderr is cut to this many characters.
MAX_REASON_CHARS = 300


class ChangeError(Exception):
    """A change that was refused; nothing of it was applied."""

    def __init__(self, message: str, data: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class Conflict(ChangeError):
    """-32005."""


class ToolRefused(ChangeError):
    """-32006: the tool, or the config file's write, refused; `data` has the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the change was refused: {reason}", {"reason": reason})


class BadChange(ChangeError):
    """-32602: a param that names something that cannot be changed (an unknown interface)."""


class NotThere(ChangeError):
    """-32001: no such peer on the interface."""


@dataclass(frozen=True, slots=True)
class Added:
    book: PeerBook
    persisted: bool


class PeerAdmin:
    def __init__(
        self,
        bookkeeper: Bookkeeper,
        config: Callable[[], Config],
        sample: Callable[[], Awaitable[datetime]],
        tool: Callable[[], str | None],
        *,
        publish: Callable[[list[Event]], None] = lambda events: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clock = clock  # plans are judged by it (awgd.trusted_clock)
        # The books and the ledger are the bookkeeper's: every change to them is decided
        # under its lock (_settle, _store, reset), from the books as they are then.
        self._bookkeeper = bookkeeper
        self._config = config
        self._sample = sample
        self._tool = tool
        self._publish = publish
        # Serialises changes to the server itself: the live interface, its config file and
        # clientsTable (two peer.add calls racing for an address get different ones).
        self._lock = asyncio.Lock()
        # The speed limits applied to each interface: changed only under _lock, like the rest
        # of the server.
        self._shaper = Shaper(config)
        self._complaints: dict[str, str] = {}
        # fleet.sync's pages gathered so far, with the as_of they share (under _lock).
        self._fleet_pending: tuple[float, list[FleetUser]] | None = None

    # ---- the methods ------------------------------------------------------------------------

    async def add(
        self,
        interface: str,
        public_key: str,
        *,
        allowed_ips: tuple[str, ...] | None,
        preshared_key: str | None,
        keepalive: int | None,
        label: str | None,
        outside_subnets: bool = False,
    ) -> Added:
        async with self._lock:
            await self._fresh()
            self._readable(interface)
            book = self._books.peers.get((interface, public_key))
            if book is not None and book.present:
                raise Conflict("the peer already exists on the interface", {"public_key": public_key})
            if allowed_ips is None:
                allowed_ips = await self._free_address(interface)
            else:
                self._check_free(interface, public_key, allowed_ips)
                if not outside_subnets:
                    await self._check_inside(interface, allowed_ips)
            argv = ["peer", public_key]
            if preshared_key:
                argv += ["preshared-key", "/dev/stdin"]
            argv += ["allowed-ips", ",".join(allowed_ips)]
            if keepalive:
                argv += ["persistent-keepalive", str(keepalive)]
            await self._set(interface, argv, stdin=f"{preshared_key}\n" if preshared_key else None)
            try:
                persisted = await self._edit_config(
                    interface,
                    lambda text: add_peer(
                        text,
                        public_key,
                        allowed_ips=allowed_ips,
                        preshared_key=preshared_key,
                        keepalive=keepalive,
                        label=label,
                    ),
                )
            except ToolRefused:
                await self._undo(interface, ["peer", public_key, "remove"])
                raise
            await self._edit_clients(lambda text: set_client(text, public_key, label, datetime.now()))
            # A peer that was removed behind awgd's back keeps its plan and blocks when re-added.
            await self._settle(
                interface,
                public_key,
                lambda kept: replace(kept, label=label, allowed_ips=allowed_ips),
                [self._event("peer.added", interface, public_key)],
            )
            await self._fresh()
            return Added(self._books.peers[(interface, public_key)], persisted)

    async def remove(self, interface: str, public_key: str) -> datetime:
        async with self._lock:
            await self._fresh()  # books what it used up to now
            book = self._books.peers.get((interface, public_key))
            read: list[str] = []  # the file as the edit found it, to put back if the tool refuses

            def without(text: str) -> str:
                read.append(text)
                return remove_peer(text, public_key)

            in_file = await self._edit_config(interface, without, only_if_changed=True)
            if (book is None or not book.present) and not in_file:
                raise NotThere("unknown peer", {"public_key": public_key})
            if book is not None and book.present:
                try:
                    await self._set(interface, ["peer", public_key, "remove"])
                except ToolRefused:
                    if in_file:  # the file as it was, unless someone changed it since
                        was, ours = read[-1], remove_peer(read[-1], public_key)
                        await self._edit_config(interface, lambda text: was if text == ours else text)
                    raise
            await self._edit_clients(lambda text: remove_client(text, public_key))
            await self._settle(interface, public_key, None, [self._event("peer.removed", interface, public_key)])
            await self._fresh()
            return datetime.now(UTC)

    async def rekey(self, interface: str, public_key: str, new_public_key: str, preshared_key: str | None) -> PeerBook:
        """`peer.rekey`: the peer's keys replaced, everything else about it kept (label,
        allowed IPs, keepalive, blocks, plan and its window's usage). The old key leaves the
        live interface, its config file and clientsTable; its history stays, naming the new
        key. The file first (its old text is kept to put back), then the interface in one
        `set`, so the two keys never hold the same addresses at once."""
        async with self._lock:
            await self._fresh()  # books what the old key used up to now
            book = self._known(interface, public_key)
            if not book.present:  # gone from the interface (or replaced already): no device to move
                raise NotThere("the peer is not on the interface", {"public_key": public_key})
            other = self._books.peers.get((interface, new_public_key))
            if new_public_key == public_key or (
                other is not None and (other.present or other.settings is not NO_SETTINGS)
            ):
                raise Conflict("the new key is already a peer of the interface", {"public_key": new_public_key})
            settings = book.settings
            own = book.allowed_ips  # the live ones, or those awgd keeps while it is blocked
            read: list[str] = []

            def rekeyed(text: str) -> str:
                read.append(text)
                return rekey_peer(text, public_key, new_public_key, preshared_key)

            in_file = await self._edit_config(interface, rekeyed, only_if_changed=True)
            argv = ["peer", public_key, "remove", "peer", new_public_key]
            if preshared_key:
                argv += ["preshared-key", "/dev/stdin"]
            # A blocked peer's new key gets no addresses either: it passes nothing from the start.
            argv += ["allowed-ips", "" if settings.blocked else ",".join(own)]
            keepalive = book.line.keepalive if book.line is not None else None
            if keepalive is not None:
                low, high = keepalive
                argv += ["persistent-keepalive", str(low) if low == high else f"{low}-{high}"]
            try:
                await self._set(interface, argv, stdin=f"{preshared_key}\n" if preshared_key else None)
            except ToolRefused:
                if in_file:  # the file as it was, unless someone changed it since
                    was, ours = read[-1], rekeyed(read[-1])
                    await self._edit_config(interface, lambda text: was if text == ours else text)
                raise
            await self._edit_clients(lambda text: rekey_client(text, public_key, new_public_key))
            event = self._event("peer.rekeyed", interface, public_key, new_public_key=new_public_key)
            self._publish(
                await self._bookkeeper.rekey(
                    (interface, public_key), new_public_key, lambda kept: replace(kept, allowed_ips=own), [event]
                )
            )
            await self._fresh()
            await self._enforce()
            return self._books.peers[(interface, new_public_key)]

    async def update(
        self,
        interface: str,
        public_key: str,
        *,
        label: str | None,
        set_label: bool,
        allowed_ips: tuple[str, ...] | None,
        keepalive: int | None,
        outside_subnets: bool = False,
    ) -> PeerBook:
        async with self._lock:
            await self._fresh()
            book = self._known(interface, public_key)
            settings = book.settings
            if allowed_ips is not None:
                self._check_free(interface, public_key, allowed_ips)
                if not outside_subnets:
                    await self._check_inside(interface, allowed_ips)
            argv = ["peer", public_key]
            if allowed_ips is not None and not settings.blocked:
                argv += ["allowed-ips", ",".join(allowed_ips)]
            if keepalive is not None:
                # 0, not "off": awg 3.1 refuses "off" (the review); every tool takes 0 as off.
                argv += ["persistent-keepalive", str(keepalive)]
            if len(argv) > 2 and book.present:
                await self._set(interface, argv)
            if allowed_ips is not None or keepalive is not None or set_label:
                await self._edit_config(
                    interface,
                    lambda text: update_peer(
                        text, public_key, allowed_ips=allowed_ips, keepalive=keepalive, label=label, set_label=set_label
                    ),
                    only_if_changed=True,
                )
            if set_label:
                await self._edit_clients(lambda text: set_client(text, public_key, label, datetime.now()))
            own = allowed_ips if allowed_ips is not None else (settings.allowed_ips or book.allowed_ips)

            def updated(kept: Settings) -> Settings:
                return replace(kept, label=label if set_label else kept.label, allowed_ips=own)

            await self._settle(interface, public_key, updated, [])
            await self._fresh()
            return self._books.peers[(interface, public_key)]

    async def block(self, interface: str, public_key: str, reason: str = ADMIN) -> PeerBook:
        async with self._lock:
            await self._fresh()
            book = self._known(interface, public_key)
            settings = book.settings
            if reason not in settings.blocked:
                reasons = tuple(sorted({*settings.blocked, reason}))
                own = settings.allowed_ips or book.allowed_ips
                if book.present and book.line is not None and book.line.allowed_ips:
                    own = book.line.allowed_ips
                    await self._set(interface, ["peer", public_key, "allowed-ips", ""])
                event = self._event("peer.blocked", interface, public_key, reason=reason, reasons=list(reasons))
                await self._settle(
                    interface,
                    public_key,
                    lambda kept: replace(kept, allowed_ips=own, blocked=tuple(sorted({*kept.blocked, reason}))),
                    [event],
                )
                await self._fresh()
            return self._books.peers[(interface, public_key)]

    async def unblock(self, interface: str, public_key: str, reason: str = ADMIN) -> PeerBook:
        async with self._lock:
            await self._fresh()
            book = self._known(interface, public_key)
            settings = book.settings
            if reason in settings.blocked:
                reasons = tuple(r for r in settings.blocked if r != reason)
                events = []
                if not reasons:
                    if book.present and settings.allowed_ips:
                        await self._set(interface, ["peer", public_key, "allowed-ips", ",".join(settings.allowed_ips)])
                    events.append(self._event("peer.unblocked", interface, public_key, reason=reason))
                await self._settle(
                    interface,
                    public_key,
                    lambda kept: replace(kept, blocked=tuple(r for r in kept.blocked if r != reason)),
                    events,
                )
                await self._fresh()
            return self._books.peers[(interface, public_key)]

    async def limit(self, interface: str, public_key: str, limit: RateLimit | None) -> PeerBook:
        """`peer.limit`: the peer's own speed limit, kept in the ledger and applied with tc.
        When tc refuses, the old limit is put back and the change fails as a whole."""
        async with self._lock:
            await self._fresh()
            book = self._known(interface, public_key)
            old = book.settings.rate_limit
            new = None if limit is None or limit.empty else limit
            if new != old:
                await self._settle(interface, public_key, lambda kept: replace(kept, rate_limit=new), [])
                problems = await self._shaper.reconcile(self._books)
                if interface in problems:
                    await self._settle(interface, public_key, lambda kept: replace(kept, rate_limit=old), [])
                    await self._shaper.reconcile(self._books)
                    raise ToolRefused(problems[interface])
            return self._books.peers[(interface, public_key)]

    # ---- plans (awgd.quota, awgd.plans) ----------------------------------------------------

    async def set_plan(self, interface: str, public_key: str, plan: Plan) -> PeerBook:
        """Replace the peer's plan; it takes effect at once (blocks or unblocks)."""
        async with self._lock:
            await self._fresh()
            key = self._known(interface, public_key).key
            config = self._config()
            now = self._clock()

            async def judge(books: Books, window_usage: WindowUsage) -> Judged:
                book = books.peers[key]
                window = window_at(plan, now, config.zone, config.periods_schedule)
                total = lifetime(book)
                old, kept = book.settings.plan, books.plans.get(key)
                if old is not None and kept is not None and kept.window == window:
                    progress = carried(old, plan, kept.progress)
                else:
                    booked, removed = await _window_before(
                        books, book, plan, window, zone=config.zone, window_usage=window_usage
                    )
                    progress = start(window, total, booked, removed)
                found, after = verdict(
                    plan, PlanState(progress, window), total, now, zone=config.zone, schedule=config.periods_schedule
                )
                return _replanned(book, plan, found, after, int(now.timestamp()))

            return await self._replan(key, judge)

    async def clear_plan(self, interface: str, public_key: str) -> PeerBook:
        async with self._lock:
            await self._fresh()
            key = self._known(interface, public_key).key
            nothing = Verdict(Progress(0, 0), frozenset())  # no reason held, nothing announced

            async def judge(books: Books, window_usage: WindowUsage) -> Judged:
                return _replanned(books.peers[key], None, nothing, None, int(time.time()))

            return await self._replan(key, judge)

    async def fleet_sync(self, page: list[FleetUser], as_of: float, *, more: bool = False) -> tuple[bool, int, Books]:
        """The centre's word on the fleet users with peers here (docs/FLEET.md), in pages
        (`more`: another page of the same `as_of` follows; a request line holds 1 MiB): the
        whole of it replaces what the node held, unless it is older; every user that changed
        is judged at once, on the books as the last sample left them (no tool run: the mirror
        calls after every sample), and the live interface follows. Returns whether it was
        taken, the users gathered so far, and the books."""
        async with self._lock:
            pending = self._fleet_pending
            users = [*(pending[1] if pending is not None and pending[0] == as_of else []), *page]
            self._fleet_pending = None
            if len(users) > MAX_FLEET_USERS:
                raise BadChange(f"invalid params: more than {MAX_FLEET_USERS} fleet users in one sync")
            try:
                check_distinct(users)
            except BadFleet as exc:
                raise BadChange(f"invalid params: {exc}") from None
            if more:
                self._fleet_pending = (as_of, users)
                return False, len(users), self._books
            config = self._config()
            now = self._clock()
            at = int(now.timestamp())
            taken = False

            async def judge(books: Books, window_usage: WindowUsage) -> Judged:
                nonlocal taken
                judged = Judged.nothing()
                if not accept(books.fleet_as_of, as_of, now.timestamp()):
                    return judged  # read before what the node holds: it cannot undo a decision
                taken = True
                judged.fleet.as_of = as_of
                news = {user.user: user for user in users}
                for name, old in books.fleet_users.items():
                    new = news.get(name)
                    if new is None:
                        judged.fleet.users[name] = None
                    for key in old.members - (new.members if new is not None else frozenset()):
                        judged.fleet.shares[key] = None
                        judged.fleet.triggers[key] = None
                        if (book := books.peers.get(key)) is not None:
                            books.decide_fleet(book, frozenset(), None, at, judged)
                # A peer holding a fleet reason or throttle that no user counts any more (given
                # new keys by peer.rekey, which carried its settings over) has them lifted.
                counted = {key for user in users for key in user.members}
                for key in sorted((books.blocking | books.shaped) - counted):
                    book = books.peers.get(key)
                    if book is None:
                        continue
                    kept = judged.settled.get(key, book.settings)
                    if FLEET_REASONS & set(kept.blocked) or kept.fleet_throttled is not None:
                        books.decide_fleet(book, frozenset(), None, at, judged)
                for user in users:
                    # Only what changed is stored and judged again: a round repeats most users
                    # as they were (10,000 users would be 20,000 statements a round). A member
                    # that has appeared here since is judged now, not at its first traffic.
                    held = books.fleet_users.get(user.user)
                    if (
                        held is not None
                        and replace(user, as_of=held.as_of) == held
                        and all(key in books.fleet_shares or key not in books.peers for key in user.members)
                    ):
                        continue
                    judged.fleet.users[user.user] = user
                    for key in sorted(user.members):
                        share = books.fleet_shares.get(key)
                        book = books.peers.get(key)
                        if book is None or (share is not None and share.user == user.user):
                            continue
                        window = books.fleet_window(user, now)
                        booked, _ = await _window_before(
                            books, book, user.plan, window, zone=config.zone, window_usage=window_usage
                        )
                        judged.fleet.shares[key] = joined(user.user, unix(window.start), lifetime(book), booked)
                    books.judge_fleet_user(user, now, {}, judged)
                return judged

            judged = await self._bookkeeper.store(judge)
            self._publish(judged.events)
            if judged.settled:
                # A block or its end: what is live is read first (a tool run only then), so
                # that a peer blocked since the last sample is seen without its allowed IPs
                # and given them back.
                await self._fresh()
            await self._enforce()
            return taken, len(users), self._books

    async def _replan(self, key: tuple[str, str], judge: Callable[[Books, WindowUsage], Awaitable[Judged]]) -> PeerBook:
        """Store the peer's new plan, its verdict and progress, in one transaction; then make
        the live interface follow."""
        judged = await self._bookkeeper.store(judge)
        self._publish(judged.events)
        await self._enforce()
        return self._books.peers[key]

    async def reset(self, book: PeerBook) -> tuple[datetime, tuple[int, int]]:
        """`traffic.reset`: zero the peer's usage this period; what its plan makes of the
        bytes removed is stored in the reset's own transaction. When, and what it removed."""
        async with self._lock:
            config = self._config()
            now = self._clock()
            at = datetime.now(UTC)

            def judge_for(books: Books) -> Callable[[int], Judged] | None:
                plan, state = book.settings.plan, books.plans.get(book.key)
                if plan is None or state is None:
                    return None
                total = lifetime(book)

                def judge(removed: int) -> Judged:
                    progress = after_reset(state.progress, total, removed)
                    found, after = verdict(
                        plan,
                        PlanState(progress, state.window),
                        total,
                        now,
                        zone=config.zone,
                        schedule=config.periods_schedule,
                    )
                    judged = Judged.nothing()
                    decide(book, book.settings, found, int(now.timestamp()), judged)
                    judged.states[book.key] = after
                    return judged

                return judge

            removed, judged = await self._bookkeeper.reset(book, judge_for, at)
            if judged is not None:
                self._publish(judged.events)
                await self._enforce()
        return at, removed

    # ---- enforcement after every sample --------------------------------------------------------

    async def enforce(self) -> None:
        """Make the live interfaces agree with the ledger's blocks (module doc). Skipped while
        a change runs: the change enforces at its end."""
        if self._lock.locked():
            return
        async with self._lock:
            await self._enforce()

    async def _enforce(self) -> None:
        books = self._books
        for key in list(books.blocking):
            book = books.peers.get(key)
            if book is None or not book.present or book.line is None or not book.line.allowed_ips:
                continue
            if not book.settings.allowed_ips:  # first seen while blocked: keep what it has
                await self._settle(*key, _keeping(book.line.allowed_ips), [])
            await self._enforced(book, "")
        for key in list(books.restoring):
            book = books.peers.get(key)
            if book is None or not book.present or book.line is None:
                continue
            if book.line.allowed_ips:
                await self._bookkeeper.restored(book)
            else:
                await self._enforced(book, ",".join(book.settings.allowed_ips))
        await self._shaper.reconcile(books)

    async def _enforced(self, book: PeerBook, allowed_ips: str) -> None:
        what = "block" if not allowed_ips else "unblock"
        try:
            await self._set(book.interface, ["peer", book.public_key, "allowed-ips", allowed_ips])
        except ToolRefused as exc:
            self._complain(book.key, f"cannot {what} peer {book.public_key} on {book.interface}: {exc.message}")
        else:
            self._complaints.pop(str(book.key), None)
            log.info("%sed peer %s on %s, as the ledger says", what, book.public_key, book.interface)

    # ---- parts -------------------------------------------------------------------------------

    @property
    def _books(self) -> Books:
        return self._bookkeeper.books

    async def _fresh(self) -> None:
        """A sample within a change. Its own enforcement is skipped while the change holds the
        lock, so the speed limits are made to agree here: a change that moved a limited peer's
        addresses, key or presence has the interface follow as the sample shows it."""
        await self._sample()
        await self._shaper.reconcile(self._books)

    def _readable(self, interface: str) -> None:
        iface = self._books.interfaces.get(interface)
        if iface is None or not iface.read:
            raise BadChange(f"invalid params: interface {interface} is not an interface awgd reads")

    def _known(self, interface: str, public_key: str) -> PeerBook:
        book = self._books.peers.get((interface, public_key))
        if book is None or (not book.present and book.id is None and book.settings is NO_SETTINGS):
            raise NotThere("unknown peer", {"public_key": public_key})
        return book

    def _held(self, interface: str, public_key: str) -> list[tuple[str, tuple[str, ...]]]:
        """Every other peer of the interface and the allowed IPs it holds (present, blocked,
        or added and not yet seen)."""
        members = self._books.members.get(interface, {})
        return [
            (key, book.allowed_ips)
            for key, book in members.items()
            if key != public_key and (book.present or book.settings is not NO_SETTINGS)
        ]

    def _check_free(self, interface: str, public_key: str, allowed_ips: tuple[str, ...]) -> None:
        held = owners(self._held(interface, public_key))
        for cidr in allowed_ips:
            owner = held.get(cidr)
            if owner is not None:
                raise Conflict(
                    f"allowed IP {cidr} belongs to another peer of {interface}", {"allowed_ip": cidr, "owner": owner}
                )

    async def _own_addresses(self, interface: str) -> tuple[Address, ...]:
        config = self._config()
        try:
            found = await read_addresses(config.exec_prefix, config.tool_timeout, [interface])
        except ToolError as exc:
            raise ToolRefused(f"cannot read the interface's addresses: {exc}") from None
        return found[interface]

    async def _check_inside(self, interface: str, allowed_ips: tuple[str, ...]) -> None:
        own = await self._own_addresses(interface)
        refused = outside(own, allowed_ips)
        if refused:
            subnets = [str(a.network) for a in own]
            raise BadChange(
                f"invalid params: allowed IP {refused[0]} is not inside {interface}'s subnets "
                f"({', '.join(subnets)}) or holds the interface's own address; "
                "pass outside_subnets: true if the peer is meant to route it",
                {"allowed_ip": refused[0], "subnets": subnets},
            )

    async def _free_address(self, interface: str) -> tuple[str, ...]:
        own = await self._own_addresses(interface)
        chosen = next_free(own, taken_by(ips for _, ips in self._held(interface, "")))
        if chosen is None:
            shown = ", ".join(str(a.network) for a in own) or "none"
            raise Conflict(
                f"no free address on {interface} (its subnets: {shown}); pass allowed_ips",
                {"interface": interface, "subnets": [str(a.network) for a in own]},
            )
        return chosen

    async def _set(self, interface: str, argv: Sequence[str], stdin: str | None = None) -> None:
        config = self._config()
        # The binary the samples run: the configured one, or what "auto" found (awg or wg).
        tool = config.tool if config.tool != "auto" else (self._tool() or "awg")
        prefix = with_stdin(config.exec_prefix) if stdin is not None else list(config.exec_prefix)
        if stdin is not None:  # a preshared key must arrive, or the peer gets none
            try:
                await ensure_stdin(config.exec_prefix, config.tool_timeout)
            except FileError as exc:
                raise ToolRefused(str(exc)) from None
        command = [*prefix, tool, "set", interface, *argv]
        try:
            output = await run_command(
                command, config.tool_timeout, stdin=stdin.encode() if stdin is not None else None
            )
        except ToolError as exc:
            raise ToolRefused(str(exc)) from None
        if output.returncode != 0:
            raise ToolRefused(_reason(output.stderr) or f"{tool} exited with status {output.returncode}")

    async def _undo(self, interface: str, argv: Sequence[str]) -> None:
        try:
            await self._set(interface, argv)
        except ToolRefused as exc:
            log.error("could not undo a failed change on %s: %s", interface, exc.message)

    async def _edit_config(self, interface: str, edit: Callable[[str], str], *, only_if_changed: bool = False) -> bool:
        """Apply `edit` to the interface's config file; False when there is no such file (or,
        with only_if_changed, when the edit changed nothing). Raises ToolRefused."""
        config = self._config()
        path = config_path(config, self._tool(), interface)
        return await self._edit_file(path, edit, missing_ok=True, only_if_changed=only_if_changed)

    async def _edit_clients(self, edit: Callable[[str], str]) -> None:
        config = self._config()
        if not config.exec_prefix and not config.names_file:
            return  # Amnezia's table lives in its container
        path = config.names_file or AMNEZIA_CLIENTS_TABLE
        try:
            await self._edit_file(path, edit, missing_ok=True, only_if_changed=True)
        except ToolRefused as exc:
            log.warning("clientsTable not updated: %s", exc.message)

    async def _edit_file(
        self, path: str, edit: Callable[[str], str], *, missing_ok: bool, only_if_changed: bool
    ) -> bool:
        config = self._config()
        for _ in range(MAX_FILE_ATTEMPTS):
            try:
                was = await read_text(path, config.exec_prefix, config.tool_timeout)
                if was is None:
                    if missing_ok:
                        return False
                    raise ToolRefused(f"{path} does not exist")
                text = edit(was)
                if text == was:
                    return not only_if_changed
                await replace_text(path, config.exec_prefix, config.tool_timeout, was=was, text=text)
                return True
            except FileChanged:
                continue
            except (FileError, UnsafeText) as exc:
                raise ToolRefused(str(exc)) from None
        raise ToolRefused(f"{path} kept changing while awgd edited it; try again")

    async def _settle(
        self,
        interface: str,
        public_key: str,
        change: Callable[[Settings], Settings] | None,
        events: list[Event],
    ) -> None:
        """Change the peer's settings (None: remove them) by `change`, applied by the
        bookkeeper to what they are when the write happens: settings are replaced field by
        field, never rebuilt, so a change keeps what it does not name (a plan, another
        reason's block)."""
        self._publish(await self._bookkeeper.settle((interface, public_key), change, events))

    @staticmethod
    def _event(kind: str, interface: str, public_key: str, **data: object) -> Event:
        return Event(kind, int(time.time()), interface, public_key, dict(data))

    def _complain(self, key: object, message: str) -> None:
        if self._complaints.get(str(key)) != message:
            self._complaints[str(key)] = message
            log.warning("%s", message)


def _replanned(book: PeerBook, plan: Plan | None, found: Verdict, state: PlanState | None, at: int) -> Judged:
    """The peer's new plan (None: none), its verdict and progress, as one decision."""
    judged = Judged.nothing()
    judged.settled[book.key] = decide(book, replace(book.settings, plan=plan), found, at, judged)
    judged.states[book.key] = state
    return judged


async def _window_before(
    books: Books, book: PeerBook, plan: Plan, window: Window, *, zone: ZoneInfo, window_usage: WindowUsage
) -> tuple[int, int]:
    """What the ledger booked in the window before the plan was set, and what resets removed
    in it (docs/API.md: earlier usage in the window counts)."""
    if plan.reset == "period":  # resets already taken off; traffic while blocked is no usage
        return sum(books.period_usage(book)) - book.blocked_bytes, 0
    if book.id is None:
        return 0, 0
    first = day_number(local_day(window.start, zone))
    closed, removed = await window_usage(book.id, first, int(window.start.timestamp()))
    running = sum(book.running_day) if books.open_day is not None and books.open_day >= first else 0
    return closed + running, removed


def _keeping(live: tuple[str, ...]) -> Callable[[Settings], Settings]:
    """Settings that keep `live` as the peer's own allowed IPs unless they have some."""
    return lambda kept: replace(kept, allowed_ips=kept.allowed_ips or live)


def _reason(stderr: bytes) -> str:
    """The tool's complaint, fit to return: its first lines, keys replaced, printable only."""
    text = " ".join(stderr.decode("utf-8", "replace").split())
    text = _KEY_IN_TEXT.sub("(key)", text)
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:MAX_REASON_CHARS]
