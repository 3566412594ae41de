"""The books: everything awgd knows about each peer, in memory, in one place.

One `PeerBook` per (interface, public key), indexed once, holds what the last reading showed
(its line: session counters, endpoint, handshake), its checkpoint (the counters at the last
booked sample), and its lifetime, period and day totals. The same objects answer every read,
so nothing is kept in step with a copy. The ledger (awgd.ledger) is where the books are
persisted; the books decide what it writes:

- `take(reading)` shows what a reading saw and works out what it books (an `Entry`), without
  changing any total: the ledger writes the entry, and only then `commit(entry)` applies it.
  A failed write leaves every total and checkpoint as it was (`failed()`), so the next sample
  books again from the same checkpoints.
- The books own the open period and day and the rollover. A sample is booked to the period
  and local day that contain it (`target`); the scheduler takes a boundary sample at a
  period's end, booked to the closing period, then calls `roll` for the new one. The ledger
  keeps running totals for one open period and one open day; the first booking that goes
  elsewhere closes them (moves them into its bucket tables) in the same transaction.

Only the peers that changed are visited: DumpParser says which (`Interface.changed`) relative
to its last dump, and an interface whose checkpoints match that dump (it was read, watched
and booked in the last sample, which committed) needs nothing else. Anything else takes the
full path over every peer. Both give what the rules of awgd.accounting give.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import chain, compress, count
from operator import attrgetter
from zoneinfo import ZoneInfo

from awgd.accounting import InterfaceCheckpoint, PeerKey, restarted
from awgd.dump_parser import Interface, Peer
from awgd.entry import DRX, DTX, PEER_ID, Entry, LoadedPeer, Target, day_number, unix
from awgd.events import Event
from awgd.fleet_plans import FleetChanges, FleetUser, Share, booked_blocked, member_triggers, reasons_after, rolled
from awgd.fleet_plans import held as fleet_held
from awgd.fleet_plans import hot as fleet_hot
from awgd.fleet_plans import margin as fleet_margin
from awgd.fleet_plans import next_instant as fleet_next_instant
from awgd.fleet_plans import throttle as fleet_throttle
from awgd.fleet_plans import used as fleet_used
from awgd.ip_link import Link
from awgd.peer_names import Names
from awgd.peer_settings import NO_SETTINGS, Settings
from awgd.periods import Period, hour_start, local_day, period_containing
from awgd.plan_windows import Window
from awgd.plans import Judged, PlanState, decide, lifetime, next_due, reblocked, throttle_event, verdict
from awgd.quota import hot, iso, trigger
from awgd.stalls import INITIATION_BYTES, Stall, observe
from awgd.system_reader import Reading

# Changes of the open period or day remembered (Books.openings): one a day, so about three
# years' worth; a reader further behind than that is sent its cursor's buckets on.
OPENINGS_KEPT = 1000
# The hot loops read a dump's Peer by index (its key, rx, tx): an attribute costs more, once
# per moving peer of a 50,000-peer sample. Its fields' order is this.
assert Peer._fields[0] == "public_key" and Peer._fields[4:6] == ("rx_bytes", "tx_bytes")


@dataclass(slots=True, eq=False)
class PeerBook:
    interface: str
    public_key: str
    first_seen: datetime
    id: int | None = None  # its row in the ledger; None until its first booking commits
    found_name: str | None = None  # its name in the operator's files (awgd.peer_names)
    settings: Settings = NO_SETTINGS
    # The lifetime total at which its plan must be judged again (awgd.quota.trigger); None
    # when no traffic changes its plan's verdict, or it has no plan.
    trigger: int | None = None
    # What the last reading showed. `line` stays when the peer goes (its last handshake is
    # still shown); `present` says whether it is configured on its interface now.
    line: Peer | None = None
    present: bool = False
    seen_at: datetime | None = None  # when a reading last changed `present`
    # The checkpoint: the counters at the last booked sample, and whether it was present then.
    checkpoint_rx: int = 0
    checkpoint_tx: int = 0
    checkpoint_present: bool = False
    lifetime_rx: int = 0
    lifetime_tx: int = 0
    # The lifetime totals when the ledger's open period (day) was opened: what the peer used
    # in it since, its running total there, is lifetime - base. A booking then adds to the
    # lifetime alone.
    period_base_rx: int = 0
    period_base_tx: int = 0
    day_base_rx: int = 0
    day_base_tx: int = 0
    # What the current period held before the open period became it (normally nothing: only a
    # clock that jumped between periods, or a changed schedule, leaves something here).
    earlier_rx: int = 0
    earlier_tx: int = 0
    # Of its usage in the current period, what was booked while it was blocked (rx + tx):
    # its device kept sending, and WireGuard counts before it drops (API v3, section 2).
    blocked_bytes: int = 0
    replaced_by: str | None = None  # the key that took its place (peer.rekey)
    # The lifetime total at which its fleet user must be judged again (awgd.fleet_plans
    # .member_triggers); None: no fleet user, or no traffic changes its user's verdict.
    fleet_trigger: int | None = None
    # Books.changes when a figure of it that awgd-mirror copies last changed (traffic.changes).
    stamp: int = 0
    # Its place in the order books were made in (Books.peers keeps them in it): traffic.changes
    # cuts its pages there, and visits the books in the order they sit in memory.
    serial: int = 0
    first_seen_unix: int = field(init=False)  # first_seen in Unix seconds, as traffic.changes sends it

    def __post_init__(self) -> None:
        self.first_seen_unix = int(self.first_seen.timestamp())

    @property
    def key(self) -> PeerKey:
        return (self.interface, self.public_key)

    @property
    def label(self) -> str | None:
        """The label an admin gave it, else its name in the operator's files."""
        return self.settings.label or self.found_name

    @property
    def allowed_ips(self) -> tuple[str, ...]:
        """Its own allowed IPs: the live ones, unless it is blocked (the live interface then
        has none) or they are not known live; then the ones awgd keeps."""
        line = self.line
        if self.settings.blocked or line is None or not self.present:
            return self.settings.allowed_ips or (line.allowed_ips if line is not None else ())
        return line.allowed_ips

    @property
    def running_period(self) -> tuple[int, int]:
        """Its usage in the ledger's open period, outside that period's closed row."""
        return self.lifetime_rx - self.period_base_rx, self.lifetime_tx - self.period_base_tx

    @property
    def running_day(self) -> tuple[int, int]:
        return self.lifetime_rx - self.day_base_rx, self.lifetime_tx - self.day_base_tx

    @property
    def session(self) -> tuple[int, int]:
        line = self.line
        return (line.rx_bytes, line.tx_bytes) if self.present and line is not None else (0, 0)

    @property
    def latest_handshake(self) -> int:
        return 0 if self.line is None else self.line.latest_handshake


