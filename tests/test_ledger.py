"""The SQLite ledger on real files: booking, queries, resets, versions and failures."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from booking import Booking, reading
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from awgd.books import PeerBook
from awgd.buckets import Bucket
from awgd.entry import day_from_number, day_number
from awgd.ledger import Ledger, LedgerError
from awgd.ledger_schema import SCHEMA_VERSION
from awgd.periods import Period, period_containing

ZONE = ZoneInfo("Europe/Moscow")
MONTHLY = "0 0 1 * *"
A = "A" * 43 + "="
B = "B" * 43 + "="
C = "C" * 43 + "="
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


class Harness(Booking):
    """A real ledger file booked the way the daemon books it (tests/helpers/booking.py)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, ZONE, at=T0)
        self.path = path

    def book(self, counters: dict, at: datetime, ifindexes: dict | None = None) -> int:  # type: ignore[override,type-arg]
        """Take, write and commit one sample; returns the number of rows the ledger wrote."""
        target = self.books.target(at, MONTHLY, ZONE)
        entry = self.books.take(reading(at, counters, ifindexes=ifindexes), watched=frozenset(), target=target)
        try:
            written = self.ledger.write(entry)
        except LedgerError:
            self.books.failed()
            raise
        self.books.commit(entry)
        return written

    def peer(self, key: str, interface: str = "wg0") -> PeerBook:
        return self.books.peers[(interface, key)]

    def history(self, key: str, granularity: str, limit: int = 1000) -> list[Bucket]:
        book = self.books.peers.get(("wg0", key))
        if book is None or book.id is None:
            return []
        opened = {"open_period": self.books.open_period, "open_day": self.books.open_day}
        return self.ledger.history(book.id, granularity, limit, **opened)

    def usage(self, key: str, period: Period) -> tuple[int, int]:
        """The peer's usage in `period`, through the ledger."""
        start = int(period.start.timestamp())
        found = [(b.rx, b.tx) for b in self.history(key, "period") if b.start == start]
        return found[0] if found else (0, 0)

    def reset(self, key: str, period: Period, at: datetime) -> tuple[int, int]:
        book = self.peer(key)
        assert book.id is not None
        bounds = (int(period.start.timestamp()), int(period.end.timestamp()))
        removed = self.ledger.reset(book.id, bounds, running=self.books.open_period == bounds, at=at)
        self.books.reset(book, bounds)
        return removed

    def changes(self) -> int:
        with self.ledger.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT total_changes()")).scalar_one())


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "ledger.sqlite3")


def test_first_sample_is_a_baseline_and_sets_tracking_since(harness: Harness) -> None:
    harness.book({"wg0": {A: (1000, 2000)}}, T0)
    assert harness.books.tracking_since == T0
    (record,) = harness.ledger.load().peers
    assert (record.rx, record.tx, record.lifetime_rx, record.lifetime_tx) == (1000, 2000, 0, 0)
    assert harness.ledger.load().tracking_since == T0


def test_booking_goes_to_period_day_and_lifetime(harness: Harness) -> None:
    harness.book({"wg0": {A: (1000, 2000)}}, T0)
    harness.book({"wg0": {A: (1500, 2600), B: (10, 20)}}, T0 + timedelta(minutes=1))
    harness.book({"wg0": {A: (1700, 2600), B: (15, 20)}}, T0 + timedelta(days=1))
    period = period_containing(T0, MONTHLY, ZONE)
    assert harness.usage(A, period) == (700, 600)
    assert harness.usage(B, period) == (15, 20)
    days = harness.history(A, "day", 31)
    assert [(day_from_number(b.start), b.rx, b.tx) for b in days] == [
        (date(2026, 11, 21), 200, 0),
        (date(2026, 11, 20), 500, 600),
    ]
    assert (harness.peer(A).lifetime_rx, harness.peer(A).lifetime_tx) == (700, 600)
    assert harness.books.period_usage(harness.peer(A)) == (700, 600)  # the books agree


def test_state_survives_reopening(harness: Harness, tmp_path: Path) -> None:
    harness.book({"wg0": {A: (1000, 2000)}}, T0)
    harness.book({"wg0": {A: (1100, 2100)}}, T0 + timedelta(minutes=1))
    harness.ledger.close()
    again = Harness(tmp_path / "ledger.sqlite3")
    assert again.books.tracking_since == T0
    old, new = harness.peer(A), again.peer(A)
    fields = (
        "id",
        "checkpoint_rx",
        "checkpoint_tx",
        "checkpoint_present",
        "lifetime_rx",
        "running_period",
        "running_day",
    )
    assert [getattr(new, f) for f in fields] == [getattr(old, f) for f in fields]
    assert again.books.interfaces["wg0"].checkpoint == harness.books.interfaces["wg0"].checkpoint
    assert (again.books.open_period, again.books.open_day) == (harness.books.open_period, harness.books.open_day)
    again.book({"wg0": {A: (1150, 2100)}}, T0 + timedelta(minutes=2))
    assert again.peer(A).lifetime_rx == 150


