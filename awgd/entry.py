"""What a sample books, in the shapes the ledger writes (awgd.ledger): the entry the books
work out from a reading (awgd.books.Books.take), where it is booked, and the peers as the
ledger loads them. Plain data: neither the ledger nor the plans' rules need the books."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from awgd.accounting import InterfaceCheckpoint, PeerKey
from awgd.periods import Period
from awgd.plans import Judged
from awgd.stalls import Stall

if TYPE_CHECKING:
    from awgd.books import PeerBook


def day_number(day: date) -> int:
    """A local day as the integer YYYYMMDD: compact, sortable, and readable in sqlite3."""
    return day.year * 10000 + day.month * 100 + day.day


def day_from_number(number: int) -> date:
    return date(number // 10000, number // 100 % 100, number % 100)


def unix(instant: datetime) -> int:
    return int(instant.timestamp())


@dataclass(frozen=True, slots=True)
class Target:
    """Where a sample is booked: a billing period, a local day, and the local hour's start
    (Unix seconds; None while hourly history is off)."""

    period: Period
    day: date
    hour: int | None = None

    @property
    def bounds(self) -> tuple[int, int]:
        return (unix(self.period.start), unix(self.period.end))


# A booked peer's counters row (Entry.new_counters, Entry.moved): the reading's counters, what
# it books, and whose, in the order the ledger's statements bind them (?1..?5). Plain tuples,
# one per moving peer per sample (a NamedTuple's construction shows in the benchmark), read
# by these indexes.
RX, TX, DRX, DTX, PEER_ID = range(5)


@dataclass(slots=True)
class Entry:
    """One sample's booking, in the shapes the ledger writes (awgd.ledger):

    - new: (peer_id, interface, public_key, first_seen) for each peer booked the first time;
    - new_counters: (rx, tx, drx, dtx, peer_id), their counters rows (present);
    - moved: (rx, tx, drx, dtx, peer_id) for each present peer booked before whose checkpoint
      changed (its counters moved, or it came back);
    - back: (peer_id,) for each of those that was not present at its checkpoint (it came back);
    - blocked: (peer_id, rx + tx) for each booked peer that was blocked (blocked_books: the
      same with its book), booked to the target period's blocked_usage row;
    - gone: (peer_id,) for each peer that was present at its checkpoint and is not now;
    - close_period / close_day / close_hour: the open period (start, end) / day / hour to
      close first, if any;
    - open_period / open_day / open_hour: what the running totals belong to afterwards.

    The running totals only move when something is booked (`moved`), so an idle sample, or
    one that only records a peer's absence, closes nothing and writes no total.
    """

    taken_at: datetime
    at: int
    target: Target
    first: bool  # the first booking of a new ledger: it sets tracking_since
    open_period: tuple[int, int] | None = None
    open_day: int | None = None
    open_hour: int | None = None
    close_period: tuple[int, int] | None = None
    close_day: int | None = None
    close_hour: int | None = None
    new: list[tuple[int, str, str, int]] = field(default_factory=list)
    new_counters: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    new_books: list[PeerBook] = field(default_factory=list)
    moved: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    moved_books: list[PeerBook] = field(default_factory=list)
    back: list[tuple[int]] = field(default_factory=list)
    blocked: list[tuple[int, int]] = field(default_factory=list)
    blocked_books: list[tuple[PeerBook, int]] = field(default_factory=list)
    gone: list[tuple[int]] = field(default_factory=list)
    gone_books: list[PeerBook] = field(default_factory=list)
    interfaces: dict[str, InterfaceCheckpoint] = field(default_factory=dict)
    movers: int = 0  # peers with a non-zero delta
    in_step: frozenset[str] = frozenset()  # interfaces whose checkpoints then match the parser's dump
    judged: Judged = field(default_factory=Judged.nothing)  # plans (awgd.plans), written with the rest
    plans_due: bool = False  # every plan was judged: the books' plan_due moves on
    ups: dict[str, bool] = field(default_factory=dict)  # interfaces whose up state changed
    # Peers whose stall state (awgd.stalls) changed: the books take it at commit; of them, those
    # whose announcement began or ended are the ledger's to keep (None: it ended).
    stalls: dict[PeerKey, Stall | None] = field(default_factory=dict)
    stall_rows: dict[PeerKey, Stall | None] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        booked = self.new or self.moved or self.gone or self.interfaces or self.first
        return not (booked or self.judged or self.ups or self.stall_rows)


@dataclass(frozen=True, slots=True)
class LoadedPeer:
    """A peer as the ledger holds it (awgd.ledger.Ledger.load)."""

    id: int
    interface: str
    public_key: str
    first_seen: int
    present: bool
    rx: int
    tx: int
    lifetime_rx: int
    lifetime_tx: int
    period_rx: int
    period_tx: int
    day_rx: int
    day_tx: int
