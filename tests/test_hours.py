"""Hourly history (API v3, section 5): local hours as they happened, across both of Europe's
clock changes, equal to the days and periods of the same traffic: on a real ledger file for
any order of samples, and on a real awgd whose clock (libfaketime) crosses each change."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from booking import Booking, reading
from conftest import ScriptedTool, dump, key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_awgctl import awgctl
from test_daemon_rollover import LIBFAKETIME, needs_faketime

from awgd.entry import day_number
from awgd.periods import hour_bounds, hour_start

BERLIN = ZoneInfo("Europe/Berlin")
MONTHLY = "0 0 1 * *"
A = key("A")
# Europe's changes in 2026: clocks go forward at 01:00 UTC on 29 March (02:00 CET is skipped)
# and back at 01:00 UTC on 25 October (02:00-03:00 happens twice).
SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
AUTUMN = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


def test_local_hours_are_as_they_happened() -> None:
    autumn = [hour_start(AUTUMN + timedelta(minutes=m), BERLIN) for m in range(-90, 120, 30)]
    shown = sorted({start.astimezone(BERLIN).isoformat() for start in autumn})
    assert shown == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+01:00",  # the second pass of 02:00
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
    ]
    spring = {hour_start(SPRING + timedelta(minutes=m), BERLIN).astimezone(BERLIN).hour for m in range(-90, 120, 30)}
    assert spring == {0, 1, 3, 4}  # no 02:00
    for start in autumn:
        bounds = hour_bounds(start, BERLIN)
        assert bounds.end - bounds.start == timedelta(hours=1)
    kolkata = ZoneInfo("Asia/Kolkata")  # hours on the half hour of UTC
    start = hour_start(datetime(2026, 1, 1, 12, 10, tzinfo=UTC), kolkata)
    assert start == datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # a 30-minute change: a 90-minute and a 30-minute hour
    long_hour = hour_start(datetime(2026, 4, 4, 15, 10, tzinfo=UTC), lord_howe)
    assert hour_bounds(long_hour, lord_howe).end - long_hour == timedelta(minutes=90)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(-240, 240), st.integers(0, 5000)), max_size=25),
    change=st.sampled_from([SPRING, AUTUMN]),
)
def test_hours_add_up_to_the_days_and_the_period(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int]], change: datetime
) -> None:
    """Samples in any order (a clock that jumps) within four hours of a clock change: every
    hour bucket holds exactly what was booked to it, and the hours add up to the day buckets
    and to the period."""
    path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    booking = Booking(path, BERLIN, MONTHLY, at=change)
    rx = 0
    booking.book(reading(change - timedelta(hours=5), {"wg0": {A: (rx, 0)}}))
    hours: dict[int, int] = {}
    for minutes, grow in steps:
        at = change + timedelta(minutes=minutes)
        rx += grow
        booking.book(reading(at, {"wg0": {A: (rx, 0)}}))
        start = int(hour_start(at, BERLIN).timestamp())
        hours[start] = hours.get(start, 0) + grow
    book = booking.books.peers[("wg0", A)]
    assert book.id is not None
    opened = {
        "open_period": booking.books.open_period,
        "open_day": booking.books.open_day,
        "open_hour": booking.books.open_hour,
    }
    got = {b.start: b.rx for b in booking.ledger.history(book.id, "hour", 1000, **opened)}
    assert got == {start: n for start, n in hours.items() if n}
    days = {b.start: b.rx for b in booking.ledger.history(book.id, "day", 1000, **opened)}
    by_day: dict[int, int] = {}
    for start, n in got.items():
        day = day_number(datetime.fromtimestamp(start, BERLIN).date())
        by_day[day] = by_day.get(day, 0) + n
    assert {d: n for d, n in by_day.items() if n} == days
    periods = booking.ledger.history(book.id, "period", 10, **opened)
    assert sum(b.rx for b in periods) == sum(got.values()) == rx
    booking.close()


# ---- a real awgd under libfaketime --------------------------------------------------------


def faked(at: datetime) -> dict[str, str]:
    """The daemon's clock from `at` on; its zone is its config's (Europe/Berlin)."""
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "@" + at.strftime("%Y-%m-%d %H:%M:%S"), "TZ": "UTC"}


def sample_after(daemon, scripted_tool: ScriptedTool, rx: int, after: datetime) -> str:  # type: ignore[no-untyped-def]
    """Show the tool's counters at `rx`, and book them in a sample taken at or after `after`."""
    while True:  # the daemon's clock, read by a sample that books nothing new
        now = datetime.fromisoformat(daemon.result("traffic.sample")["sampled_at"])
        if now >= after:
            break
        # The fake clock runs at the real pace: what it still has to go, in real seconds.
        time.sleep((after - now).total_seconds() + 0.1)
    scripted_tool.set(dump({"wg0": {A: (rx, rx // 2)}}))
    taken = daemon.result("traffic.sample")["sampled_at"]
    assert datetime.fromisoformat(taken) >= after
    return taken  # type: ignore[no-any-return]


@pytest.mark.slow
@needs_faketime
@pytest.mark.parametrize("change", [SPRING, AUTUMN], ids=["spring", "autumn"])
def test_history_by_hour_across_a_clock_change_equals_days_and_period(
    daemons, scripted_tool: ScriptedTool, change: datetime
) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (0, 0)}}))
    begin = change - timedelta(seconds=8)
    daemon = daemons(scripted_tool.path, env=faked(begin), periods={"timezone": "Europe/Berlin"}).start()
    daemon.result("traffic.sample")  # the baseline
    sample_after(daemon, scripted_tool, 1000, begin)  # the hour before the change
    sample_after(daemon, scripted_tool, 1600, change)  # the hour after it
    hours = daemon.result("traffic.history", public_key=A, granularity="hour", limit=24)["buckets"]
    assert len(hours) == 2  # back to the hour the peer was first seen in
    shown = [(h["start"], h["end"], h["rx_bytes"], h["tx_bytes"]) for h in hours]
    if change is AUTUMN:
        assert shown == [
            ("2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00", 600, 300),  # the second 02:00
            ("2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", 1000, 500),
        ]
    else:
        assert shown == [
            ("2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00", 600, 300),
            ("2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", 1000, 500),  # 02:00 never was
        ]
    day = daemon.result("traffic.history", public_key=A, granularity="day", limit=1)["buckets"][0]
    period = daemon.result("traffic.get", public_key=A)["period"]
    assert sum(h["total_bytes"] for h in hours) == day["total_bytes"] == period["total_bytes"] == 2400
    table = awgctl("history", A, "--by", "hour", "--socket", daemon.socket)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line[:4].isdigit()]
    offsets = ["+0100", "+0200"] if change is AUTUMN else ["+0200", "+0100"]
    assert [row.split()[2] for row in rows] == offsets  # told apart by their offsets
    assert [row.count("#") for row in rows] == [18, 30]  # 900 and 1500 bytes, against the larger