def test_idle_sample_writes_no_row_and_runs_no_statement(harness: Harness) -> None:
    counters = {"wg0": {key: (i * 100, i * 100) for i, key in enumerate((A, B, C))}}
    harness.book(counters, T0)
    before = harness.changes()
    statements: list[str] = []
    sa.event.listen(harness.ledger.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert harness.book(counters, T0 + timedelta(minutes=1)) == 0
    assert statements == []
    assert harness.changes() == before


def test_only_moved_peers_are_written(harness: Harness) -> None:
    counters = {"wg0": {f"{i:043d}=": (0, 0) for i in range(100)}}
    harness.book(counters, T0)
    counters["wg0"][f"{42:043d}="] = (5, 7)  # one known peer moved
    before = harness.changes()
    written = harness.book(counters, T0 + timedelta(minutes=1))
    # one peer row (its checkpoint and its running period and day totals), the meta row
    assert written == 2
    assert harness.changes() - before == 2


def test_failed_write_changes_nothing_and_the_retry_books_once(harness: Harness) -> None:
    harness.book({"wg0": {A: (100, 100)}}, T0)
    blocker = sqlite3.connect(harness.path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(LedgerError, match="database is locked"):
        harness.book({"wg0": {A: (300, 400), B: (5, 5)}}, T0 + timedelta(minutes=1))
    blocker.rollback()
    blocker.close()
    assert harness.peer(A).checkpoint_rx == 100  # in-memory checkpoints did not advance
    assert harness.peer(A).lifetime_rx == 0 and harness.peer(B).id is None
    harness.book({"wg0": {A: (300, 400), B: (5, 5)}}, T0 + timedelta(minutes=2))
    period = period_containing(T0, MONTHLY, ZONE)
    assert harness.usage(A, period) == (200, 300)
    assert harness.usage(B, period) == (5, 5)


def test_history_by_period_spans_months(harness: Harness) -> None:
    harness.book({"wg0": {A: (0, 0)}}, T0)
    harness.book({"wg0": {A: (100, 10)}}, T0 + timedelta(days=1))  # November
    harness.book({"wg0": {A: (400, 20)}}, datetime(2026, 12, 3, tzinfo=UTC))  # December
    buckets = harness.history(A, "period", 12)
    assert [(b.rx, b.tx) for b in buckets] == [(300, 10), (100, 10)]
    assert datetime.fromtimestamp(buckets[0].start, UTC) == datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    assert datetime.fromtimestamp(buckets[0].end, UTC) == datetime(2026, 12, 31, 21, 0, tzinfo=UTC)
    assert harness.history(A, "period", 1) == buckets[:1]
    assert harness.history(B, "period", 12) == []


def test_reset_zeroes_the_period_keeps_lifetime_and_logs(harness: Harness) -> None:
    harness.book({"wg0": {A: (0, 0)}}, T0)
    harness.book({"wg0": {A: (100, 50)}}, T0 + timedelta(minutes=1))
    period = period_containing(T0, MONTHLY, ZONE)
    removed = harness.reset(A, period, T0 + timedelta(minutes=2))
    assert removed == (100, 50)
    assert harness.usage(A, period) == (0, 0) and harness.books.period_usage(harness.peer(A)) == (0, 0)
    harness.book({"wg0": {A: (130, 60)}}, T0 + timedelta(minutes=3))
    assert harness.usage(A, period) == (30, 10) and harness.books.period_usage(harness.peer(A)) == (30, 10)
    assert (harness.peer(A).lifetime_rx, harness.peer(A).lifetime_tx) == (130, 60)
    with harness.ledger.engine.connect() as conn:
        log = conn.execute(sa.text("SELECT rx, tx, period_start FROM resets")).all()
    assert [tuple(r) for r in log] == [(100, 50, int(period.start.timestamp()))]


def test_prune_days(harness: Harness) -> None:
    harness.book({"wg0": {A: (0, 0)}}, T0)
    for day in range(5):
        harness.book({"wg0": {A: (day + 1, 0)}}, T0 + timedelta(days=day))
    assert harness.ledger.prune_days(date(2026, 11, 23)) == 3
    assert [day_from_number(b.start) for b in harness.history(A, "day", 31)] == [
        date(2026, 11, 24),
        date(2026, 11, 23),
    ]


def test_day_numbers_round_trip() -> None:
    assert day_number(date(2026, 12, 1)) == 20261201
    assert day_from_number(20261201) == date(2026, 12, 1)


def test_ledger_is_in_wal_mode(harness: Harness) -> None:
    with harness.ledger.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION + 1,))
    newer = rf"schema version {SCHEMA_VERSION + 1}, newer than this awgd understands \({SCHEMA_VERSION}\)"
    with pytest.raises(LedgerError, match=newer):
        Ledger.open(f"sqlite:///{path}")


