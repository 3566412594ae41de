"""The daemon's booking path without the daemon: books loaded from a real ledger file, each
reading taken, written and committed exactly as awgd.sampling does it; and what the ledger
holds, read back through the ledger (a bare SELECT on the bucket tables misses the running
totals of the open period and day)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from awgd.bookkeeper import Bookkeeper
from awgd.books import Books
from awgd.dump_parser import Interface, Peer
from awgd.entry import Entry, Target
from awgd.ip_link import Link
from awgd.ledger import Ledger, LedgerError
from awgd.periods import period_containing
from awgd.system_reader import Reading

MONTHLY = "0 0 1 * *"


class Booking:
    def __init__(self, path: Path, zone: ZoneInfo, schedule: str = MONTHLY, at: datetime | None = None) -> None:
        self.ledger = Ledger.open(f"sqlite:///{path}")
        self.zone, self.schedule = zone, schedule
        self.books: Books = Bookkeeper.load(
            self.ledger, period_containing(at or datetime.now(zone), schedule, zone), zone, schedule
        ).books

    def book(self, reading: Reading, *, watched: frozenset[str] = frozenset(), target: Target | None = None) -> Entry:
        """Take, write and commit one reading; a failed write leaves the books as they were."""
        target = target or self.books.target(reading.taken_at, self.schedule, self.zone)
        entry = self.books.take(reading, watched=watched, target=target)
        try:
            self.ledger.write(entry)
        except LedgerError:
            self.books.failed()
            raise
        self.books.commit(entry)
        return entry

    def close(self) -> None:
        self.ledger.close()


def reading(
    at: datetime,
    counters: dict[str, dict[str, tuple[int, int]]],
    *,
    ifindexes: dict[str, int] | None = None,
    boot_id: str | None = "boot",
    unread: frozenset[str] = frozenset(),
) -> Reading:
    """A reading of interfaces whose peers have these (rx, tx) counters."""
    interfaces = tuple(
        Interface(
            name,
            None,
            51820,
            None,
            "wg",
            tuple(Peer(key, None, (), 0, rx, tx, None) for key, (rx, tx) in peers.items()),
        )
        for name, peers in counters.items()
    )
    links = {name: Link(index, True) for name, index in (ifindexes or dict.fromkeys(counters, 1)).items()}
    return Reading(at, "wg", interfaces, unread, links, boot_id, ())


def booked(path: Path, public_key: str, granularity: str = "period") -> dict[str, list[tuple[int, int, int]]]:
    """Per interface holding the key: its buckets (start, rx, tx), newest first, as booked."""
    ledger = Ledger.open(f"sqlite:///{path}")
    try:
        contents = ledger.load()
        return {
            peer.interface: [
                (bucket.start, bucket.rx, bucket.tx)
                for bucket in ledger.history(
                    peer.id, granularity, 1000, open_period=contents.open_period, open_day=contents.open_day
                )
            ]
            for peer in contents.peers
            if peer.public_key == public_key
        }
    finally:
        ledger.close()


def booked_total(path: Path, public_key: str) -> int:
    """Every byte the ledger booked to any period for this key, on any interface."""
    return sum(rx + tx for buckets in booked(path, public_key).values() for _, rx, tx in buckets)
