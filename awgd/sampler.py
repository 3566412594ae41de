"""One sample's booking: account a reading against the checkpoints, and book it.

The booking is I/O (reading the system is awgd.system_reader's); `observe` (reading -> accounting input) is pure.
The in-memory checkpoints advance only after the ledger has committed, so a failed
write leaves both exactly as they were and the next sample recomputes from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from awgd.accounting import Counters, InterfaceCheckpoint, Observation, PeerKey, account, advance, restarted
from awgd.dump_parser import Peer
from awgd.ledger import Ledger
from awgd.peer_changes import changed_peers
from awgd.periods import Period, local_day, period_containing
from awgd.system_reader import Reading

Booked = Mapping[str, tuple[Peer, ...]]  # interface -> its peers in the last booked reading


def observe(
    reading: Reading,
    watched: Collection[str],
    known: Iterable[str],
    booked: Booked | None = None,
    interfaces: Mapping[str, InterfaceCheckpoint] | None = None,
) -> Observation:
    """What the accounting needs from a reading; `watched` empty = every interface.

    Interfaces outside `watched` are treated like unread ones: their checkpoints stay
    as they are, so narrowing the list in the config never marks their peers absent.

    `booked` is the peers of the last reading whose booking committed, and `interfaces`
    the checkpoints that booking left: with them, an interface listing the same keys as
    then, and not restarted, passes only its changed peers (Observation.only_changed).
    """
    chosen = [i for i in reading.interfaces if not watched or i.name in watched]
    unread = set(reading.unread)
    if watched:
        unread.update(name for name in known if name not in watched)
    links = reading.links or {}
    ifindexes = {name: links[name].ifindex for name in (i.name for i in chosen) if name in links}
    counters: dict[str, dict[str, Counters]] = {}
    only_changed = set()
    for iface in chosen:
        peers: Iterable[Peer] = iface.peers
        before = None if booked is None or interfaces is None else booked.get(iface.name)
        if before is not None and interfaces is not None:
            old = interfaces.get(iface.name)
            if old is not None and not restarted(old, ifindexes.get(iface.name), reading.boot_id):
                changed = changed_peers(before, iface.peers)
                if changed is not None:
                    peers = changed
                    only_changed.add(iface.name)
        # Indexes, not attribute names: once per moving peer, and a NamedTuple's fields are
        # properties. 0, 4, 5 = public_key, rx_bytes, tx_bytes.
        counters[iface.name] = {p[0]: (p[4], p[5]) for p in peers}
    return Observation(
        counters=counters,
        ifindexes=ifindexes,
        boot_id=reading.boot_id,
        unread=frozenset(unread),
        only_changed=frozenset(only_changed),
    )


def booked_after(before: Booked, reading: Reading, observation: Observation) -> dict[str, tuple[Peer, ...]]:
    """`before` advanced by a committed booking of `reading`: what the checkpoints now match."""
    after = {name: peers for name, peers in before.items() if name in observation.unread}
    after.update((i.name, i.peers) for i in reading.interfaces if i.name in observation.counters)
    return after


@dataclass(frozen=True, slots=True)
class SampleResult:
    reading: Reading
    period: Period
    day: date
    rows_written: int
    deltas: dict[PeerKey, Counters]

    @property
    def peers_moved(self) -> int:
        return len(self.deltas)


class Sampler:
    def __init__(
        self,
        ledger: Ledger,
        *,
        watched: Collection[str],
        schedule: str,
        zone: ZoneInfo,
    ) -> None:
        self.ledger = ledger
        self.watched = frozenset(watched)
        self.schedule = schedule
        self.zone = zone
        self.peers, self.interfaces = ledger.checkpoints()
        self.booked: dict[str, tuple[Peer, ...]] = {}
        self._period: tuple[tuple[str, ZoneInfo], Period] | None = None

    async def book(self, reading: Reading, *, book_to: tuple[Period, date] | None = None) -> SampleResult:
        """Book one reading. `book_to` overrides where its deltas go (a boundary sample)."""
        known = set(self.peers) | set(self.interfaces)
        observation = observe(reading, self.watched, known, self.booked, self.interfaces)
        booking = account(self.peers, self.interfaces, observation, first_sample=self.ledger.is_new)
        period, day = book_to or self.booking_for(reading.taken_at)
        written = await asyncio.to_thread(self.ledger.apply, booking, at=reading.taken_at, period=period, day=day)
        advance(self.peers, self.interfaces, booking)
        self.booked = booked_after(self.booked, reading, observation)
        return SampleResult(reading, period, day, written, booking.deltas)

    def booking_for(self, instant: datetime) -> tuple[Period, date]:
        # croniter takes ~170 us to find a period; nearly every sample falls in the last one.
        rule = (self.schedule, self.zone)
        cached = self._period
        if cached is None or cached[0] != rule or not cached[1].start <= instant < cached[1].end:
            cached = self._period = (rule, period_containing(instant, self.schedule, self.zone))
        return cached[1], local_day(instant, self.zone)