def test_corrupt_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(LedgerError, match="file is not a database") as caught:
        Ledger.open(f"sqlite:///{path}")
    assert "Traceback" not in str(caught.value) and "\n" not in str(caught.value)


def test_unwritable_path_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="unable to open database file"):
        Ledger.open(f"sqlite:///{tmp_path}/missing/dir/ledger.sqlite3")


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(LedgerError, match="not an awgd ledger"):
        Ledger.open(f"sqlite:///{path}")


def test_non_sqlite_url_is_refused() -> None:
    with pytest.raises(LedgerError, match="only SQLite"):
        Ledger.open("postgresql://localhost/awgd")


# The schema of version 1 (awgd before running totals moved into `peers`), as it created it.
SCHEMA_1 = """
CREATE TABLE meta (id INTEGER NOT NULL, schema_version INTEGER NOT NULL, created_at BIGINT NOT NULL,
    tracking_since BIGINT, last_sample_at BIGINT, PRIMARY KEY (id));
CREATE TABLE interfaces (name VARCHAR(15) NOT NULL, ifindex INTEGER, boot_id VARCHAR(64), PRIMARY KEY (name));
CREATE TABLE peers (id INTEGER NOT NULL, interface VARCHAR(15) NOT NULL, public_key VARCHAR(44) NOT NULL,
    present BOOLEAN NOT NULL, rx BIGINT NOT NULL, tx BIGINT NOT NULL, lifetime_rx BIGINT NOT NULL,
    lifetime_tx BIGINT NOT NULL, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, PRIMARY KEY (id),
    UNIQUE (interface, public_key));
CREATE TABLE period_usage (peer_id INTEGER NOT NULL, start BIGINT NOT NULL, "end" BIGINT NOT NULL,
    rx BIGINT NOT NULL, tx BIGINT NOT NULL, PRIMARY KEY (peer_id, start)) WITHOUT ROWID;
CREATE INDEX period_usage_by_start ON period_usage (start);
CREATE TABLE day_usage (peer_id INTEGER NOT NULL, day INTEGER NOT NULL, rx BIGINT NOT NULL, tx BIGINT NOT NULL,
    PRIMARY KEY (peer_id, day)) WITHOUT ROWID;
CREATE INDEX day_usage_by_day ON day_usage (day);
CREATE TABLE resets (id INTEGER NOT NULL, peer_id INTEGER NOT NULL, at BIGINT NOT NULL,
    period_start BIGINT NOT NULL, rx BIGINT NOT NULL, tx BIGINT NOT NULL, PRIMARY KEY (id));
"""


def table_shapes(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        # (name, type, not null, primary key position) of every column, in order
        return {name: [(c[1], c[2], c[3], c[5]) for c in conn.execute(f"PRAGMA table_info({name})")] for name in names}


def test_a_version_1_ledger_is_migrated_and_keeps_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    period = period_containing(T0, MONTHLY, ZONE)
    start, end = int(period.start.timestamp()), int(period.end.timestamp())
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_1)
        conn.execute("INSERT INTO meta VALUES (1, 1, ?, ?, ?)", (start, start, start + 60))
        conn.execute("INSERT INTO interfaces VALUES ('wg0', 1, 'boot')")
        conn.execute("INSERT INTO peers VALUES (1, 'wg0', ?, 1, 1000, 2000, 700, 900, ?, ?)", (A, start, start))
        conn.execute("INSERT INTO period_usage VALUES (1, ?, ?, 700, 900)", (start, end))
        conn.execute("INSERT INTO day_usage VALUES (1, 20261120, 700, 900)")
    harness = Harness(path)
    with harness.ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT schema_version FROM meta")).scalar_one() == SCHEMA_VERSION == 10
        columns = {row[1] for row in conn.execute(sa.text("PRAGMA table_info(peers)"))}
    assert columns == {"id", "interface", "public_key", "first_seen"}  # the counters moved out
    fresh = tmp_path / "fresh.sqlite3"
    Ledger.open(f"sqlite:///{fresh}").close()
    assert table_shapes(path) == table_shapes(fresh)  # migrated = created new
    assert harness.usage(A, period) == (700, 900)
    assert harness.books.period_usage(harness.peer(A)) == (700, 900)
    harness.book({"wg0": {A: (1100, 2050)}}, T0)
    assert harness.usage(A, period) == (800, 950)
    assert harness.books.period_usage(harness.peer(A)) == (800, 950)
    assert [(b.start, b.rx, b.tx) for b in harness.history(A, "day", 31)] == [(20261120, 800, 950)]
    assert (harness.peer(A).lifetime_rx, harness.peer(A).lifetime_tx) == (800, 950)


