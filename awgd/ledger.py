"""The SQLite ledger (SQLAlchemy Core): where the books are persisted. Persistence only.

awgd.books decides what a sample books (an Entry); `write` puts it in one transaction: the
open period and day closed when the books say so, new peers, the rows of the peers that
changed, the interfaces' checkpoints and the meta row together. A crash before the commit
loses nothing (the next sample recomputes from the old checkpoints); a crash after it counts
nothing twice. An idle sample writes nothing at all, and a moving peer is one narrow row:
its checkpoint and the running totals of the open period and day share its `peer_counters`
row (awgd.ledger_schema), and closing moves every running total into the bucket tables
with one set-wise statement per table (docs/DESIGN.md "The ledger").

Works on SQLAlchemy 1.4.46 (Debian 12, with future=True) and 2.x. One connection is shared
under a lock: the daemon is the ledger's only writer and calls it from a worker thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from awgd.accounting import InterfaceCheckpoint, PeerKey
from awgd.buckets import Bucket, with_running
from awgd.entry import PEER_ID, Entry, LoadedPeer, day_number
from awgd.events import Event
from awgd.fleet_plans import FleetChanges, FleetUser, Share
from awgd.ledger_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    blocked_usage,
    day_usage,
    events,
    fleet_shares,
    fleet_users,
    hour_usage,
    interfaces,
    meta,
    metadata,
    peer_counters,
    peer_settings,
    peer_stalls,
    peers,
    period_usage,
    plan_progress,
    rekeys,
    resets,
)
from awgd.peer_settings import Settings
from awgd.plans import Judged, plan_from_json, plan_json
from awgd.quota import Progress
from awgd.shaping import RateLimit
from awgd.stalls import Stall
from awgd.trusted_path import UntrustedPath, check_trusted_directory

# How long a write waits for a lock held by another process (a backup, an operator's
# sqlite3 shell) before the sample is reported as failed and retried at the next one.
LOCK_TIMEOUT_SECONDS = 2.0
# WAL pages (4 KiB) after which a commit copies them into the database file. SQLite's
# default, 1,000 (4 MiB), is less than one sample of a 50,000-peer server with every peer
# moving, so every such commit would also run a checkpoint and its fsyncs. A sample rewrites
# the same pages, so checkpointing every few samples copies each page once instead of
# several times. Bounds the -wal file at 32 MiB.
WAL_CHECKPOINT_PAGES = 8192
HISTORY_GRANULARITIES = ("period", "day", "hour")
# Peer ids per `IN (...)` list: well under SQLite's bound on a statement's parameters
# (999 before SQLite 3.32, which older systems still ship).
IDS_PER_QUERY = 500
# What quick_check found wrong is reported (server.status, the log) up to this length.
MAX_FAULT_CHARS = 300


class LedgerError(Exception):
    """The ledger cannot be opened or written. The message is meant for the operator."""


@dataclass(frozen=True, slots=True)
class Contents:
    """Everything the books start from (Ledger.load)."""

    created_at: datetime
    tracking_since: datetime | None
    last_booked_at: datetime | None
    open_period: tuple[int, int] | None
    open_day: int | None
    peers: list[LoadedPeer]
    interfaces: dict[str, InterfaceCheckpoint]
    settings: dict[PeerKey, Settings]
    progress: dict[PeerKey, Progress]  # of the peers whose settings hold a plan
    ups: dict[str, bool | None]
    replaced: dict[PeerKey, str] = field(default_factory=dict)  # rekeyed peers: the new key
    open_hour: int | None = None
    stalls: dict[PeerKey, Stall] = field(default_factory=dict)  # announced stalls
    fleet: FleetChanges = field(default_factory=FleetChanges)  # fleet users and shares, all of them


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Ledger:
    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self._url = url
        self._lock = threading.RLock()

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Ledger:
        """Open (creating or migrating) the ledger, or raise LedgerError with a clear reason."""
        _check_place(url)
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

    def last_closed_day(self) -> int:
        """The latest day with a closed row (YYYYMMDD), 0 for none (Books.day_reopened)."""
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(day_usage.c.day), 0))).scalar_one())

    def load(self) -> Contents:
        """The meta row, every peer with its counters row, and the interfaces' checkpoints."""
        with self._read() as conn:
            row = conn.execute(sa.select(meta).where(meta.c.id == 1)).one()
            loaded = [_loaded(*row) for row in conn.execute(_LOAD_PEERS)]
            ifaces, ups = {}, {}
            for name, ifindex, boot_id, up in conn.execute(sa.select(interfaces)):
                ifaces[name] = InterfaceCheckpoint(ifindex, boot_id)
                ups[name] = None if up is None else bool(up)
            settings = {
                (row.interface, row.public_key): Settings(
                    label=row.label,
                    allowed_ips=_split(row.allowed_ips),
                    blocked=_split(row.blocked),
                    plan=None if row.plan is None else plan_from_json(json.loads(row.plan)),
                    rate_limit=_rate_limit(row.down_kbit, row.up_kbit),
                    throttled=row.throttled_kbit,
                    fleet_throttled=row.fleet_throttled_kbit,
                )
                for row in conn.execute(sa.select(peer_settings))
            }
            progress = {
                key: Progress(
                    kept.window_start,
                    kept.start_lifetime,
                    kept.removed,
                    tuple(json.loads(kept.warned)),
                    bool(kept.exceeded),
                    bool(kept.expired),
                    kept.blocked,
                )
                for kept in conn.execute(sa.select(plan_progress))
                if (key := (kept.interface, kept.public_key)) in settings and settings[key].plan is not None
            }
            replaced = {(row.interface, row.public_key): row.new_public_key for row in conn.execute(sa.select(rekeys))}
            stalls = {
                (row.interface, row.public_key): Stall(row.since, row.handshake, row.since, announced=True)
                for row in conn.execute(sa.select(peer_stalls))
            }
            fleet = FleetChanges(as_of=row.fleet_as_of)
            for kept in conn.execute(sa.select(fleet_users)):
                fleet.users[kept.user] = FleetUser(
                    kept.user,
                    plan_from_json(json.loads(kept.plan)),
                    kept.zone,
                    kept.version,
                    kept.as_of,
                    kept.others_window,
                    kept.others,
                    frozenset((str(i), str(k)) for i, k in json.loads(kept.members)),
                )
            for kept in conn.execute(sa.select(fleet_shares)):
                fleet.shares[(kept.interface, kept.public_key)] = Share(
                    kept.user, kept.window_start, kept.start_lifetime, kept.blocked
                )
        return Contents(
            created_at=_dt(row.created_at),
            tracking_since=None if row.tracking_since is None else _dt(row.tracking_since),
            last_booked_at=None if row.last_sample_at is None else _dt(row.last_sample_at),
            open_period=None if row.open_period_start is None else (row.open_period_start, row.open_period_end),
            open_day=row.open_day,
            peers=loaded,
            interfaces=ifaces,
            settings=settings,
            progress=progress,
            ups=ups,
            replaced=replaced,
            open_hour=row.open_hour,
            stalls=stalls,
            fleet=fleet,
        )

    @property
    def engine(self) -> Engine:
        return self._engine

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

    # ---- a sample ------------------------------------------------------------------

    def write(self, entry: Entry) -> int:
        """Write one sample's entry in one transaction; returns the number of rows written."""
        if entry.empty:
            return 0
        written = 0
        with self._write() as conn:
            if entry.close_period is not None:
                written += _close(conn, _CLOSE_PERIOD, entry.close_period, _ZERO_PERIOD)
            if entry.close_day is not None:
                written += _close(conn, _CLOSE_DAY, (entry.close_day,), _ZERO_DAY)
            if entry.close_hour is not None:
                written += _close(conn, _CLOSE_HOUR, (entry.close_hour,), _ZERO_HOUR)
            hours = entry.target.hour is not None
            if entry.new:
                conn.exec_driver_sql(_INSERT_PEER, entry.new)
                conn.exec_driver_sql(_INSERT_COUNTERS if hours else _INSERT_COUNTERS_NO_HOUR, entry.new_counters)
            if entry.moved:
                # In peer-id order SQLite walks its B-tree forwards instead of jumping about.
                # The books hand them over in that order nearly always (their own order, which
                # the parser keeps Go-order dumps in), so the sort costs a pass; it orders the
                # rest (a peer re-added, a ledger of an older awgd: tests/bench/NOTES.md).
                update = _UPDATE_MOVED if hours else _UPDATE_MOVED_NO_HOUR
                conn.exec_driver_sql(update, sorted(entry.moved, key=_PEER_ID))
            if entry.blocked:
                start = entry.target.bounds[0]
                conn.execute(
                    _UPSERT_BLOCKED, [{"peer_id": book_id, "start": start, "bytes": n} for book_id, n in entry.blocked]
                )
            if entry.back:
                conn.exec_driver_sql(_UPDATE_BACK, entry.back)
            if entry.gone:
                conn.exec_driver_sql(_UPDATE_GONE, entry.gone)
            if entry.interfaces:
                conn.execute(
                    _UPSERT_INTERFACE,
                    [{"name": n, "ifindex": c.ifindex, "boot_id": c.boot_id} for n, c in entry.interfaces.items()],
                )
            if entry.ups:
                conn.execute(_UPSERT_UP, [{"name": name, "up": up} for name, up in entry.ups.items()])
            if entry.stall_rows:
                _store_stalls(conn, entry.stall_rows)
            if entry.judged:
                entry.judged.events[:] = _store(conn, entry.judged)
            conn.exec_driver_sql(
                _UPDATE_META,
                (
                    entry.at,
                    entry.at if entry.first else None,
                    *(entry.open_period or (None, None)),
                    entry.open_day,
                    entry.open_hour,
                ),
            )
            written += 2 * len(entry.new) + len(entry.moved) + len(entry.gone) + len(entry.interfaces) + 1
            written += len(entry.blocked) + len(entry.ups) + len(entry.stall_rows)
            written += len(entry.judged.settled) + len(entry.judged.states) + len(entry.judged.events)
        return written

    # ---- queries -------------------------------------------------------------------

    def closed_period_usage(self, start: int) -> dict[int, tuple[int, int]]:
        """Every peer's period_usage row for the period starting at `start` (Unix seconds):
        its usage there outside the running totals. Peers with none are left out."""
        query = sa.select(period_usage.c.peer_id, period_usage.c.rx, period_usage.c.tx).where(
            period_usage.c.start == start
        )
        with self._read() as conn:
            return {peer_id: (rx, tx) for peer_id, rx, tx in conn.execute(query) if rx or tx}

    def history(
        self,
        peer_id: int,
        granularity: str,
        limit: int,
        *,
        open_period: tuple[int, int] | None,
        open_day: int | None,
        open_hour: int | None = None,
    ) -> list[Bucket]:
        """Booked buckets, newest first, the running totals added to the open one. Buckets
        with no traffic have no row and are absent. An hour's `end` is its start (the caller
        knows the zone that ends it)."""
        if granularity == "period":
            query = (
                sa.select(period_usage.c.start, period_usage.c.end, period_usage.c.rx, period_usage.c.tx)
                .where(period_usage.c.peer_id == peer_id)
                .order_by(period_usage.c.start.desc())
                .limit(limit)
            )
            running = sa.select(_c.period_rx, _c.period_tx)
            open_bucket = open_period
        elif granularity == "day":
            query = (
                sa.select(day_usage.c.day, day_usage.c.day, day_usage.c.rx, day_usage.c.tx)
                .where(day_usage.c.peer_id == peer_id)
                .order_by(day_usage.c.day.desc())
                .limit(limit)
            )
            running = sa.select(_c.day_rx, _c.day_tx)
            open_bucket = None if open_day is None else (open_day, open_day)
        elif granularity == "hour":
            query = (
                sa.select(hour_usage.c.start, hour_usage.c.start, hour_usage.c.rx, hour_usage.c.tx)
                .where(hour_usage.c.peer_id == peer_id)
                .order_by(hour_usage.c.start.desc())
                .limit(limit)
            )
            running = sa.select(_c.hour_rx, _c.hour_tx)
            open_bucket = None if open_hour is None else (open_hour, open_hour)
        else:
            raise ValueError(f"granularity must be one of {', '.join(HISTORY_GRANULARITIES)}")
        with self._read() as conn:
            buckets = {row[0]: Bucket(*row) for row in conn.execute(query)}
            found = conn.execute(running.where(_c.peer_id == peer_id)).one_or_none()
        totals = (found[0], found[1]) if found is not None else (0, 0)
        if open_bucket is not None and totals != (0, 0):
            start, end = open_bucket
            buckets[start] = with_running(buckets.get(start), start, end, totals)
        return sorted(buckets.values(), key=lambda bucket: bucket.start, reverse=True)[:limit]

    def closed_buckets(
        self, peer_ids: list[int], first_start: int, first_day: int
    ) -> tuple[dict[int, list[Bucket]], dict[int, list[Bucket]]]:
        """The closed period rows starting at `first_start` (Unix seconds) or later, and the
        closed day rows from `first_day` (YYYYMMDD) on, of these peers, by peer id: what
        awgd-mirror catches up with after it fell behind (awgd.change_feed). The running
        totals are the books' to add."""
        periods: dict[int, list[Bucket]] = {}
        days: dict[int, list[Bucket]] = {}
        p, d = period_usage.c, day_usage.c
        with self._read() as conn:
            for at in range(0, len(peer_ids), IDS_PER_QUERY):
                chosen = peer_ids[at : at + IDS_PER_QUERY]
                query = sa.select(p.peer_id, p.start, p.end, p.rx, p.tx).where(
                    p.peer_id.in_(chosen), p.start >= first_start
                )
                for peer_id, start, end, rx, tx in conn.execute(query):
                    periods.setdefault(peer_id, []).append(Bucket(start, end, rx, tx))
                query = sa.select(d.peer_id, d.day, d.rx, d.tx).where(d.peer_id.in_(chosen), d.day >= first_day)
                for row in conn.execute(query):
                    days.setdefault(row[0], []).append(Bucket(row[1], row[1], row[2], row[3]))
        return periods, days

    # ---- operator actions ----------------------------------------------------------

    def settle(self, key: PeerKey, settings: Settings | None, new_events: list[Event]) -> list[Event]:
        """Store a peer's settings (None: remove them, and its plan's progress) and the events
        of that change, in one transaction; returns the events with their ids."""
        interface, public_key = key
        where = sa.and_(peer_settings.c.interface == interface, peer_settings.c.public_key == public_key)
        with self._write() as conn:
            if settings is None:
                conn.execute(peer_settings.delete().where(where))
                conn.execute(plan_progress.delete().where(_progress_of(key)))
                return _store(conn, Judged({}, {}, new_events))
            return _store(conn, Judged({key: settings}, {}, new_events))

    def rekey(self, key: PeerKey, new_public_key: str, judged: Judged, at: int) -> list[Event]:
        """A peer's keys replaced (peer.rekey), in one transaction: the old key's settings and
        plan progress go, the new key's (in `judged`) come, with the events, and the old key
        names its successor. Returns the events with their ids."""
        interface, public_key = key
        where = sa.and_(peer_settings.c.interface == interface, peer_settings.c.public_key == public_key)
        with self._write() as conn:
            conn.execute(peer_settings.delete().where(where))
            conn.execute(plan_progress.delete().where(_progress_of(key)))
            values = {"new_public_key": new_public_key, "at": at}
            statement = sqlite_insert(rekeys).values(interface=interface, public_key=public_key, **values)
            conn.execute(statement.on_conflict_do_update(index_elements=["interface", "public_key"], set_=values))
            # A key that comes back after being replaced is no longer anybody's predecessor.
            conn.execute(
                rekeys.delete().where(sa.and_(rekeys.c.interface == interface, rekeys.c.public_key == new_public_key))
            )
            return _store(conn, judged)

    def store(self, judged: Judged) -> list[Event]:
        """Store what judgements decided (awgd.plans) in one transaction; returns the events
        with their ids."""
        with self._write() as conn:
            return _store(conn, judged)

    def events(self, since: int, limit: int, types: tuple[str, ...] | None) -> tuple[list[Event], int]:
        """Events with an id above `since`, oldest first, and the newest id in the ledger."""
        query = sa.select(events).where(events.c.id > since).order_by(events.c.id).limit(limit)
        if types is not None:
            query = query.where(events.c.type.in_(types))
        with self._read() as conn:
            rows = conn.execute(query).all()
            last = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
        found = [
            Event(row.type, row.at, row.interface, row.public_key, json.loads(row.data), id=row.id) for row in rows
        ]
        return found, int(last or 0)

    def prune_events(self, before: int) -> int:
        """Delete events older than `before` (Unix seconds), always keeping the newest (its id
        is what clients resume from); returns how many went."""
        with self._write() as conn:
            newest = conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
            result = conn.execute(events.delete().where(events.c.at < before, events.c.id != (newest or 0)))
            return int(result.rowcount)

    def reset(
        self,
        peer_id: int,
        period: tuple[int, int],
        *,
        running: bool,
        at: datetime,
        judge: Callable[[int], Judged] | None = None,
    ) -> tuple[int, int]:
        """Zero the peer's usage in `period` (its row there, and its running totals when
        `running`: they belong to that period), record what was removed, and return it.

        Lifetime totals and day buckets are history and stay as they are.
        """
        start = period[0]
        where = sa.and_(period_usage.c.peer_id == peer_id, period_usage.c.start == start)
        with self._write() as conn:
            closed = conn.execute(sa.select(period_usage.c.rx, period_usage.c.tx).where(where)).one_or_none()
            rx, tx = closed if closed is not None else (0, 0)
            if running:
                open_rx, open_tx = conn.execute(
                    sa.select(_c.period_rx, _c.period_tx).where(_c.peer_id == peer_id)
                ).one()
                rx, tx = rx + open_rx, tx + open_tx
                conn.execute(peer_counters.update().where(_c.peer_id == peer_id).values(period_rx=0, period_tx=0))
            conn.execute(period_usage.update().where(where).values(rx=0, tx=0))
            _b = blocked_usage.c
            conn.execute(blocked_usage.delete().where(_b.peer_id == peer_id, _b.start == start))
            record = {"peer_id": peer_id, "at": int(at.timestamp()), "period_start": start, "rx": rx, "tx": tx}
            conn.execute(resets.insert().values(**record))
            if judge is not None:  # the peer's plan, in the same transaction (awgd.quota.after_reset)
                judged = judge(rx + tx)
                judged.events[:] = _store(conn, judged)
        return rx, tx

    def blocked_usage(self, start: int) -> dict[int, int]:
        """What each peer had booked while blocked in the period starting at `start`."""
        with self._read() as conn:
            _b = blocked_usage.c
            rows = conn.execute(sa.select(_b.peer_id, _b.bytes).where(_b.start == start))
            return {peer_id: int(amount) for peer_id, amount in rows}

    def window_usage(self, peer_id: int, first_day: int, since: int) -> tuple[int, int]:
        """The peer's closed day buckets from `first_day` (YYYYMMDD) on, and what resets
        removed from `since` (Unix seconds) on: both as rx + tx."""
        with self._read() as conn:
            booked = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(day_usage.c.rx + day_usage.c.tx), 0)).where(
                    day_usage.c.peer_id == peer_id, day_usage.c.day >= first_day
                )
            ).scalar_one()
            removed = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(resets.c.rx + resets.c.tx), 0)).where(
                    resets.c.peer_id == peer_id, resets.c.at >= since
                )
            ).scalar_one()
        return int(booked), int(removed)

    def quick_check(self) -> str | None:
        """SQLite's quick_check of the file: None when it is sound, else the faults found.

        A ledger damaged while awgd runs (a page overwritten, the file truncated) may still
        accept writes for a while; this is how it is noticed before the next start.
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

    def prune_hours(self, before: int) -> int:
        """Delete hour buckets of hours that began before `before` (Unix seconds); returns how many went."""
        with self._write() as conn:
            result = conn.execute(hour_usage.delete().where(hour_usage.c.start < before))
            return int(result.rowcount)


_c = peer_counters.c
_LOAD_PEERS = (
    sa.select(
        peers.c.id,
        peers.c.interface,
        peers.c.public_key,
        peers.c.first_seen,
        _c.present,
        _c.rx,
        _c.tx,
        _c.lifetime_rx,
        _c.lifetime_tx,
        _c.period_rx,
        _c.period_tx,
        _c.day_rx,
        _c.day_tx,
    )
    .select_from(peers.join(peer_counters, _c.peer_id == peers.c.id))
    .order_by(peers.c.id)
)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _loaded(peer_id: int, interface: str, public_key: str, first_seen: int, present: Any, *counters: int) -> LoadedPeer:
    return LoadedPeer(peer_id, interface, public_key, first_seen, bool(present), *counters)


def _close(conn: Connection, move: str, bucket: tuple[int, ...], zero: str) -> int:
    """Move running totals into their bucket table, then zero them; returns the rows written."""
    moved = conn.exec_driver_sql(move, bucket).rowcount
    conn.exec_driver_sql(zero)
    return 2 * max(moved, 0)


def _rate_limit(down: int | None, up: int | None) -> RateLimit | None:
    return None if down is None and up is None else RateLimit(down, up)


def _progress_of(key: PeerKey) -> Any:
    return sa.and_(plan_progress.c.interface == key[0], plan_progress.c.public_key == key[1])


def _store(conn: Connection, judged: Judged) -> list[Event]:
    """Write settings, plans' progress and events; returns the events with their ids."""
    for (interface, public_key), settings in judged.settled.items():
        plan = None if settings.plan is None else json.dumps(plan_json(settings.plan), separators=(",", ":"))
        values = {
            "label": settings.label,
            "allowed_ips": ",".join(settings.allowed_ips),
            "blocked": ",".join(settings.blocked),
            "plan": plan,
            "down_kbit": None if settings.rate_limit is None else settings.rate_limit.down_kbit,
            "up_kbit": None if settings.rate_limit is None else settings.rate_limit.up_kbit,
            "throttled_kbit": settings.throttled,
            "fleet_throttled_kbit": settings.fleet_throttled,
        }
        statement = sqlite_insert(peer_settings).values(interface=interface, public_key=public_key, **values)
        conn.execute(statement.on_conflict_do_update(index_elements=["interface", "public_key"], set_=values))
    for key, state in judged.states.items():
        conn.execute(plan_progress.delete().where(_progress_of(key)))
        if state is not None:
            progress = state.progress
            conn.execute(
                plan_progress.insert().values(
                    interface=key[0],
                    public_key=key[1],
                    window_start=progress.window_start,
                    start_lifetime=progress.start_lifetime,
                    removed=progress.removed,
                    warned=json.dumps(list(progress.warned)),
                    exceeded=progress.exceeded,
                    expired=progress.expired,
                    blocked=progress.blocked,
                )
            )
    if judged.fleet:
        _store_fleet(conn, judged.fleet)
    stored = []
    for event in judged.events:
        result = conn.execute(
            events.insert().values(
                at=event.at,
                type=event.type,
                interface=event.interface,
                public_key=event.public_key,
                data=json.dumps(event.data, separators=(",", ":")),
            )
        )
        key_id = result.inserted_primary_key
        assert key_id is not None
        stored.append(replace(event, id=int(key_id[0])))
    return stored