@dataclass(slots=True)
class InterfaceBook:
    name: str
    checkpoint: InterfaceCheckpoint | None = None  # as last booked
    # What the last successful sample showed; `listed` in server.status when it was read,
    # is watched, or was named by the tool as unreadable.
    listed: bool = False
    exists: bool = False
    up: bool = False
    read: bool = False  # read in the last successful sample
    reader: str | None = None  # by what: "uapi" (its control socket) or "tool"
    public_key: str | None = None
    listen_port: int | None = None
    peers: int = 0
    read_at: datetime | None = None
    addresses: tuple[str, ...] = ()  # its own (awgd.interface_addresses)
    awg: tuple[tuple[str, int | str], ...] | None = None  # AmneziaWG's parameters, as the dump has them
    was_up: bool | None = None  # as the ledger last recorded it (interface.up/down events)


@dataclass(frozen=True, slots=True)
class InterfaceSummary:
    period_rx: int
    period_tx: int
    online: int


_HANDSHAKE = attrgetter("line.latest_handshake")
_PRESENT = attrgetter("present")
_EARLIER_RX = attrgetter("earlier_rx")
_EARLIER_TX = attrgetter("earlier_tx")
_LIFETIME_RX = attrgetter("lifetime_rx")
_LIFETIME_TX = attrgetter("lifetime_tx")
_PERIOD_BASE_RX = attrgetter("period_base_rx")
_PERIOD_BASE_TX = attrgetter("period_base_tx")