def test_a_new_day_and_period_close_the_open_ones(harness: Harness) -> None:
    harness.book({"wg0": {A: (0, 0), B: (0, 0)}}, T0)
    harness.book({"wg0": {A: (10, 1), B: (20, 2)}}, T0 + timedelta(minutes=1))
    harness.book({"wg0": {A: (30, 3), B: (20, 2)}}, T0 + timedelta(days=1))  # Nov 21: only A moved
    december = datetime(2026, 12, 2, tzinfo=UTC)
    harness.book({"wg0": {A: (30, 3), B: (25, 7)}}, december)
    with harness.ledger.engine.connect() as conn:
        closed_days = conn.execute(sa.text("SELECT peer_id, day, rx, tx FROM day_usage ORDER BY day, peer_id")).all()
        running = conn.execute(
            sa.text("SELECT period_rx, period_tx, day_rx, day_tx FROM peer_counters ORDER BY peer_id")
        ).all()
    assert [tuple(r) for r in closed_days] == [(1, 20261120, 10, 1), (2, 20261120, 20, 2), (1, 20261121, 20, 2)]
    assert [tuple(r) for r in running] == [(0, 0, 0, 0), (5, 5, 5, 5)]
    november = period_containing(T0, MONTHLY, ZONE)
    assert harness.usage(A, november) == (30, 3)
    assert harness.usage(B, november) == (20, 2)
    assert harness.usage(B, period_containing(december, MONTHLY, ZONE)) == (5, 5)
    assert [(b.start, b.rx, b.tx) for b in harness.history(B, "day", 31)] == [
        (20261202, 5, 5),
        (20261120, 20, 2),
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 70),  # the day (after T0) the sample is booked to: any order, as a jumping clock would
            st.sampled_from([A, B]),
            st.integers(0, 50),
        ),
        max_size=25,
    ),
    reset_at=st.integers(0, 25),
)
def test_buckets_equal_the_sum_of_what_was_booked_to_them(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, str, int]], reset_at: int
) -> None:
    """Whatever order samples arrive in, every period and day bucket (closed or open) holds
    exactly the deltas booked to it, and a reset removes exactly what the period held."""
    harness = Harness(tmp_path_factory.mktemp("ledger") / "ledger.sqlite3")
    counters = {A: (0, 0), B: (0, 0)}
    harness.book({"wg0": dict(counters)}, T0)
    days: dict[tuple[str, int], int] = {}
    periods: dict[tuple[str, datetime], int] = {}
    for index, (offset, key, grow) in enumerate(steps):
        at = T0 + timedelta(days=offset)
        if index == reset_at:
            period = period_containing(at, MONTHLY, ZONE)
            removed = harness.reset(key, period, at)
            assert removed == (periods.get((key, period.start), 0), 0)
            periods[(key, period.start)] = 0
        rx, tx = counters[key]
        counters[key] = (rx + grow, tx)
        harness.book({"wg0": dict(counters)}, at)
        day = day_number(at.astimezone(ZONE).date())
        days[(key, day)] = days.get((key, day), 0) + grow
        start = period_containing(at, MONTHLY, ZONE).start
        periods[(key, start)] = periods.get((key, start), 0) + grow
    for key in (A, B):
        got_days = {b.start: b.rx for b in harness.history(key, "day")}
        assert got_days == {d: n for (k, d), n in days.items() if k == key and n}
        got_periods = {b.start: b.rx for b in harness.history(key, "period") if b.rx}
        assert got_periods == {int(p.timestamp()): n for (k, p), n in periods.items() if k == key and n}
        for (k, start), n in periods.items():
            if k == key:
                period = period_containing(start, MONTHLY, ZONE)
                assert harness.usage(key, period) == (n, 0)
                # The books, rolled into that period, show the same.
                begins = int(period.start.timestamp())
                harness.books.roll(
                    period, harness.ledger.closed_period_usage(begins), harness.ledger.blocked_usage(begins)
                )
                assert harness.books.period_usage(harness.peer(key)) == (n, 0)
    harness.ledger.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the check applies to a root awgd")
def test_a_ledger_in_a_directory_others_can_write_or_behind_a_link_is_refused(tmp_path: Path) -> None:
    """The review's D10: root wrote the ledger through a user's link in a writable directory."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(LedgerError, match="writable by group or others"):
        Ledger.open(f"sqlite:///{shared}/ledger.sqlite3")
    assert list(shared.iterdir()) == []
    victim = tmp_path / "victim"
    victim.write_text("not the ledger's")
    (tmp_path / "ledger.sqlite3").symlink_to(victim)
    with pytest.raises(LedgerError, match="symbolic link"):
        Ledger.open(f"sqlite:///{tmp_path}/ledger.sqlite3")
    assert victim.read_text() == "not the ledger's"