def _store_fleet(conn: Connection, fleet: FleetChanges) -> None:
    """Fleet users and shares that changed (None: gone), and the centre's clock of the news."""
    for user, held in fleet.users.items():
        conn.execute(fleet_users.delete().where(fleet_users.c.user == user))
        if held is not None:
            conn.execute(
                fleet_users.insert().values(
                    user=user,
                    plan=json.dumps(plan_json(held.plan), separators=(",", ":")),
                    zone=held.zone,
                    version=held.version,
                    as_of=held.as_of,
                    others_window=held.others_window,
                    others=held.others,
                    members=json.dumps(sorted(held.members), separators=(",", ":")),
                )
            )
    for (interface, public_key), share in fleet.shares.items():
        key = sa.and_(fleet_shares.c.interface == interface, fleet_shares.c.public_key == public_key)
        conn.execute(fleet_shares.delete().where(key))
        if share is not None:
            conn.execute(
                fleet_shares.insert().values(
                    interface=interface,
                    public_key=public_key,
                    user=share.user,
                    window_start=share.window_start,
                    start_lifetime=share.start_lifetime,
                    blocked=share.blocked,
                )
            )
    if fleet.as_of is not None:
        conn.execute(meta.update().where(meta.c.id == 1).values(fleet_as_of=fleet.as_of))