class Books:
    def __init__(self, period: Period) -> None:
        self.peers: dict[PeerKey, PeerBook] = {}
        self.members: dict[str, dict[str, PeerBook]] = {}  # interface -> public key -> book
        self.by_key: dict[str, list[PeerBook]] = {}  # public key -> its books, one per interface
        self.interfaces: dict[str, InterfaceBook] = {}
        self._period = period
        self._period_bounds = (unix(period.start), unix(period.end))
        # What the ledger's running totals belong to; None before the first booking.
        self.open_period: tuple[int, int] | None = None
        self.open_day: int | None = None
        self.open_hour: int | None = None  # the local hour's start, Unix seconds
        # The latest day the ledger holds a closed row for (YYYYMMDD; 0: none). An open day
        # at or before it was opened again (a clock went back): its total is then its closed
        # row plus the running totals, which only the ledger can add (awgd.change_feed).
        self.last_closed_day = 0
        # Each time the ledger's open period or day changed: (change, period, day). A reader
        # behind one needs the buckets from the earliest of them on (awgd.change_feed): after
        # a clock went back, that is before its cursor's.
        self.openings: list[tuple[int, tuple[int, int] | None, int | None]] = []
        self.tracking_since: datetime | None = None  # the first sample's time: a baseline
        self.last_booked_at: datetime | None = None
        self.version = 0  # changes whenever a figure shown may have changed
        # Counts the changes traffic.changes reports (awgd.change_feed): each stamps the books
        # it touched with the new count, so "what changed since N" is the books stamped > N.
        self.changes = 0
        # The last sample's movers and the seconds since the sample before it: the current
        # rates, worked out only when asked for (Books.rate), so a sample pays nothing for them.
        self._committed_at: datetime | None = None
        self._moves: tuple[list[PeerBook], list[tuple[int, int, int, int, int]], float] = ([], [], 0.0)
        self._rates: tuple[int, dict[int, tuple[int, int]]] = (-1, {})
        self._next_id = 1
        self._serials = 0  # the last PeerBook.serial given
        self._in_step: frozenset[str] = frozenset()
        self._period_of: tuple[str, ZoneInfo, Period] | None = None
        self._names = Names()
        self._summary: tuple[int, float, dict[str, InterfaceSummary]] | None = None
        # What enforcement looks at each sample (awgd.peer_admin), so it never walks every peer:
        self.blocking: set[PeerKey] = set()  # peers with a reason to be blocked
        self.restoring: set[PeerKey] = set()  # unblocked, until their allowed IPs are seen live
        self.shaped: set[PeerKey] = set()  # peers with a speed limit or a throttle (awgd.shaper)
        self.shaping_stamp = 0  # changes when a shaped peer's settings do (awgd.shaper looks then)
        # Every link `ip` listed at the last sample that read them (the shaper's IFBs too): their
        # root qdiscs show whether the limits are still set up.
        self.links: Mapping[str, Link] = {}
        self.links_read = 0  # how many readings have set `links`
        # Plans (awgd.plans): where each planned peer stands, when a verdict next changes by
        # itself (Unix seconds), and the peers close enough to their limit to sample often.
        self.plans: dict[PeerKey, PlanState] = {}
        self.plan_due: int | None = None
        self.hot: set[PeerKey] = set()
        # Peers suspected of stalling, or stalled (awgd.stalls): a few, looked at each sample.
        self.stalls: dict[PeerKey, Stall] = {}
        # Fleet plans (awgd.fleet_plans): the users with peers here as the centre last said,
        # each member's share of its window, and the centre's clock of the newest news.
        self.fleet_users: dict[str, FleetUser] = {}
        self.fleet_shares: dict[PeerKey, Share] = {}
        self.fleet_as_of: float | None = None
        self.fleet_members: dict[PeerKey, str] = {}  # every member peer here, and its user
        # Fleet users past their last warning threshold and below their limit: as for `hot`,
        # the interfaces are sampled every plans.fast_sampling_seconds (a scheduling hint only).
        self.fleet_hot: set[str] = set()
        # The current window of each (reset, anchor, zone) the fleet users have: reckoned once,
        # not once per user and sample (10,000 users share a handful).
        self._fleet_windows: dict[tuple[str, object, str], Window] = {}
        self._plans_due: int | None = None  # plan_due is the earlier of these two
        self._fleet_due: int | None = None

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        *,
        period: Period,
        peers: Iterable[LoadedPeer],
        interfaces: Mapping[str, InterfaceCheckpoint],
        open_period: tuple[int, int] | None,
        open_day: int | None,
        tracking_since: datetime | None,
        last_booked_at: datetime | None,
        earlier: Mapping[int, tuple[int, int]],
        blocked: Mapping[int, int] | None = None,
        settings: Mapping[PeerKey, Settings] | None = None,
        plans: Mapping[PeerKey, PlanState] | None = None,
        ups: Mapping[str, bool | None] | None = None,
        last_closed_day: int = 0,
        replaced: Mapping[PeerKey, str] | None = None,
        open_hour: int | None = None,
        stalls: Mapping[PeerKey, Stall] | None = None,
        fleet: FleetChanges | None = None,
    ) -> Books:
        """The books as the ledger left them. `earlier` is the current period's closed usage
        by peer id (Ledger.closed_period_usage), `blocked` what of the current period was
        booked while blocked (Ledger.blocked_usage). Nobody is present until a reading shows it."""
        blocked = blocked or {}
        books = cls(period)
        books.open_period, books.open_day, books.open_hour = open_period, open_day, open_hour
        books.last_closed_day = last_closed_day
        books.tracking_since, books.last_booked_at = tracking_since, last_booked_at
        for row in peers:
            book = books._add(row.interface, row.public_key, datetime.fromtimestamp(row.first_seen, UTC))
            book.id = row.id
            book.checkpoint_rx, book.checkpoint_tx, book.checkpoint_present = row.rx, row.tx, row.present
            book.lifetime_rx, book.lifetime_tx = row.lifetime_rx, row.lifetime_tx
            book.period_base_rx, book.period_base_tx = row.lifetime_rx - row.period_rx, row.lifetime_tx - row.period_tx
            book.day_base_rx, book.day_base_tx = row.lifetime_rx - row.day_rx, row.lifetime_tx - row.day_tx
            book.earlier_rx, book.earlier_tx = earlier.get(row.id, (0, 0))
            book.blocked_bytes = blocked.get(row.id, 0)
            books._next_id = max(books._next_id, row.id + 1)
        for name, checkpoint in interfaces.items():
            books.interfaces[name] = InterfaceBook(name, checkpoint)
        for (interface, public_key), kept in (settings or {}).items():
            settled = books.peers.get((interface, public_key))
            if settled is None:  # added, and not yet booked by a sample
                settled = books._add(interface, public_key, datetime.now(UTC))
            books._settle(settled, kept, loaded=True)
        for name, up in (ups or {}).items():
            if up is not None and name in books.interfaces:
                books.interfaces[name].was_up = up
        books.stalls = {key: stall for key, stall in (stalls or {}).items() if key in books.peers}
        for key, new_public_key in (replaced or {}).items():
            if (old := books.peers.get(key)) is not None:
                old.replaced_by = new_public_key
        books.apply(Judged({}, dict(plans or {}), [], fleet or FleetChanges()))
        books.aim_fleet(datetime.now(UTC))
        return books

    def aim_fleet(self, instant: datetime) -> None:
        """Where each fleet member is judged next, and which users are hot, from the books as
        they are (at start: the ledger keeps shares, not triggers). Decides nothing: a window
        that ended meanwhile is judged at the first sample (plan_due has passed)."""
        for user in self.fleet_users.values():
            window_start = unix(self.fleet_window(user, instant).start)
            members = [book for key in sorted(user.members) if (book := self.peers.get(key)) is not None]
            own = [
                (share, lifetime(book))
                for book in members
                if (share := self.fleet_shares.get(book.key)) is not None and share.user == user.user
            ]
            aims = self._aim_fleet_user(user, fleet_used(user, window_start, own), [lifetime(b) for b in members])
            for book, fleet_trigger in zip(members, aims, strict=True):
                book.fleet_trigger = fleet_trigger if book.key in self.fleet_shares else 0

    def _aim_fleet_user(self, user: FleetUser, usage: int, totals: list[int]) -> list[int | None]:
        """Whether the user is hot at `usage`, and its members' triggers (their lifetime
        totals being `totals`)."""
        if fleet_hot(user.plan, usage):
            self.fleet_hot.add(user.user)
        else:
            self.fleet_hot.discard(user.user)
        return member_triggers(fleet_margin(user.plan, usage), totals)

    def rekeyed(self, key: PeerKey, new_public_key: str, judged: Judged, at: datetime) -> None:
        """A peer's keys replaced (the ledger has it): its settings and plan progress left the
        old key for the new one (in `judged`), and the old key names its successor."""
        self.settle(*key, None, at)
        old = self.peers.get(key)
        if old is not None:
            old.replaced_by = new_public_key
            old.stamp = self._change()
        new = self.peers.get((key[0], new_public_key))
        if new is not None:
            new.replaced_by = None
        self.apply(judged)

    def apply(self, judged: Judged, *, every_plan: bool = False) -> None:
        """Decisions the ledger has stored (awgd.plans): settings, plans' progress.
        `every_plan`: every plan was judged, so the next instant due moves on too."""
        now = datetime.now(UTC)
        for (interface, public_key), settings in judged.settled.items():
            self.settle(interface, public_key, settings, now)
        for key, state in judged.states.items():
            if state is None:
                self.plans.pop(key, None)
            else:
                self.plans[key] = state
            self._aim(key)
        fleet = judged.fleet
        for user, held in fleet.users.items():
            if held is None:
                self.fleet_users.pop(user, None)
                self.fleet_hot.discard(user)
            else:
                self.fleet_users[user] = held
        for key, share in fleet.shares.items():
            if share is None:
                self.fleet_shares.pop(key, None)
            else:
                self.fleet_shares[key] = share
        for key, fleet_trigger in fleet.triggers.items():
            if (book := self.peers.get(key)) is not None:
                book.fleet_trigger = fleet_trigger
        if fleet.users:
            self.fleet_members = {key: user.user for user in self.fleet_users.values() for key in user.members}
        if fleet.as_of is not None:
            self.fleet_as_of = fleet.as_of
        if judged.states or every_plan:
            self._plans_due = next_due(
                (plan, state) for key, state in self.plans.items() if (plan := self.peers[key].settings.plan)
            )
        if fleet.users or every_plan:
            at = int(now.timestamp())
            due = [
                instant
                for user in self.fleet_users.values()
                if (instant := fleet_next_instant(user, self.fleet_window(user, now), at)) is not None
            ]
            self._fleet_due = min(due) if due else None
        dues = [due for due in (self._plans_due, self._fleet_due) if due is not None]
        self.plan_due = min(dues) if dues else None
        self.version += 1

    def _aim(self, key: PeerKey) -> None:
        """Where the peer's plan is judged next (its trigger), and whether it is hot."""
        book = self.peers.get(key)
        if book is None:
            return
        plan, state = book.settings.plan, self.plans.get(key)
        if plan is None or state is None:
            book.trigger = None
            self.hot.discard(key)
            return
        total = lifetime(book)
        book.trigger = trigger(plan, state.progress, total)
        if hot(plan, state.progress, total):
            self.hot.add(key)
        else:
            self.hot.discard(key)

    def judge(self, entry: Entry, instant: datetime, zone: ZoneInfo, schedule: str) -> None:
        """Judge the planned peers this entry concerns, into the entry, by the plans' rules
        (awgd.plans): a peer only when its booking carries it past its trigger, or every
        planned peer once an instant at which some verdict changes by itself has passed."""
        books = self
        if not books.plans:
            return
        at = int(instant.timestamp())
        judged = entry.judged
        # What blocked peers' devices sent is booked, and is not usage: their progress says so
        # first, and any verdict below starts from that (awgd.quota.Progress.blocked).
        states: dict[tuple[str, str], PlanState] = {}
        for book, amount in entry.blocked_books:
            state = books.plans.get(book.key)
            if book.settings.plan is not None and state is not None:
                states[book.key] = judged.states[book.key] = PlanState(
                    state.progress.booked_blocked(amount), state.window
                )
        due = books.plan_due is not None and at >= books.plan_due
        booked = chain(
            zip(entry.new_books, entry.new_counters, strict=True), zip(entry.moved_books, entry.moved, strict=True)
        )
        if due:
            deltas = {id(book): row[DRX] + row[DTX] for book, row in booked if book.settings.plan is not None}
            candidates = [(book, lifetime(book) + deltas.get(id(book), 0)) for book in books.planned()]
        else:
            candidates = [
                (book, total)
                for book, row in booked
                if book.trigger is not None and (total := lifetime(book) + row[DRX] + row[DTX]) >= book.trigger
            ]
        for book, total in candidates:
            plan = book.settings.plan
            state = states.get(book.key) or books.plans.get(book.key)
            if plan is None or state is None:
                continue
            found, after = verdict(plan, state, total, instant, zone=zone, schedule=schedule)
            if found.events or after != state:
                judged.states[book.key] = after
            decide(book, book.settings, found, at, judged)
        if due:
            entry.plans_due = True

    def judge_fleet(self, entry: Entry, instant: datetime) -> None:
        """Judge the fleet users this entry concerns (awgd.fleet_plans), into the entry: those
        with a member that moved, or every one once an instant at which some verdict changes
        by itself has passed. Costs nothing on a node without fleet users."""
        if not self.fleet_users:
            return
        shares, judged = self.fleet_shares, entry.judged
        for book, amount in entry.blocked_books:
            key = book.key
            share = judged.fleet.shares.get(key) or shares.get(key)
            if share is not None:
                judged.fleet.shares[key] = booked_blocked(share, amount)
        # One attribute per moving peer, as for a node plan's trigger: a user is judged only
        # when a member's booking carries it past its part of the user's margin.
        totals: dict[PeerBook, int] = {}
        crossed: list[PeerBook] = []
        for book, row in chain(
            zip(entry.new_books, entry.new_counters, strict=True), zip(entry.moved_books, entry.moved, strict=True)
        ):
            if (fleet_trigger := book.fleet_trigger) is not None:
                total = totals[book] = book.lifetime_rx + book.lifetime_tx + row[DRX] + row[DTX]
                if total >= fleet_trigger:
                    crossed.append(book)
        at = int(instant.timestamp())
        due = self.plan_due is not None and at >= self.plan_due
        if due:
            users = set(self.fleet_users)
            entry.plans_due = True
            for book, row in chain(
                zip(entry.new_books, entry.new_counters, strict=True),
                zip(entry.moved_books, entry.moved, strict=True),
            ):
                if book.fleet_trigger is None and book.key in self.fleet_members:
                    totals[book] = lifetime(book) + row[DRX] + row[DTX]
        else:
            users = {self.fleet_members[book.key] for book in crossed if book.key in self.fleet_members}
        for user in sorted(users):
            held = self.fleet_users.get(user)
            if held is not None:
                self.judge_fleet_user(held, instant, totals, judged)

    def judge_fleet_user(
        self, user: FleetUser, instant: datetime, totals: Mapping[PeerBook, int], judged: Judged
    ) -> int:
        """One fleet user's verdict at `instant`, into `judged`: its members' shares moved
        on to the current window, their fleet reasons and throttle, and where each member is
        judged next. `totals`: lifetime totals after a booking not yet committed. Returns the
        user's usage in the window."""
        at = int(instant.timestamp())
        window_start = unix(self.fleet_window(user, instant).start)
        own: list[tuple[Share, int]] = []
        members = [book for key in sorted(user.members) if (book := self.peers.get(key)) is not None]
        for book in members:
            key = book.key
            total = totals.get(book, lifetime(book))
            share = judged.fleet.shares.get(key) or self.fleet_shares.get(key)
            if share is None or share.user != user.user:
                after = Share(user.user, window_start, total)
            else:
                after = rolled(share, window_start, total)
            if after != share:
                judged.fleet.shares[key] = after
            own.append((after, total))
        usage = fleet_used(user, window_start, own)
        reasons, kbit = fleet_held(user.plan, usage, at), fleet_throttle(user.plan, usage)
        fleet_triggers = self._aim_fleet_user(user, usage, [total for _, total in own])
        for book, fleet_trigger in zip(members, fleet_triggers, strict=True):
            judged.fleet.triggers[book.key] = fleet_trigger
            self.decide_fleet(book, reasons, kbit, at, judged)
        return usage

    def fleet_window(self, user: FleetUser, instant: datetime) -> Window:
        """The user's plan's window containing `instant` (awgd.fleet_plans.FleetUser.window)."""
        plan = user.plan
        found = self._fleet_windows.get((plan.reset, plan.anchor, user.zone))
        if found is None or instant not in found:
            found = self._fleet_windows[(plan.reset, plan.anchor, user.zone)] = user.window(instant)
        return found

    def decide_fleet(self, book: PeerBook, reasons: frozenset[str], kbit: int | None, at: int, judged: Judged) -> None:
        """Record the fleet's verdict on one peer: its fleet reasons and throttle, with the
        block and throttle events of what changed. A node plan's reasons stay its own."""
        key = book.key
        settings = judged.settled.get(key, book.settings)
        if kbit != settings.fleet_throttled:
            judged.events.append(throttle_event(book, kbit, at))
            settings = judged.settled[key] = replace(settings, fleet_throttled=kbit)
        blocked = reasons_after(settings.blocked, reasons)
        if blocked != settings.blocked:
            judged.settled[key] = reblocked(book, settings, blocked, at, judged.events)

    def watch_stalls(self, entry: Entry, stall_seconds: int, zone: ZoneInfo) -> None:
        """Which peers this entry finds stalling or recovered (awgd.stalls), into the entry:
        the peers whose rx grew by whole initiations (a pass in C over the booked rows finds
        them), and those already suspected or stalled."""
        at = entry.at
        before = at if self._committed_at is None else unix(self._committed_at)
        seen: dict[PeerKey, tuple[PeerBook, int, int]] = {}
        at_drx, initiation = DRX, INITIATION_BYTES  # locals: a global costs a lookup per row
        for books, rows in ((entry.new_books, entry.new_counters), (entry.moved_books, entry.moved)):
            # Once per moving peer: the cheapest test Python has (map chains in C build an int
            # per row and cost twice as much, as does zipping the books in), then a pass in C
            # that finds the few that pass.
            whole = [not row[at_drx] % initiation for row in rows]
            for index in compress(range(len(rows)), whole):
                row = rows[index]
                if row[DRX] and row[DTX]:
                    book = books[index]
                    seen[book.key] = (book, row[DRX], row[DTX])
        for key in self.stalls.keys() - seen.keys():
            watched = self.peers.get(key)
            if watched is not None:  # its growth since its checkpoint (not committed yet): rules 3 and 4
                rx, tx = watched.session
                drx = rx - watched.checkpoint_rx if rx >= watched.checkpoint_rx else rx
                seen[key] = (watched, drx, tx - watched.checkpoint_tx if tx >= watched.checkpoint_tx else tx)
        for key, (book, drx, dtx) in seen.items():
            stall = self.stalls.get(key)
            if not book.present:
                if stall is not None:
                    entry.stalls[key] = None  # it left its interface: nothing to be stalled on
                    if stall.announced:
                        entry.stall_rows[key] = None
                continue
            after, kind = observe(
                stall,
                drx=drx,
                dtx=dtx,
                handshake=book.latest_handshake,
                at=at,
                before=before,
                stall_seconds=stall_seconds,
            )
            if after != stall:
                entry.stalls[key] = after
            was, now = stall is not None and stall.announced, after is not None and after.announced
            if was != now:
                entry.stall_rows[key] = after
            if kind is not None:
                since = (after or stall).since  # type: ignore[union-attr]  # one of them is a stall
                data = {"since": iso(since, zone)} if kind == "peer.stalled" else {"stalled_since": iso(since, zone)}
                entry.judged.events.append(Event(kind, at, book.interface, book.public_key, data))

    def stalled_counts(self) -> dict[str, int]:
        """Per interface: its peers announced as stalled."""
        counts: dict[str, int] = {}
        for (interface, _), stall in self.stalls.items():
            if stall.announced:
                counts[interface] = counts.get(interface, 0) + 1
        return counts

    def stalled(self, book: PeerBook) -> bool:
        """Announced as stalled (awgd.stalls), and not recovered since."""
        stall = self.stalls.get(book.key)
        return stall is not None and stall.announced

    def planned(self) -> list[PeerBook]:
        return [self.peers[key] for key in self.plans if key in self.peers]

    def settle(self, interface: str, public_key: str, settings: Settings | None, at: datetime) -> PeerBook | None:
        """An admin's decision (the ledger has it): the peer's settings, its book made if a
        sample has not seen it yet. None removes the settings; a book no sample ever saw
        then goes too."""
        book = self.peers.get((interface, public_key))
        if settings is None:
            self.blocking.discard((interface, public_key))
            self.restoring.discard((interface, public_key))
            self.plans.pop((interface, public_key), None)
            self.hot.discard((interface, public_key))
            if (interface, public_key) in self.shaped:
                self.shaped.discard((interface, public_key))
                self.shaping_stamp += 1
            self.version += 1
            if book is None:
                return None
            book.settings = NO_SETTINGS
            book.trigger = None
            book.stamp = self._change()
            if book.id is None and book.line is None:
                self._drop(book)
                return None
            return book
        if book is None:
            book = self._add(interface, public_key, at)
        self._settle(book, settings, loaded=False)
        book.stamp = self._change()
        self.version += 1
        return book

    def _settle(self, book: PeerBook, settings: Settings, *, loaded: bool) -> None:
        was_blocked = bool(book.settings.blocked)
        book.settings = settings
        key = book.key
        if settings.plan is None and key in self.plans:
            del self.plans[key]
        if settings.plan is None or key not in self.plans:
            book.trigger = None
            self.hot.discard(key)
        if settings.rate_limit is not None or settings.throttle is not None:
            self.shaped.add(key)
            self.shaping_stamp += 1
        elif key in self.shaped:
            self.shaped.discard(key)
            self.shaping_stamp += 1
        if settings.blocked:
            self.blocking.add(key)
            self.restoring.discard(key)
        else:
            self.blocking.discard(key)
            if (was_blocked or loaded) and settings.allowed_ips:
                self.restoring.add(key)

    def _drop(self, book: PeerBook) -> None:
        if book.key in self.shaped:
            self.shaped.discard(book.key)
            self.shaping_stamp += 1
        del self.peers[book.key]
        del self.members[book.interface][book.public_key]
        others = [other for other in self.by_key[book.public_key] if other is not book]
        if others:
            self.by_key[book.public_key] = others
        else:
            del self.by_key[book.public_key]

    def restored(self, book: PeerBook) -> None:
        """Its allowed IPs are live again: nothing left to restore."""
        self.restoring.discard(book.key)

    def watch(self, watched: frozenset[str]) -> None:
        """List the interfaces the config names, even before a reading shows them."""
        for name in watched:
            book = self.interfaces.get(name)
            if book is None:
                book = self.interfaces[name] = InterfaceBook(name)
            book.listed = True
        self.version += 1

    def name_peers(self, names: Names) -> None:
        """The names found in the operator's files (awgd.peer_names), for every peer."""
        self._names = names
        change = self._change()
        for book in self.peers.values():
            found = names.of(book.interface, book.public_key)
            if found != book.found_name:
                book.found_name = found
                book.stamp = change
        self.version += 1

    def address_interfaces(self, addresses: Mapping[str, tuple[str, ...]]) -> None:
        for name, found in addresses.items():
            book = self.interfaces.get(name)
            if book is not None and book.addresses != found:
                book.addresses = found
                self.version += 1

    def _add(self, interface: str, public_key: str, first_seen: datetime) -> PeerBook:
        self._serials += 1
        book = PeerBook(
            interface,
            public_key,
            first_seen,
            found_name=self._names.of(interface, public_key),
            stamp=self._change(),
            serial=self._serials,
        )
        self.peers[(interface, public_key)] = book
        self.members.setdefault(interface, {})[public_key] = book
        self.by_key.setdefault(public_key, []).append(book)
        return book

    # ---- where a sample is booked --------------------------------------------------------

    def target(self, instant: datetime, schedule: str, zone: ZoneInfo, *, hours: bool = True) -> Target:
        """The period, local day and (with `hours`) local hour that contain `instant`
        (croniter is slow to ask, and nearly every sample falls in the same period as the last)."""
        cached = self._period_of
        if cached is None or cached[0] != schedule or cached[1] != zone or instant not in cached[2]:
            cached = self._period_of = (schedule, zone, period_containing(instant, schedule, zone))
        return Target(cached[2], local_day(instant, zone), unix(hour_start(instant, zone)) if hours else None)

    # ---- a sample --------------------------------------------------------------------------

    def take(self, reading: Reading, *, watched: frozenset[str], target: Target) -> Entry:
        """Show what `reading` saw, and work out what it books (the rules of awgd.accounting).

        `watched` empty = every interface. Interfaces outside it, like those the tool could
        not read, keep their books as they are: narrowing the list never makes peers absent.
        """
        taken = reading.taken_at
        baseline = self.tracking_since is None
        self._change()
        entry = Entry(taken, unix(taken), target, baseline, self.open_period, self.open_day, self.open_hour)
        read = [i for i in reading.interfaces if not watched or i.name in watched]
        links = reading.links or {}
        boot_id = reading.boot_id
        next_id = self._next_id
        in_step = self._in_step
        for iface in read:
            name = iface.name
            ifindex = links[name].ifindex if name in links else None
            book_iface = self.interfaces.get(name)
            if book_iface is None:
                book_iface = self.interfaces[name] = InterfaceBook(name)
            restart = restarted(book_iface.checkpoint, ifindex, boot_id)
            checkpoint = InterfaceCheckpoint(ifindex, boot_id)
            if book_iface.checkpoint != checkpoint:
                entry.interfaces[name] = checkpoint
            members = self.members.get(name)
            if members is None:
                members = self.members[name] = {}
            changed = iface.changed
            if restart or changed is None or name not in in_step:
                next_id = self._take_all(
                    entry, name, members, iface, restart=restart, baseline=baseline, next_id=next_id, taken=taken
                )
            else:
                self._take_changed(entry, members, changed)
        gone = set(self.members) - {i.name for i in read} - reading.unread
        if watched:
            gone &= watched
        for name in gone:  # read before, and neither read nor unread now
            for book in self.members[name].values():
                self._absent(entry, book, taken)
        entry.in_step = frozenset(i.name for i in read)
        if self.blocking:
            self._take_blocked(entry)
        if entry.movers:
            bounds, day = target.bounds, day_number(target.day)
            if self.open_period != bounds:
                entry.close_period, entry.open_period = self.open_period, bounds
            if self.open_day != day:
                entry.close_day, entry.open_day = self.open_day, day
            if target.hour is not None and self.open_hour != target.hour:
                entry.close_hour, entry.open_hour = self.open_hour, target.hour
        self._see_interfaces(reading, read, watched)
        self._see_ups(entry)
        self.version += 1
        return entry

    def _see_ups(self, entry: Entry) -> None:
        """interface.up and interface.down: an interface that stops or starts being up, or
        vanishes or appears. The first sight of one only records it."""
        for name, book in self.interfaces.items():
            if book.up != book.was_up and (book.listed or book.was_up):
                entry.ups[name] = book.up
                if book.was_up is not None:
                    kind = "interface.up" if book.up else "interface.down"
                    entry.judged.events.append(Event(kind, entry.at, name, None, {}))

    def order(self, interface: str) -> dict[str, int]:
        """The rank of each of the interface's books, in the order they were made: loaded in
        the ledger's id order, then new ones in the order samples first saw them, which is
        the order their ids are given in. DumpParser keeps dumps in a new order each time
        (Go's map order) in it, so that a sample visits lines, books and ledger rows front to
        back (tests/bench/NOTES.md)."""
        return dict(zip(self.members.get(interface, ()), count()))

    def _take_changed(self, entry: Entry, members: dict[str, PeerBook], changed: tuple[Peer, ...]) -> None:
        """The fast path: the interface lists the same keys as the dump its checkpoints were
        booked from, and these peers' lines changed since. So every one of them is present,
        booked and was present at its checkpoint, and only rules 3 and 4 can apply. Runs once
        per moving peer (every peer of a busy 50,000-peer server), so it is written lean."""
        moved, moved_books = entry.moved, entry.moved_books
        movers = 0
        change = self.changes
        for peer in changed:
            book = members[peer[0]]
            book.line = peer
            rx, tx = peer[4], peer[5]
            old_rx, old_tx = book.checkpoint_rx, book.checkpoint_tx
            if rx == old_rx and tx == old_tx:
                book.stamp = change  # its handshake (or endpoint) changed: nothing to book
                continue
            drx = rx - old_rx if rx >= old_rx else rx  # rules 3 and 4
            dtx = tx - old_tx if tx >= old_tx else tx
            if drx or dtx:
                movers += 1
            moved.append((rx, tx, drx, dtx, book.id))  # type: ignore[arg-type]  # booked
            moved_books.append(book)
        entry.movers += movers

    def _take_all(
        self,
        entry: Entry,
        name: str,
        members: dict[str, PeerBook],
        iface: Interface,
        *,
        restart: bool,
        baseline: bool,
        next_id: int,
        taken: datetime,
    ) -> int:
        """The full path: every peer of the interface, by every rule of accounting.delta."""
        for peer in iface.peers:
            key, rx, tx = peer[0], peer[4], peer[5]
            book = members.get(key)
            if book is None:
                book = self._add(name, key, taken)
            if book.line != peer:
                book.stamp = self.changes
            book.line = peer
            if not book.present:
                book.present = True
                book.seen_at = taken
                book.stamp = self.changes
            if book.id is None:  # rule 5: never booked
                drx, dtx = (0, 0) if baseline else (rx, tx)
                entry.new.append((next_id, name, key, entry.at))
                entry.new_counters.append((rx, tx, drx, dtx, next_id))
                entry.new_books.append(book)
                next_id += 1
            else:
                if not book.checkpoint_present:
                    drx, dtx = rx, tx  # rule 2
                    entry.back.append((book.id,))
                elif restart:
                    drx, dtx = rx, tx  # rule 1
                else:
                    old_rx, old_tx = book.checkpoint_rx, book.checkpoint_tx
                    if rx == old_rx and tx == old_tx:
                        continue  # idle: nothing to book, nothing to write
                    drx = rx - old_rx if rx >= old_rx else rx  # rules 3 and 4
                    dtx = tx - old_tx if tx >= old_tx else tx
                entry.moved.append((rx, tx, drx, dtx, book.id))
                entry.moved_books.append(book)
            if drx or dtx:
                entry.movers += 1
        if len(members) != len(iface.peers):  # some books were not listed: those peers are gone
            listed = {peer.public_key for peer in iface.peers}
            for key, book in members.items():
                if key not in listed:
                    self._absent(entry, book, taken)
        return next_id

    def _take_blocked(self, entry: Entry) -> None:
        """The bookings of blocked peers: a pass in C over the booked peers, a loop over the
        few that are blocked."""
        held = {book for key in self.blocking if (book := self.peers.get(key)) is not None}
        booked = list(chain(entry.new_books, entry.moved_books))
        rows = chain(entry.new_counters, entry.moved)
        for book, row in compress(zip(booked, rows, strict=True), map(held.__contains__, booked)):
            amount = row[DRX] + row[DTX]
            if amount:
                entry.blocked.append((row[PEER_ID], amount))
                entry.blocked_books.append((book, amount))

    def _absent(self, entry: Entry, book: PeerBook, taken: datetime) -> None:
        if book.present or book.seen_at is None:
            book.present = False
            book.seen_at = taken
            book.stamp = self.changes
        if book.id is not None and book.checkpoint_present:
            entry.gone.append((book.id,))
            entry.gone_books.append(book)

    def _see_interfaces(self, reading: Reading, read: list[Interface], watched: frozenset[str]) -> None:
        by_name = {i.name: i for i in read}
        links, unread = reading.links, reading.unread
        if links is not None and reading.qdiscs:  # the shaper's view: `ip`'s, with root qdiscs
            self.links = links
            self.links_read += 1
        names = set(by_name) | set(watched) | {n for n in unread if not watched or n in watched}
        for name in names:
            book = self.interfaces.get(name)
            if book is None:
                book = self.interfaces[name] = InterfaceBook(name)
            book.listed = True
            iface = by_name.get(name)
            link = links.get(name) if links is not None else None
            book.exists = iface is not None or name in unread or link is not None
            # Not listed by `ip` (or `ip` failed) but answered by the tool: trust the tool.
            book.up = link.up if link is not None else book.exists
            book.read = iface is not None
            book.reader = reading.readers.get(name, "tool") if iface is not None else None
            if iface is not None:
                book.public_key = iface.public_key
                book.listen_port = iface.listen_port
                book.peers = len(iface.peers)
                book.read_at = reading.taken_at
                book.awg = iface.awg
        for name, book in self.interfaces.items():
            if name not in names:  # gone: its checkpoint stays, for when it comes back
                book.listed = book.exists = book.up = book.read = False

    def commit(self, entry: Entry) -> None:
        """Apply an entry the ledger has written."""
        change = self._change()
        if entry.close_period is not None:
            was_current = entry.close_period == self.period_bounds
            for book in self.peers.values():  # the running totals moved into period_usage
                book.stamp = change
                if was_current:
                    book.earlier_rx += book.lifetime_rx - book.period_base_rx
                    book.earlier_tx += book.lifetime_tx - book.period_base_tx
                book.period_base_rx, book.period_base_tx = book.lifetime_rx, book.lifetime_tx
        if entry.close_day is not None:
            self.last_closed_day = max(self.last_closed_day, entry.close_day)
            for book in self.peers.values():
                if book.lifetime_rx != book.day_base_rx or book.lifetime_tx != book.day_base_tx:
                    # Its day is now whole in the ledger (with any row the day had before a
                    # clock went back): traffic.changes sends it again from there.
                    book.stamp = change
                book.day_base_rx, book.day_base_tx = book.lifetime_rx, book.lifetime_tx
        if entry.open_period != self.open_period or entry.open_day != self.open_day:
            self.openings.append((change, entry.open_period, entry.open_day))
            del self.openings[:-OPENINGS_KEPT]
        self.open_period, self.open_day, self.open_hour = entry.open_period, entry.open_day, entry.open_hour
        for key, stall in entry.stalls.items():
            if stall is None:
                self.stalls.pop(key, None)
            else:
                self.stalls[key] = stall
        for book, row in zip(entry.new_books, entry.new_counters, strict=True):
            book.id = row[PEER_ID]
        # Once per booked peer: inline, and both kinds of rows in one loop (the same shape).
        books = chain(entry.new_books, entry.moved_books)
        rows = chain(entry.new_counters, entry.moved)
        for book, (rx, tx, drx, dtx, _) in zip(books, rows, strict=True):
            book.checkpoint_rx, book.checkpoint_tx = rx, tx
            book.checkpoint_present = True
            book.lifetime_rx += drx
            book.lifetime_tx += dtx
            book.stamp = change
        for book in entry.gone_books:
            book.checkpoint_present = False
            book.stamp = change
        if entry.target.bounds == self.period_bounds:
            for book, amount in entry.blocked_books:
                book.blocked_bytes += amount
        for name, checkpoint in entry.interfaces.items():
            self.interfaces.setdefault(name, InterfaceBook(name)).checkpoint = checkpoint
        if entry.judged or entry.plans_due:
            self.apply(entry.judged, every_plan=entry.plans_due)
        for name, up in entry.ups.items():
            self.interfaces.setdefault(name, InterfaceBook(name)).was_up = up
        if entry.new:
            self._next_id = entry.new[-1][0] + 1
        if entry.first:
            self.tracking_since = entry.taken_at
        if not entry.empty:
            self.last_booked_at = entry.taken_at
        previous, self._committed_at = self._committed_at, entry.taken_at
        seconds = 0.0 if previous is None else (entry.taken_at - previous).total_seconds()
        self._moves = (entry.moved_books, entry.moved, seconds)
        self._in_step = entry.in_step
        self.version += 1

    def failed(self) -> None:
        """The ledger could not write the last entry: nothing of it is applied, and the next
        sample compares every peer with its checkpoint."""
        self._in_step = frozenset()

    # ---- the rollover -------------------------------------------------------------------

    def roll(self, period: Period, earlier: Mapping[int, tuple[int, int]], blocked: Mapping[int, int]) -> None:
        """Enter a new current period. `earlier` is what the ledger already holds for it, by
        peer id, outside its running totals (Ledger.closed_period_usage), `blocked` what of
        it was booked while blocked (Ledger.blocked_usage): normally nothing."""
        self._period = period
        self._period_bounds = (unix(period.start), unix(period.end))
        change = self._change()
        for book in self.peers.values():
            book.earlier_rx, book.earlier_tx = earlier.get(book.id, (0, 0)) if book.id is not None else (0, 0)
            book.blocked_bytes = blocked.get(book.id, 0) if book.id is not None else 0
            book.stamp = change
        self.version += 1

    @property
    def period(self) -> Period:
        """The current period: the one shown."""
        return self._period

    @property
    def period_bounds(self) -> tuple[int, int]:
        return self._period_bounds

    # ---- traffic.reset --------------------------------------------------------------------

    def reset(self, book: PeerBook, period: tuple[int, int]) -> None:
        """The ledger zeroed this peer's usage in `period` (start, end): its row there, and its
        running totals if they belong to it."""
        if period == self.period_bounds:
            book.earlier_rx = book.earlier_tx = 0
            book.blocked_bytes = 0
        if period == self.open_period:
            book.period_base_rx, book.period_base_tx = book.lifetime_rx, book.lifetime_tx
        book.stamp = self._change()
        self.version += 1

    @property
    def day_reopened(self) -> bool:
        return self.open_day is not None and self.open_day <= self.last_closed_day

    def _change(self) -> int:
        self.changes += 1
        return self.changes

    # ---- reads -----------------------------------------------------------------------------

    def period_usage(self, book: PeerBook) -> tuple[int, int]:
        """The peer's usage in the current period."""
        if self.open_period == self._period_bounds:
            return (
                book.earlier_rx + book.lifetime_rx - book.period_base_rx,
                book.earlier_tx + book.lifetime_tx - book.period_base_tx,
            )
        return book.earlier_rx, book.earlier_tx

    def find(self, public_key: str) -> list[PeerBook]:
        return self.by_key.get(public_key, [])

    def rate(self, book: PeerBook) -> tuple[int, int]:
        """Bytes per second (rx, tx) between the last two samples; (0, 0) for a peer that did
        not move in the last one (or the first sample, which has no interval)."""
        version, rates = self._rates
        if version != self.version:
            movers, rows, seconds = self._moves
            rates = {}
            if seconds > 0:
                rates = {
                    id(mover): (round(row[DRX] / seconds), round(row[DTX] / seconds))
                    for mover, row in zip(movers, rows, strict=True)
                }
            self._rates = (self.version, rates)
        return rates.get(id(book), (0, 0))

    def sampled_at(self, book: PeerBook) -> datetime | None:
        """When the figures shown for this peer were read."""
        if book.present:
            iface = self.interfaces.get(book.interface)
            if iface is not None and iface.read_at is not None:
                return iface.read_at
        return book.seen_at

    def summary(self, online_window: int) -> dict[str, InterfaceSummary]:
        """Per interface: the current period's totals and how many peers are online.

        Asked on every press of a bot's status button, so it is computed once per change
        (or once a second, for the online count), in C-level passes rather than a loop.
        """
        now = time.time()
        cached = self._summary
        if cached is not None and cached[0] == self.version and now - cached[1] < 1:
            return cached[2]
        cutoff = now - online_window  # > 0, so a handshake of 0 (never) is never online
        running = self.open_period == self.period_bounds
        result = {}
        for name, members in self.members.items():
            books = members.values()
            rx = sum(map(_EARLIER_RX, books))
            tx = sum(map(_EARLIER_TX, books))
            if running:
                rx += sum(map(_LIFETIME_RX, books)) - sum(map(_PERIOD_BASE_RX, books))
                tx += sum(map(_LIFETIME_TX, books)) - sum(map(_PERIOD_BASE_TX, books))
            present = compress(books, map(_PRESENT, books))  # a present book has its line
            online = sum(map(cutoff.__le__, map(_HANDSHAKE, present)))
            result[name] = InterfaceSummary(rx, tx, online)
        self._summary = (self.version, now, result)
        return result

    def peers_seen(self) -> int:
        return sum(book.peers for book in self.interfaces.values() if book.read)

    def __iter__(self) -> Iterator[PeerBook]:
        return iter(self.peers.values())


def online(book: PeerBook, now: float, window: int) -> bool:
    """Online: configured now, with a handshake within the online window."""
    handshake = book.latest_handshake
    return book.present and handshake > 0 and now - handshake <= window
