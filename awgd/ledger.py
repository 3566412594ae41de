"""The SQLite ledger (SQLAlchemy Core): books samples, answers the API's queries.

Every sample is applied in one transaction: deltas into the period, day and lifetime
totals together with the new checkpoints. A crash before the commit loses nothing (the
next sample recomputes from the old checkpoint); a crash after it counts nothing twice.
Only peers whose checkpoint changed are written, so an idle sample writes no row, and a
moving peer is one row: its checkpoint and its running totals for the open period and
day share its `peer_counters` row (ledger_schema). The first sample booked to another period or
day first closes the open one, moving the running totals into the bucket tables in the
same transaction; on a 50,000-peer server that is one set-wise statement per table, once
a day.

Works on SQLAlchemy 1.4.46 (Debian 12, with future=True) and 2.x. One connection is
shared under a lock, because the daemon is the ledger's only writer and may call it from
a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from awgd.accounting import Booking, InterfaceCheckpoint, PeerCheckpoint, PeerKey
from awgd.ledger_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    day_usage,
    interfaces,
    meta,
    metadata,
    peer_counters,
    peers,
    period_usage,
    resets,
)
from awgd.periods import Period

# How long a write waits for a lock held by another process (a backup, an operator's
# sqlite3 shell) before the sample is reported as failed and retried at the next one.
LOCK_TIMEOUT_SECONDS = 2.0

# WAL pages (4 KiB) after which a commit copies them into the database file. SQLite's
# default, 1,000 (4 MiB), is less than one sample of a 50,000-peer server with every peer
# moving (about 1,500 pages), so every such commit also ran a checkpoint and its fsyncs:
# 13 ms of a 90 ms commit. A sample rewrites the same pages, so checkpointing every ~5
# samples copies each page once instead of five times. Bounds the -wal file at 32 MiB.
WAL_CHECKPOINT_PAGES = 8192

SORTS = ("total", "rx", "tx", "public_key")
# What quick_check found wrong is reported (server.status, the log) up to this length.
MAX_FAULT_CHARS = 300
HISTORY_GRANULARITIES = ("period", "day")


class LedgerError(Exception):
    """The ledger cannot be opened or written. The message is meant for the operator."""


@dataclass(frozen=True, slots=True)
class PeerRecord:
    interface: str
    public_key: str
    present: bool
    rx: int  # checkpoint: the counters at the last booked sample
    tx: int
    lifetime_rx: int
    lifetime_tx: int
    first_seen: datetime
    last_seen: datetime  # the last sample that wrote this peer (moved or changed presence)


@dataclass(frozen=True, slots=True)
class UsageRow:
    interface: str
    public_key: str
    present: bool
    rx: int
    tx: int


@dataclass(frozen=True, slots=True)
class Bucket:
    start: int  # Unix seconds for periods, YYYYMMDD for days
    end: int  # Unix seconds for periods, YYYYMMDD of the day itself for days
    rx: int
    tx: int


def day_number(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def day_from_number(number: int) -> date:
    return date(number // 10000, number // 100 % 100, number % 100)


def _ts(instant: datetime) -> int:
    return int(instant.timestamp())


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Ledger:
    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self._url = url
        self._lock = threading.RLock()
        self._ids: dict[PeerKey, int] = {}
        self._next_id = 1
        self.created_at: datetime
        self.tracking_since: datetime | None = None
        self.last_sample_at: datetime | None = None
        # What the running totals in `peer_counters` belong to; None before the first booking.
        self._open_period: tuple[int, int] | None = None
        self._open_day: int | None = None

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Ledger:
        """Open (creating or migrating) the ledger, or raise LedgerError with a clear reason."""
        try:
            engine = _engine(url)
        except (SQLAlchemyError, sqlite3.Error, ValueError) as exc:
            raise LedgerError(f"ledger {url}: {_reason(exc)}") from None
        ledger = cls(engine, url)
        try:
            ledger._prepare()
        except LedgerError:
            engine.dispose()
            raise
        except (SQLAlchemyError, sqlite3.Error) as exc:
            engine.dispose()
            raise LedgerError(f"ledger {url}: {_reason(exc)}") from None
        return ledger

    def _prepare(self) -> None:
        with self._engine.begin() as conn:
            existing = set(sa.inspect(conn).get_table_names())
            if not existing:
                metadata.create_all(conn)
                conn.execute(meta.insert().values(id=1, schema_version=SCHEMA_VERSION, created_at=int(time.time())))
            elif "meta" not in existing:
                raise LedgerError(f"ledger {self._url}: the database holds tables but is not an awgd ledger")
            version = conn.execute(sa.select(meta.c.schema_version).where(meta.c.id == 1)).scalar_one_or_none()
            if version is None:
                raise LedgerError(f"ledger {self._url}: its meta row is missing")
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger {self._url} has schema version {version}, newer than this awgd "
                    f"understands ({SCHEMA_VERSION}): upgrade awgd, or point ledger.url elsewhere"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):  # inside this transaction
                for statement in MIGRATIONS[step]:
                    conn.exec_driver_sql(statement)
                conn.execute(meta.update().where(meta.c.id == 1).values(schema_version=step))
            row = conn.execute(sa.select(meta).where(meta.c.id == 1)).one()
            self.created_at = _dt(row.created_at)
            self.tracking_since = None if row.tracking_since is None else _dt(row.tracking_since)
            self.last_sample_at = None if row.last_sample_at is None else _dt(row.last_sample_at)
            if row.open_period_start is not None:
                self._open_period = (row.open_period_start, row.open_period_end)
            self._open_day = row.open_day
            for peer_id, iface, key in conn.execute(sa.select(peers.c.id, peers.c.interface, peers.c.public_key)):
                self._ids[(iface, key)] = peer_id
            self._next_id = max(self._ids.values(), default=0) + 1

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def is_new(self) -> bool:
        """True until the first sample is booked: its counters are only a baseline."""
        return self.tracking_since is None

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    yield conn
            except (SQLAlchemyError, sqlite3.Error) as exc:
                # Start the next attempt on a fresh connection: one opened while the file was
                # read-only stays read-only after it is fixed, and a full disk can leave the
                # old one in a state that keeps failing.
                self._engine.dispose()
                raise LedgerError(f"ledger write failed: {_reason(exc)}") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._lock:
            try:
                with self._engine.connect() as conn:
                    yield conn
            except (SQLAlchemyError, sqlite3.Error) as exc:
                raise LedgerError(f"ledger read failed: {_reason(exc)}") from None

    # ---- checkpoints and booking ---------------------------------------------------

    def checkpoints(self) -> tuple[dict[str, dict[str, PeerCheckpoint]], dict[str, InterfaceCheckpoint]]:
        """The state the accounting compares the next sample against."""
        by_iface: dict[str, dict[str, PeerCheckpoint]] = {}
        with self._read() as conn:
            for iface, key, present, rx, tx in conn.execute(
                sa.select(peers.c.interface, peers.c.public_key, _c.present, _c.rx, _c.tx).select_from(_PEERS)
            ):
                by_iface.setdefault(iface, {})[key] = PeerCheckpoint(rx, tx, bool(present))
            ifaces = {
                name: InterfaceCheckpoint(ifindex, boot_id)
                for name, ifindex, boot_id in conn.execute(sa.select(interfaces))
            }
        return by_iface, ifaces

    def apply(self, booking: Booking, *, at: datetime, period: Period, day: date) -> int:
        """Book one sample in one transaction; returns the number of rows written.

        `period` and `day` are where the deltas go: the caller decides, so that a boundary
        sample taken at a period's end is booked to the closing period.
        """
        first = self.tracking_since is None
        if not (booking.peers or booking.interfaces or first):
            return 0
        now = _ts(at)
        bounds, day_no = (_ts(period.start), _ts(period.end)), day_number(day)
        deltas = booking.deltas
        # Running totals may only grow while they belong to this sample's period and day.
        close_period = bool(deltas) and self._open_period != bounds
        close_day = bool(deltas) and self._open_day != day_no
        next_id = self._next_id
        new_ids: dict[PeerKey, int] = {}
        inserts: list[tuple[Any, ...]] = []
        counters: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        ids, no_delta = self._ids, (0, 0)
        # Once per moving peer: kept lean. `present` goes in as an int, not a bool: the
        # driver binds an exact int directly but looks a bool up in its adapter registry.
        for key, (rx, tx, present) in booking.peers.items():
            drx, dtx = deltas.get(key, no_delta)
            peer_id = ids.get(key)
            flag = 1 if present else 0
            if peer_id is None:
                peer_id = new_ids[key] = next_id
                next_id += 1
                inserts.append((peer_id, key[0], key[1], now))
                counters.append((peer_id, flag, rx, tx, drx, dtx, now))
            else:
                updates.append((flag, rx, tx, drx, dtx, now, peer_id))
        written = 0
        open_period = bounds if close_period else self._open_period
        open_day = day_no if close_day else self._open_day
        with self._write() as conn:
            if close_period:
                written += self._close_period(conn)
            if close_day:
                written += self._close_day(conn)
            if inserts:
                conn.exec_driver_sql(_INSERT_PEER, inserts)
                conn.exec_driver_sql(_INSERT_COUNTERS, counters)
            if updates:
                conn.exec_driver_sql(_UPDATE_PEER, updates)
            if booking.interfaces:
                conn.execute(
                    _UPSERT_INTERFACE,
                    [{"name": n, "ifindex": c.ifindex, "boot_id": c.boot_id} for n, c in booking.interfaces.items()],
                )
            conn.exec_driver_sql(
                _UPDATE_META,
                (now, now if first else None, *(open_period or (None, None)), open_day),
            )
            written += 2 * len(inserts) + len(updates) + len(booking.interfaces) + 1
        # Only after the commit: a failed write must leave the in-memory view as it was.
        if close_period:
            self._open_period = bounds
        if close_day:
            self._open_day = day_no
        self._ids.update(new_ids)
        self._next_id = next_id
        self.last_sample_at = _dt(now)
        if first:
            self.tracking_since = _dt(now)
        return written

    def _close_period(self, conn: Connection) -> int:
        return 0 if self._open_period is None else _close(conn, _CLOSE_PERIOD, self._open_period, _ZERO_PERIOD)

    def _close_day(self, conn: Connection) -> int:
        return 0 if self._open_day is None else _close(conn, _CLOSE_DAY, (self._open_day,), _ZERO_DAY)

    def _open(self, period: Period) -> bool:
        return self._open_period is not None and self._open_period[0] == _ts(period.start)

    # ---- queries -------------------------------------------------------------------

    def peer(self, interface: str, public_key: str) -> PeerRecord | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(*_RECORD)
                .select_from(_PEERS)
                .where(peers.c.interface == interface, peers.c.public_key == public_key)
            ).one_or_none()
        return None if row is None else _record(row)

    def all_peers(self) -> list[PeerRecord]:
        with self._read() as conn:
            query = sa.select(*_RECORD).select_from(_PEERS).order_by(peers.c.id)
            return [_record(row) for row in conn.execute(query)]

    def _period_totals(self, period: Period) -> tuple[sa.FromClause, sa.ColumnElement[Any], sa.ColumnElement[Any]]:
        """`peers` joined to its counters and usage in `period`, and that usage (0 when none)."""
        joined = _PEERS.outerjoin(
            period_usage,
            sa.and_(period_usage.c.peer_id == peers.c.id, period_usage.c.start == _ts(period.start)),
        )
        rx: sa.ColumnElement[Any] = sa.func.coalesce(period_usage.c.rx, 0)
        tx: sa.ColumnElement[Any] = sa.func.coalesce(period_usage.c.tx, 0)
        if self._open(period):
            rx, tx = rx + _c.period_rx, tx + _c.period_tx
        return joined, rx, tx

    def usage(self, interface: str, public_key: str, period: Period) -> tuple[int, int]:
        peer_id = self._ids.get((interface, public_key))
        if peer_id is None:
            return (0, 0)
        joined, rx, tx = self._period_totals(period)
        with self._read() as conn:
            row = conn.execute(sa.select(rx, tx).select_from(joined).where(peers.c.id == peer_id)).one()
        return (row[0], row[1])

    def period_usage(self, period: Period) -> dict[PeerKey, tuple[int, int]]:
        """Every peer's usage in one period (peers with none are left out)."""
        joined, rx, tx = self._period_totals(period)
        query = sa.select(peers.c.interface, peers.c.public_key, rx, tx).select_from(joined)
        with self._read() as conn:
            return {(iface, key): (rx, tx) for iface, key, rx, tx in conn.execute(query) if rx or tx}

    def list_period(
        self,
        period: Period,
        *,
        interface: str | None = None,
        sort: str = "total",
        limit: int = 1000,
        offset: int = 0,
        present_only: bool = False,
    ) -> tuple[int, list[UsageRow]]:
        """A sorted page of every known peer's usage in `period` (descending for byte sorts)."""
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        joined, rx, tx = self._period_totals(period)
        conditions = []
        if interface is not None:
            conditions.append(peers.c.interface == interface)
        if present_only:
            conditions.append(_c.present == sa.true())
        order = {
            "total": [(rx + tx).desc()],
            "rx": [rx.desc()],
            "tx": [tx.desc()],
            "public_key": [],
        }[sort] + [peers.c.public_key, peers.c.interface]
        query = (
            sa.select(peers.c.interface, peers.c.public_key, _c.present, rx.label("rx"), tx.label("tx"))
            .select_from(joined)
            .where(*conditions)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(_PEERS).where(*conditions)
        with self._read() as conn:
            total = conn.execute(count).scalar_one()
            rows = [UsageRow(r.interface, r.public_key, bool(r.present), r.rx, r.tx) for r in conn.execute(query)]
        return total, rows

    def history(self, interface: str, public_key: str, granularity: str, limit: int) -> list[Bucket]:
        """Booked buckets, newest first. Buckets with no traffic have no row and are absent."""
        peer_id = self._ids.get((interface, public_key))
        if peer_id is None:
            return []
        if granularity == "period":
            query = (
                sa.select(period_usage.c.start, period_usage.c.end, period_usage.c.rx, period_usage.c.tx)
                .where(period_usage.c.peer_id == peer_id)
                .order_by(period_usage.c.start.desc())
                .limit(limit)
            )
            running = sa.select(_c.period_rx, _c.period_tx)
            open_bucket = self._open_period
        elif granularity == "day":
            query = (
                sa.select(day_usage.c.day, day_usage.c.day, day_usage.c.rx, day_usage.c.tx)
                .where(day_usage.c.peer_id == peer_id)
                .order_by(day_usage.c.day.desc())
                .limit(limit)
            )
            running = sa.select(_c.day_rx, _c.day_tx)
            open_bucket = None if self._open_day is None else (self._open_day, self._open_day)
        else:
            raise ValueError(f"granularity must be one of {', '.join(HISTORY_GRANULARITIES)}")
        with self._read() as conn:
            buckets = {row[0]: Bucket(*row) for row in conn.execute(query)}
            open_rx, open_tx = conn.execute(running.where(_c.peer_id == peer_id)).one()
        if open_bucket is not None and (open_rx or open_tx):
            start, end = open_bucket
            closed = buckets.get(start)
            if closed is not None:
                buckets[start] = Bucket(start, closed.end, closed.rx + open_rx, closed.tx + open_tx)
            else:
                buckets[start] = Bucket(start, end, open_rx, open_tx)
        return sorted(buckets.values(), key=lambda bucket: bucket.start, reverse=True)[:limit]

    def interface_totals(self, period: Period) -> dict[str, tuple[int, int]]:
        joined, rx, tx = self._period_totals(period)
        query = (
            sa.select(peers.c.interface, sa.func.sum(rx), sa.func.sum(tx))
            .select_from(joined)
            .group_by(peers.c.interface)
        )
        with self._read() as conn:
            return {iface: (int(rx), int(tx)) for iface, rx, tx in conn.execute(query) if rx or tx}

    # ---- operator actions ----------------------------------------------------------

    def reset(self, interface: str, public_key: str, *, at: datetime, period: Period) -> tuple[int, int]:
        """Zero the peer's usage in `period`, log what was removed, and return it.

        Lifetime totals and day buckets are history and stay as they are.
        """
        peer_id = self._ids.get((interface, public_key))
        if peer_id is None:
            raise KeyError((interface, public_key))
        start = _ts(period.start)
        where = sa.and_(period_usage.c.peer_id == peer_id, period_usage.c.start == start)
        joined, rx, tx = self._period_totals(period)
        with self._write() as conn:
            row = conn.execute(sa.select(rx, tx).select_from(joined).where(peers.c.id == peer_id)).one()
            removed = (row[0], row[1])
            conn.execute(period_usage.update().where(where).values(rx=0, tx=0))
            if self._open(period):
                conn.execute(peer_counters.update().where(_c.peer_id == peer_id).values(period_rx=0, period_tx=0))
            conn.execute(
                resets.insert().values(peer_id=peer_id, at=_ts(at), period_start=start, rx=removed[0], tx=removed[1])
            )
        return removed

    def quick_check(self) -> str | None:
        """SQLite's quick_check of the file: None when it is sound, else the first fault found.

        A ledger damaged while awgd runs (truncated, its WAL overwritten) may still accept
        writes for a while; this is how it is noticed before the next start.
        """
        with self._lock:
            try:
                with self._engine.connect() as conn:
                    rows = conn.exec_driver_sql("PRAGMA quick_check").fetchall()
            except (SQLAlchemyError, sqlite3.Error) as exc:
                self._engine.dispose()
                return _reason(exc)
        faults = [" ".join(str(row[0]).split()) for row in rows if row[0] != "ok"]
        return "; ".join(faults)[:MAX_FAULT_CHARS] if faults else None

    def prune_days(self, keep_from: date) -> int:
        """Delete day buckets older than `keep_from`; returns how many went."""
        with self._write() as conn:
            result = conn.execute(day_usage.delete().where(day_usage.c.day < day_number(keep_from)))
            return int(result.rowcount)


_c = peer_counters.c
_PEERS = peers.join(peer_counters, _c.peer_id == peers.c.id)  # who, with their counters
_RECORD = (
    peers.c.interface,
    peers.c.public_key,
    _c.present,
    _c.rx,
    _c.tx,
    _c.lifetime_rx,
    _c.lifetime_tx,
    peers.c.first_seen,
    _c.last_seen,
)


def _close(conn: Connection, move: str, bucket: tuple[int, ...], zero: str) -> int:
    """Move running totals into their bucket table, then zero them; returns the rows written."""
    moved = conn.exec_driver_sql(move, bucket).rowcount
    conn.exec_driver_sql(zero)
    return 2 * max(moved, 0)


def _engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError("only SQLite ledgers are supported (sqlite:///PATH)")
    engine = sa.create_engine(
        parsed,
        future=True,
        poolclass=StaticPool,
        connect_args={"check_same_thread": False, "timeout": LOCK_TIMEOUT_SECONDS},
    )
    sa.event.listen(engine, "connect", _on_connect)
    sa.event.listen(engine, "begin", _on_begin)
    return engine


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite only opens a transaction before INSERT/UPDATE/DELETE, so CREATE TABLE and
    # reads would run outside it; take over and BEGIN explicitly (see _on_begin), which
    # makes creating the schema atomic too.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers never block the sampler. synchronous=NORMAL is durable against a
        # killed process; an OS crash may roll back the last samples, which then count
        # nothing twice (the reboot changes the boot id, so the counters restart anyway).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def _reason(exc: BaseException) -> str:
    """The database's own words, without SQLAlchemy's statement dump or its doc link."""
    original = getattr(exc, "orig", None)
    return str(original if original is not None else exc).splitlines()[0]


def _record(row: Any) -> PeerRecord:
    return PeerRecord(
        interface=row.interface,
        public_key=row.public_key,
        present=bool(row.present),
        rx=row.rx,
        tx=row.tx,
        lifetime_rx=row.lifetime_rx,
        lifetime_tx=row.lifetime_tx,
        first_seen=_dt(row.first_seen),
        last_seen=_dt(row.last_seen),
    )


# The per-sample statements, as the driver's SQL run with executemany over tuples: for
# 50,000 rows this is 1.1 us a row against 3 us through compiled Core constructs with dict
# parameters (measured on SQLAlchemy 2.1 and 1.4.46 alike), and a sample of a large server
# is mostly these rows. The tables and every other statement are Core constructs.
_INSERT_PEER = "INSERT INTO peers (id, interface, public_key, first_seen) VALUES (?, ?, ?, ?)"
_INSERT_COUNTERS = (
    "INSERT INTO peer_counters (peer_id, present, rx, tx, lifetime_rx, lifetime_tx, last_seen,"
    " period_rx, period_tx, day_rx, day_tx) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5, ?6, ?5, ?6)"
)
_UPDATE_PEER = (
    "UPDATE peer_counters SET present = ?1, rx = ?2, tx = ?3,"
    " lifetime_rx = lifetime_rx + ?4, lifetime_tx = lifetime_tx + ?5,"
    " period_rx = period_rx + ?4, period_tx = period_tx + ?5, day_rx = day_rx + ?4, day_tx = day_tx + ?5,"
    " last_seen = ?6 WHERE peer_id = ?7"
)
# One statement for every sample's meta row, whatever changed: no per-variant compiling.
_UPDATE_META = (
    "UPDATE meta SET last_sample_at = ?1, tracking_since = coalesce(tracking_since, ?2),"
    " open_period_start = ?3, open_period_end = ?4, open_day = ?5 WHERE id = 1"
)
# Closing the open period or day: set-wise, so 50,000 peers cost one statement, not 50,000.
# (An upsert on INSERT ... SELECT needs the WHERE to parse unambiguously.)
_CLOSE_PERIOD = (
    'INSERT INTO period_usage (peer_id, start, "end", rx, tx) SELECT peer_id, ?1, ?2, period_rx, period_tx'
    " FROM peer_counters WHERE period_rx != 0 OR period_tx != 0"
    " ON CONFLICT (peer_id, start) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx"
)
_ZERO_PERIOD = "UPDATE peer_counters SET period_rx = 0, period_tx = 0 WHERE period_rx != 0 OR period_tx != 0"
_ZERO_DAY = "UPDATE peer_counters SET day_rx = 0, day_tx = 0 WHERE day_rx != 0 OR day_tx != 0"
_CLOSE_DAY = (
    "INSERT INTO day_usage (peer_id, day, rx, tx) SELECT peer_id, ?1, day_rx, day_tx FROM peer_counters"
    " WHERE day_rx != 0 OR day_tx != 0"
    " ON CONFLICT (peer_id, day) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx"
)
_interface_insert = sqlite_insert(interfaces)
_UPSERT_INTERFACE = _interface_insert.on_conflict_do_update(
    index_elements=["name"],
    set_={"ifindex": _interface_insert.excluded.ifindex, "boot_id": _interface_insert.excluded.boot_id},
)