def _store_stalls(conn: Connection, stalls: dict[PeerKey, Stall | None]) -> None:
    """Keep the stalls whose announcement began (a suspicion is not worth a row), drop those
    whose announcement ended."""
    for (interface, public_key), stall in stalls.items():
        key = sa.and_(peer_stalls.c.interface == interface, peer_stalls.c.public_key == public_key)
        conn.execute(peer_stalls.delete().where(key))
        if stall is not None and stall.announced:
            conn.execute(
                peer_stalls.insert().values(
                    interface=interface, public_key=public_key, since=stall.since, handshake=stall.handshake
                )
            )


def _check_place(url: str) -> None:
    """A ledger file's directory is root's alone, and the file is no link (the review's D10:
    root wrote the ledger through a link a user had put in its directory). SQLite creates
    its -wal and -journal files beside it, so the directory is what must be trusted."""
    try:
        path = sa.engine.make_url(url).database
    except (SQLAlchemyError, ValueError):
        return  # _engine says what is wrong with it
    if not path or path == ":memory:" or path.startswith("file:") or os.geteuid() != 0:
        return
    path = os.path.abspath(path)
    try:
        check_trusted_directory(os.path.dirname(path))
    except UntrustedPath as exc:
        raise LedgerError(f"ledger {url}: {exc}") from None
    except OSError:
        return  # a missing directory: SQLite says so in its own words
    if os.path.islink(path):
        raise LedgerError(f"ledger {url}: the ledger file is a symbolic link; refusing to write through it")


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


