"""awgd.trusted_clock against a model (hypothesis), and on a real awgd under libfaketime: a
forward excursion of the wall clock never expires a plan early (the review's D15); the plan
expires at its real instant, once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ScriptedTool, dump, key
from hypothesis import given, settings
from hypothesis import strategies as st
from test_daemon_rollover import LIBFAKETIME, needs_faketime
from test_plans import Subscription

from awgd.trusted_clock import STEP_CONFIRM_SECONDS, TOLERANCE_SECONDS, TrustedClock

A = key("A")

moves = st.lists(
    st.tuples(
        st.floats(0, 200, allow_nan=False),  # monotonic seconds passing
        st.sampled_from([0.0, 0.0, 0.0, 1.0, -30.0, 12.0, 3600.0, -3600.0]),  # a wall clock step
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(history=moves)
def test_a_wall_clock_ahead_is_believed_only_once_it_stayed_ahead(history: list[tuple[float, float]]) -> None:
    mono, offset = 1000.0, 0.0  # the wall clock is mono + offset + a start
    clock = TrustedClock(lambda: 1.8e9 + mono + offset, lambda: mono)
    believed = 1.8e9 + mono  # the model's last believed reading, and when (monotonic)
    believed_at = mono
    ahead_since: float | None = None
    for elapsed, step in history:
        mono += elapsed
        offset += step
        wall = 1.8e9 + mono + offset
        expected = believed + (mono - believed_at)
        shown = clock.timestamp()
        if wall <= expected + TOLERANCE_SECONDS:  # on time or behind: believed at once
            assert shown == wall
            believed, believed_at, ahead_since = wall, mono, None
            continue
        ahead_since = mono if ahead_since is None else ahead_since
        if mono - ahead_since >= STEP_CONFIRM_SECONDS:
            assert shown == wall
            believed, believed_at, ahead_since = wall, mono, None
        else:
            assert shown == pytest.approx(expected) and shown < wall


@needs_faketime
def test_a_forward_excursion_never_expires_a_plan_early(daemons, scripted_tool: ScriptedTool, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # the monotonic clock goes on as it is
    }
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}))
    daemon = daemons(scripted_tool.path, env=env).start()
    daemon.result("traffic.sample")
    feed = Subscription(daemon.socket, types=["plan.expired"])
    expires = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)  # plans count whole seconds
    planned = daemon.result("plan.set", interface="wg0", public_key=A, limit_bytes=None, expires_at=expires.isoformat())
    assert planned["blocked"] == []
    offset.write_text("+60\n")  # a minute ahead, for a moment
    sampled = daemon.result("traffic.sample")["sampled_at"]
    assert datetime.fromisoformat(sampled) > expires + timedelta(seconds=30)  # the daemon saw it
    assert daemon.result("traffic.get", public_key=A)["blocked"] == []  # not taken on that reading
    offset.write_text("+0\n")
    assert time.time() < expires.timestamp(), "the machine was too slow for this test's instants"
    assert daemon.result("traffic.get", public_key=A)["blocked"] == []
    expired = feed.event()  # at the real instant, by the scheduler
    assert expired["type"] == "plan.expired" and time.time() >= expires.timestamp()
    assert daemon.result("traffic.get", public_key=A)["blocked"] == ["expired"]
    assert [e["type"] for e in daemon.result("events.list")["events"]].count("plan.expired") == 1
    feed.close()
    assert "jumped 60 s ahead" in daemon.log_text()