@pytest.mark.slow
def test_hourly_history_off_says_so_and_writes_no_hour(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (0, 0)}}))
    daemon = daemons(scripted_tool.path, ledger={"hour_retention_days": 0}).start()
    daemon.result("traffic.sample")
    scripted_tool.set(dump({"wg0": {A: (500, 50)}}))
    daemon.result("traffic.sample")
    error = daemon.call("traffic.history", public_key=A, granularity="hour")["error"]
    assert error["code"] == -32602 and "hour_retention_days" in error["message"]
    assert daemon.result("traffic.history", public_key=A, granularity="day")["buckets"][0]["total_bytes"] == 550
    daemon.stop()
    with sqlite3.connect(daemon.ledger) as conn:
        assert conn.execute("SELECT count(*) FROM hour_usage").fetchone() == (0,)
        assert conn.execute("SELECT sum(hour_rx + hour_tx) FROM peer_counters").fetchone() == (0,)


def test_hours_are_kept_for_their_retention_and_pruned_with_the_days(tmp_path: Path) -> None:
    booking = Booking(tmp_path / "ledger.sqlite3", BERLIN, MONTHLY, at=AUTUMN)
    booking.book(reading(AUTUMN, {"wg0": {A: (0, 0)}}))
    for hour in range(1, 5):
        booking.book(reading(AUTUMN + timedelta(hours=hour), {"wg0": {A: (hour * 10, 0)}}))
    cut = int((AUTUMN + timedelta(hours=3)).timestamp())
    assert booking.ledger.prune_hours(cut) == 2  # the hours that began at +1 h and +2 h
    book = booking.books.peers[("wg0", A)]
    assert book.id is not None
    kept = booking.ledger.history(book.id, "hour", 10, open_period=None, open_day=None, open_hour=None)
    assert [b.start for b in kept] == [cut]
    booking.close()
