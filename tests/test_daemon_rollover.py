"""Period rollover on the real daemon: under libfaketime at a month's end, and on a fast schedule."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import ScriptedTool, dump, key

A = key("A")
# The library itself, not the `faketime` wrapper: signals must reach awgd, not a parent.
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
needs_faketime = pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="needs Debian's libfaketime (tests/run.sh installs faketime)"
)


def fake_clock(start: str) -> dict[str, str]:
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"@{start}", "TZ": "Europe/Moscow"}


def wait_for_period(daemon, start_prefix: str, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Poll server.status until the daemon has entered the period starting with `start_prefix`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = daemon.result("server.status")
        if status["period"]["start"].startswith(start_prefix):
            return status  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"the daemon never entered the period {start_prefix}")


@pytest.mark.slow
@needs_faketime
def test_month_rollover_under_faketime(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}))
    daemon = daemons(scripted_tool.path, env=fake_clock("2026-11-30 23:59:40")).start()
    status = daemon.result("server.status")
    assert status["period"] == {"start": "2026-11-01T00:00:00+03:00", "end": "2026-12-01T00:00:00+03:00"}
    scripted_tool.set(dump({"wg0": {A: (300, 150)}}))
    assert daemon.result("traffic.sample")["sampled_at"].startswith("2026-11-30T23:59")
    scripted_tool.set(dump({"wg0": {A: (400, 250)}}))  # seen only by the boundary sample at 00:00
    calls = scripted_tool.calls
    wait_for_period(daemon, "2026-12-01T00:00:00+03:00")
    assert scripted_tool.calls == calls + 1  # the boundary sample
    scripted_tool.set(dump({"wg0": {A: (450, 270)}}))
    assert daemon.result("traffic.sample")["sampled_at"].startswith("2026-12-01T00:00")
    peer = daemon.result("traffic.get", public_key=A)
    assert peer["period"]["start"] == "2026-12-01T00:00:00+03:00"
    assert (peer["period"]["rx_bytes"], peer["period"]["tx_bytes"]) == (50, 20)
    assert (peer["lifetime"]["rx_bytes"], peer["lifetime"]["tx_bytes"]) == (350, 170)
    buckets = daemon.result("traffic.history", public_key=A)["buckets"]
    assert [(b["start"], b["rx_bytes"], b["tx_bytes"]) for b in buckets] == [
        ("2026-12-01T00:00:00+03:00", 50, 20),
        ("2026-11-01T00:00:00+03:00", 300, 150),
    ]
    days = daemon.result("traffic.history", public_key=A, granularity="day", limit=2)["buckets"]
    assert [(d["start"], d["total_bytes"]) for d in days] == [
        ("2026-12-01T00:00:00+03:00", 70),
        ("2026-11-30T00:00:00+03:00", 450),
    ]


@pytest.mark.slow
@needs_faketime
def test_missed_boundary_goes_to_the_new_period(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}))
    before = daemons(scripted_tool.path, env=fake_clock("2026-11-30 23:50:00")).start()
    scripted_tool.set(dump({"wg0": {A: (200, 100)}}))
    before.result("traffic.sample")
    assert before.stop() == 0  # its final sample books nothing new
    scripted_tool.set(dump({"wg0": {A: (260, 130)}}))  # traffic while awgd was down, across midnight
    after = type(before)(before.dir, scripted_tool.path)
    after.config = before.config
    after.env = fake_clock("2026-12-01 00:05:00")
    after.start()
    try:
        peer = after.result("traffic.get", public_key=A)
        assert peer["period"]["start"] == "2026-12-01T00:00:00+03:00"
        assert peer["period"]["total_bytes"] == 90  # docs/DESIGN.md: the first sample after goes to the new period
        assert peer["lifetime"]["total_bytes"] == 190
        november = after.result("traffic.history", public_key=A)["buckets"][1]
        assert (november["start"], november["total_bytes"]) == ("2026-11-01T00:00:00+03:00", 100)
    finally:
        after.stop()


@pytest.mark.slow
def test_fast_period_schedule_rolls_over_without_faketime(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (0, 0)}}))
    daemon = daemons(scripted_tool.path, periods={"schedule": "* * * * * */4"}).start()  # a period every 4 s
    first = wait_for_period(daemon, daemon.result("server.status")["period"]["end"], timeout=10)["period"]
    scripted_tool.set(dump({"wg0": {A: (10, 1)}}))
    daemon.result("traffic.sample")  # early in `first`
    scripted_tool.set(dump({"wg0": {A: (30, 2)}}))  # seen only by the boundary sample: still `first`
    second = wait_for_period(daemon, first["end"], timeout=10)["period"]
    scripted_tool.set(dump({"wg0": {A: (70, 3)}}))
    daemon.result("traffic.sample")
    buckets = {
        b["start"]: b["total_bytes"] for b in daemon.result("traffic.history", public_key=A, limit=20)["buckets"]
    }
    assert buckets[first["start"]] == 32
    assert buckets[second["start"]] == 41
    assert sum(buckets.values()) == 73  # nothing lost or doubled