# The per-sample statements, as the driver's SQL run with executemany over tuples: a sample
# of a large server is mostly these rows, and tuples through the driver cost a fraction of
# compiled Core constructs with dict parameters (tests/bench/NOTES.md). The tables and every
# other statement are Core constructs.
_INSERT_PEER = "INSERT INTO peers (id, interface, public_key, first_seen) VALUES (?, ?, ?, ?)"
_INSERT_COUNTERS = (
    "INSERT INTO peer_counters (present, rx, tx, lifetime_rx, lifetime_tx, peer_id,"
    " period_rx, period_tx, day_rx, day_tx, hour_rx, hour_tx) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?3, ?4, ?3, ?4, ?3, ?4)"
)
_INSERT_COUNTERS_NO_HOUR = (
    "INSERT INTO peer_counters (present, rx, tx, lifetime_rx, lifetime_tx, peer_id,"
    " period_rx, period_tx, day_rx, day_tx) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?3, ?4, ?3, ?4)"
)
# A moved row leaves `present` alone (_UPDATE_BACK sets it for the few that came back): one
# column less to set makes the statement markedly cheaper (tests/bench/NOTES.md).
_UPDATE_MOVED = (
    "UPDATE peer_counters SET rx = ?1, tx = ?2,"
    " lifetime_rx = lifetime_rx + ?3, lifetime_tx = lifetime_tx + ?4,"
    " period_rx = period_rx + ?3, period_tx = period_tx + ?4, day_rx = day_rx + ?3, day_tx = day_tx + ?4,"
    " hour_rx = hour_rx + ?3, hour_tx = hour_tx + ?4"
    " WHERE peer_id = ?5"
)
# With hourly history off (ledger.hour_retention_days = 0): two columns less to rewrite.
_UPDATE_MOVED_NO_HOUR = (
    "UPDATE peer_counters SET rx = ?1, tx = ?2,"
    " lifetime_rx = lifetime_rx + ?3, lifetime_tx = lifetime_tx + ?4,"
    " period_rx = period_rx + ?3, period_tx = period_tx + ?4, day_rx = day_rx + ?3, day_tx = day_tx + ?4"
    " WHERE peer_id = ?5"
)
_PEER_ID = itemgetter(PEER_ID)  # of a moved row
_UPDATE_BACK = "UPDATE peer_counters SET present = 1 WHERE peer_id = ?"
_UPDATE_GONE = "UPDATE peer_counters SET present = 0 WHERE peer_id = ?"
# One statement for every sample's meta row, whatever changed: no per-variant compiling.
_UPDATE_META = (
    "UPDATE meta SET last_sample_at = ?1, tracking_since = coalesce(tracking_since, ?2),"
    " open_period_start = ?3, open_period_end = ?4, open_day = ?5, open_hour = ?6 WHERE id = 1"
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
_ZERO_HOUR = "UPDATE peer_counters SET hour_rx = 0, hour_tx = 0 WHERE hour_rx != 0 OR hour_tx != 0"
_CLOSE_HOUR = (
    "INSERT INTO hour_usage (peer_id, start, rx, tx) SELECT peer_id, ?1, hour_rx, hour_tx FROM peer_counters"
    " WHERE hour_rx != 0 OR hour_tx != 0"
    " ON CONFLICT (peer_id, start) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx"
)
_interface_insert = sqlite_insert(interfaces)
_up_insert = sqlite_insert(interfaces).values(name=sa.bindparam("name"), up=sa.bindparam("up"))
_UPSERT_UP = _up_insert.on_conflict_do_update(index_elements=["name"], set_={"up": _up_insert.excluded.up})
_UPSERT_INTERFACE = _interface_insert.on_conflict_do_update(
    index_elements=["name"],
    set_={"ifindex": _interface_insert.excluded.ifindex, "boot_id": _interface_insert.excluded.boot_id},
)
_blocked_insert = sqlite_insert(blocked_usage)
_UPSERT_BLOCKED = _blocked_insert.on_conflict_do_update(
    index_elements=["peer_id", "start"], set_={"bytes": blocked_usage.c.bytes + _blocked_insert.excluded.bytes}
)
