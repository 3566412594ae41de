"""Fleet plans (docs/FLEET.md, "Fleet plans"): one quota over a user's peers on several nodes.

The rules are pure (awgd.fleet_plans, awgd.fleet_sync) and tried here exhaustively; then real
awgd nodes (the scripted tool: the test sets their counters exactly) with their real
awgd-mirror rounds and a real PostgreSQL: the sum crossing the limit blocks the user on every
node, the quota events are stored once centrally, a top-up lifts every node, the centre being
away leaves each node counting its own share, and a node cannot read or count another's rows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import dump, key
from hypothesis import given, settings
from hypothesis import strategies as st
from test_daemon_rollover import fake_clock, needs_faketime

from awgd.fleet_plans import (
    FLEET_QUOTA,
    FleetUser,
    Share,
    accept,
    held,
    hot,
    joined,
    margin,
    member_triggers,
    others_in,
    reasons_after,
    rolled,
    used,
)
from awgd.fleet_sync import BadFleet, parse_sync
from awgd.quota import Plan

A, B, C = key("A"), key("B"), key("C")
WINDOW = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
NEXT_WINDOW = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())
PLAN = Plan(1000, "month", date(2026, 1, 1))


def user(
    others: int = 0, as_of: float = 100.0, window: int = WINDOW, members: frozenset[tuple[str, str]] = frozenset()
) -> FleetUser:
    return FleetUser("u1", PLAN, "UTC", 1, as_of, window, others, members or frozenset({("wg0", A)}))


# ---- the pure rules ----------------------------------------------------------------------------


@given(
    others=st.integers(0, 2000),
    shares=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 300)), max_size=4),
)
def test_usage_is_the_others_plus_each_share_less_what_was_booked_while_blocked(
    others: int, shares: list[tuple[int, int, int]]
) -> None:
    own = [(Share("u1", WINDOW, start, blocked), start + grown) for start, grown, blocked in shares]
    expected = others + sum(max(0, grown - blocked) for _, grown, blocked in shares)
    assert used(user(others), WINDOW, own) == expected
    reasons = held(PLAN, expected, WINDOW)
    assert (FLEET_QUOTA in reasons) == (expected >= 1000)


@given(others=st.integers(0, 5000), grown=st.integers(0, 5000))
def test_at_a_window_start_the_others_and_the_old_shares_count_nothing(others: int, grown: int) -> None:
    """So a node lifts the block at the window's start by itself, whatever the centre says."""
    share = Share("u1", WINDOW, 0)
    after = rolled(share, NEXT_WINDOW, grown)
    assert after == Share("u1", NEXT_WINDOW, grown) and after.used(grown) == 0
    assert others_in(user(others), NEXT_WINDOW) == 0
    assert used(user(others), NEXT_WINDOW, [(after, grown)]) == 0
    assert held(PLAN, 0, NEXT_WINDOW) == frozenset()
    # An earlier window (a clock that jumped back) never replaces a later one.
    assert rolled(after, WINDOW, grown + 10) == after


@given(held_at=st.floats(0, 1e9), news_at=st.floats(0, 1e9))
def test_older_news_never_replaces_newer(held_at: float, news_at: float) -> None:
    now = 1e9  # the node's clock: nothing held is ahead of it
    assert accept(held_at, news_at, now) == (news_at >= held_at)
    assert accept(None, news_at, now)
    # A word held from more than a day ahead of the node's clock orders nothing.
    assert accept(now + 86401, news_at, now)
    assert accept(now + 86400, news_at, now) == (news_at >= now + 86400)


@given(lifetime=st.integers(0, 10**9), booked=st.integers(-10, 10**9))
def test_a_peer_joining_mid_window_brings_what_it_booked_in_it(lifetime: int, booked: int) -> None:
    share = joined("u1", WINDOW, lifetime, booked)
    assert share.used(lifetime) == max(0, min(booked, lifetime))


@given(st.lists(st.sampled_from(["admin", "quota", "expired", "fleet_quota", "fleet_expired"]), unique=True))
def test_the_fleet_replaces_only_its_own_reasons(blocked: list[str]) -> None:
    for fleet in (frozenset(), frozenset({"fleet_quota"})):
        after = reasons_after(tuple(sorted(blocked)), fleet)
        assert set(after) == ({r for r in blocked if not r.startswith("fleet_")} | fleet)
        assert list(after) == sorted(after)


@given(
    usage=st.integers(0, 1200),
    totals=st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
    data=st.data(),
)
def test_while_every_member_stays_below_its_trigger_the_verdict_cannot_change(
    usage: int, totals: list[int], data: st.DataObject
) -> None:
    """A sample judges a user only when a member passes its trigger: below them all, the
    user's usage stays short of the next threshold (the limit, or the last warning's)."""
    plan = Plan(1000, "month", date(2026, 1, 1), warn_at=(0.8,))
    room = margin(plan, usage)
    aims = member_triggers(room, totals)
    if room is None:
        assert usage >= 1000 and aims == [None] * len(totals)
        return
    assert room == (800 if usage < 800 else 1000) - usage > 0
    grown = [data.draw(st.integers(0, max(0, aim - total - 1))) for aim, total in zip(aims, totals, strict=True)]  # type: ignore[operator]
    after = usage + sum(grown)
    assert (FLEET_QUOTA in held(plan, after, WINDOW)) == (FLEET_QUOTA in held(plan, usage, WINDOW))
    assert hot(plan, after) == hot(plan, usage)


# ---- fleet.sync's params -----------------------------------------------------------------------


def synced(**plan: Any) -> dict[str, Any]:
    base = {"limit_bytes": 1000, "reset": "month", "anchor": "2026-01-01", "timezone": "Europe/Berlin"}
    return {
        "user": "u1",
        "version": 3,
        "plan": {**base, **plan},
        "others": {"window_start": "2026-12-01T00:00:00+01:00", "used_bytes": 400},
        "members": [{"interface": "wg0", "public_key": A}],
    }


def test_a_sync_is_read_into_fleet_users() -> None:
    users, as_of = parse_sync([synced()], "2026-12-07T10:00:00Z")
    assert as_of == datetime(2026, 12, 7, 10, tzinfo=UTC).timestamp()
    (one,) = users
    assert (one.user, one.version, one.zone, one.others, one.members) == ("u1", 3, "Europe/Berlin", 400, {("wg0", A)})
    assert one.others_window == int(datetime(2026, 11, 30, 23, tzinfo=UTC).timestamp())
    assert one.plan.limit_bytes == 1000 and one.plan.reset == "month"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"plan": {"reset": "period", "anchor": "2026-01-01", "timezone": "UTC"}}, "reset"),
        ({"plan": {"reset": "month", "timezone": "UTC"}}, "anchor"),
        ({"plan": {"reset": "month", "anchor": "2026-01-01", "timezone": "Mars/Base"}}, "timezone"),
        ({"plan": {"reset": "month", "anchor": "2026-01-01"}}, "timezone"),
        ({"plan": {"reset": "month", "anchor": "2026-01-01", "timezone": "UTC", "limit_bytes": -1}}, "limit_bytes"),
        ({"plan": {"reset": "month", "anchor": "2026-01-01", "timezone": "UTC", "x": 1}}, "unknown field"),
        ({"members": [{"interface": "wg0\n[Peer]", "public_key": A}]}, "interface"),
        ({"members": [{"interface": "wg0", "public_key": "AAAA=\nEndpoint = x"}]}, "public_key"),
        ({"user": ""}, "user"),
        ({"user": "a\nb"}, "user"),
        ({"version": -1}, "version"),
        ({"others": {"window_start": "yesterday", "used_bytes": 1}}, "window_start"),
        ({"others": {"window_start": "2026-12-01T00:00:00Z", "used_bytes": -5}}, "used_bytes"),
    ],
)
def test_a_bad_sync_is_refused_naming_what(change: dict[str, Any], named: str) -> None:
    with pytest.raises(BadFleet, match=named):
        parse_sync([{**synced(), **change}], "2026-12-07T10:00:00Z")


def test_a_peer_in_two_users_or_a_user_twice_is_refused() -> None:
    other = {**synced(), "user": "u2"}
    with pytest.raises(BadFleet, match="member of 'u1' too"):
        parse_sync([synced(), other], "2026-12-07T10:00:00Z")
    with pytest.raises(BadFleet, match="listed twice"):
        parse_sync([synced(), {**synced(), "members": []}], "2026-12-07T10:00:00Z")
    with pytest.raises(BadFleet, match="as_of"):
        parse_sync([], "2026-12-07 10:00")


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=12,
    )
)
def test_any_json_is_taken_or_refused_with_bad_fleet(raw: Any) -> None:
    try:
        parse_sync(raw, "2026-12-07T10:00:00Z")
        parse_sync([raw], "2026-12-07T10:00:00Z")
    except BadFleet:
        pass


# ---- real nodes, real mirrors, a real PostgreSQL ---------------------------------------------

if importlib.util.find_spec("psycopg") is not None or importlib.util.find_spec("psycopg2") is not None:
    import postgres
    from test_fleet import Mirror, ScriptedNode, bed, mirror_for, pg  # noqa: F401  (fixtures)

    from awgd_fleet.reader import FleetClient, fleet_plan
else:  # pragma: no cover - tests/run.sh installs a driver
    postgres = None

needs_postgres = pytest.mark.skipif(
    postgres is None or postgres.problem() is not None,
    reason="needs PostgreSQL 15 and a driver (tests/run.sh installs them)",
)
LIMIT = 10_000


def planner(pg: Any) -> FleetClient:
    pg.psql("CREATE ROLE planner LOGIN PASSWORD 'planner-secret' IN ROLE awgd_planner;")
    return FleetClient(pg.url("planner", "planner-secret"))


def blocked(node: ScriptedNode, public_key: str) -> list[str]:
    return list(node.daemon.result("traffic.get", public_key=public_key)["blocked"])


def central_events(pg: Any) -> list[tuple[str, str, float]]:
    rows = pg.query("SELECT fleet_user, type, threshold FROM awgd.awgd_fleet_events ORDER BY id")
    return [(row[0], row[1], float(row[2])) for row in rows]


def rounds(*mirrors: Mirror) -> None:
    for mirror in mirrors:
        done = mirror.once()
        assert done.returncode == 0, done.stderr


def fleet_setup(
    daemons: Any, mirror_for: Any, pg: Any, tmp_path: Path
) -> tuple[ScriptedNode, ScriptedNode, Mirror, Mirror, FleetClient]:
    """User u1 with peer A on node-b and peer B on node-c, one quota of LIMIT bytes a month."""
    b = ScriptedNode(daemons, tmp_path / "tool-b")
    c = ScriptedNode(daemons, tmp_path / "tool-c")
    b.set({A: (0, 0), C: (0, 0)})
    c.set({B: (0, 0)})
    b.sample()
    c.sample()
    mb, mc = mirror_for("node-b", b.daemon), mirror_for("node-c", c.daemon)
    fleet = planner(pg)
    today = datetime.now(UTC).date()
    version = fleet.set_fleet_plan(
        "u1", fleet_plan(limit_bytes=LIMIT, reset="month", anchor=today, timezone="UTC", warn_at=(0.5,))
    )
    assert version == 1
    fleet.add_fleet_peer("u1", "node-b", "wg0", A)
    fleet.add_fleet_peer("u1", "node-c", "wg0", B)
    rounds(mb, mc)
    return b, c, mb, mc, fleet


@needs_postgres
@pytest.mark.slow
def test_one_quota_over_two_nodes_blocks_both_once_and_a_top_up_lifts_both(daemons, mirror_for, pg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    b, c, mb, mc, fleet = fleet_setup(daemons, mirror_for, pg, tmp_path)
    b.set({A: (3000, 3000), C: (50_000, 50_000)})  # C is no member: its traffic counts for nobody
    b.sample()
    rounds(mb, mc)
    usage = fleet.fleet_usage("u1")
    assert usage is not None and usage.used == 6000 and usage.limit_bytes == LIMIT
    assert central_events(pg) == [("u1", "quota.warning", 0.5)]
    assert blocked(b, A) == [] and blocked(c, B) == []

    # node-c's own sample takes the sum over the limit: it blocks at once, from its own share
    # and the last word it had of node-b's.
    c.set({B: (2500, 2500)})
    c.sample()
    assert blocked(c, B) == ["fleet_quota"]
    assert blocked(b, A) == []  # node-b has not heard yet
    rounds(mc, mb)  # node-c reports; node-b hears at its round and blocks without a sample
    assert blocked(b, A) == ["fleet_quota"]
    assert blocked(b, C) == []
    rounds(mb, mc, mb, mc)
    assert central_events(pg) == [("u1", "quota.warning", 0.5), ("u1", "quota.exceeded", 0.0)]
    assert fleet.fleet_usage("u1").used == 11_000  # type: ignore[union-attr]
    reasons = [e["data"]["reason"] for e in b.daemon.result("events.list", types=["peer.blocked"])["events"]]
    assert reasons == ["fleet_quota"]

    # The blocked device keeps sending: booked, and not usage.
    b.set({A: (3500, 3500), C: (50_000, 50_000)})
    b.sample()
    rounds(mb, mc)
    assert fleet.fleet_usage("u1").used == 11_000  # type: ignore[union-attr]
    shares = {
        s["public_key"]: s for s in b.daemon.result("fleet.sync", users=[], as_of="1970-01-01T00:00:00Z")["usage"]
    }
    assert shares[A]["used_bytes"] == 6000

    # A top-up: a higher limit, a new version; both nodes lift at their next round.
    plan = fleet_plan(
        limit_bytes=2 * LIMIT, reset="month", anchor=datetime.now(UTC).date(), timezone="UTC", warn_at=(0.5,)
    )
    assert fleet.set_fleet_plan("u1", plan) == 2
    rounds(mb, mc)
    assert blocked(b, A) == [] and blocked(c, B) == []
    unblocked = b.daemon.result("events.list", types=["peer.unblocked"])["events"]
    assert [e["data"]["reason"] for e in unblocked] == ["fleet_quota"]
    # The new limit's thresholds are announced afresh, once: 11,000 >= 0.5 x 20,000.
    rounds(mb, mc, mb)
    assert central_events(pg)[2:] == [("u1", "quota.warning", 0.5)]


@needs_postgres
@pytest.mark.slow
def test_with_the_centre_away_a_node_counts_its_own_share_on_the_last_word(daemons, mirror_for, pg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    b, c, mb, mc, fleet = fleet_setup(daemons, mirror_for, pg, tmp_path)
    b.set({A: (3000, 3000), C: (0, 0)})
    b.sample()
    rounds(mb, mc)  # node-c's last word: node-b used 6,000
    pg.stop()
    # node-b goes on too, unheard: node-c blocks no later than its own share reaches the
    # limit on top of the 6,000 it knows of.
    b.set({A: (3500, 3500), C: (0, 0)})
    b.sample()
    c.set({B: (1999, 2000)})
    c.sample()
    assert blocked(c, B) == []  # 6,000 + 3,999
    c.set({B: (2000, 2000)})
    c.sample()
    assert blocked(c, B) == ["fleet_quota"]  # 6,000 + 4,000
    assert mb.once().returncode == 1 and mc.once().returncode == 1
    assert blocked(b, A) == []  # 7,000 + the 0 it heard of node-c
    pg.start()
    rounds(mb, mc, mb)
    # Nothing lost, nothing doubled: the shares are absolute.
    assert fleet.fleet_usage("u1").used == 11_000  # type: ignore[union-attr]
    assert blocked(b, A) == ["fleet_quota"]
    assert [t for _, t, _ in central_events(pg)] == ["quota.warning", "quota.exceeded"]


@needs_postgres
@pytest.mark.slow
def test_news_older_than_the_nodes_is_ignored(daemons, mirror_for, pg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    b, _, mb, _, fleet = fleet_setup(daemons, mirror_for, pg, tmp_path)
    b.set({A: (5000, 5000), C: (0, 0)})
    b.sample()
    assert blocked(b, A) == ["fleet_quota"]  # its own share alone reaches the limit
    # A sync read before the node's decision (an older as_of) saying "no users" changes nothing.
    stale = b.daemon.result("fleet.sync", users=[], as_of="2000-01-01T00:00:00Z")
    assert stale["taken"] is False and stale["users"] == 1
    assert blocked(b, A) == ["fleet_quota"]
    # The same news, current, lifts it: the user is gone.
    fleet.remove_fleet_user("u1")
    rounds(mb)
    assert blocked(b, A) == []
    assert b.daemon.result("fleet.sync", users=[], as_of="2000-01-01T00:00:00Z")["users"] == 0
    # A plan no node takes (written past FleetClient's checks): the round still mirrors the
    # figures, and says why the fleet's word was refused.
    pg.psql("""INSERT INTO awgd.awgd_fleet_users (fleet_user, plan) VALUES ('bad', '{"reset": "period"}');""")
    pg.psql(f"INSERT INTO awgd.awgd_fleet_members VALUES ('node-b', 'wg0', '{C}', 'bad');")
    b.set({A: (6000, 6000), C: (1, 1)})
    b.sample()
    done = mb.once()
    assert done.returncode == 0 and "refused this round's fleet plans" in done.stderr, done.stderr
    assert pg.query(f"SELECT lifetime_rx FROM awgd.awgd_fleet_peers WHERE public_key = '{A}'") == [["6000"]]


@needs_postgres
@pytest.mark.slow
def test_a_node_sees_only_its_own_users_and_cannot_count_keys_it_does_not_own(
    daemons, mirror_for, pg, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    b, _, mb, mc, fleet = fleet_setup(daemons, mirror_for, pg, tmp_path)
    fleet.set_fleet_plan("u2", fleet_plan(limit_bytes=5, reset="day", anchor=date(2026, 1, 1), timezone="UTC"))
    fleet.add_fleet_peer("u2", "node-b", "wg0", C)
    # A third node, with a peer of its own and no member of any fleet user.
    d = ScriptedNode(daemons, tmp_path / "tool-d")
    d.set({key("D"): (0, 0)})
    d.sample()
    md = mirror_for("node-d", d.daemon)
    b.set({A: (3000, 3000), C: (0, 0)})
    b.sample()
    d.set({key("D"): (10**6, 10**6)})
    d.sample()
    rounds(mb, mc, md)
    assert blocked(b, C) == []  # u2's member has used nothing
    assert (
        blocked(d, key("D")) == [] and d.daemon.result("fleet.sync", users=[], as_of="2000-01-01T00:00Z")["users"] == 0
    )
    as_d = {"user": "node-d", "password": md.password}
    assert pg.psql("SELECT count(*) FROM awgd.fleet_plans()", **as_d).stdout.strip() == "0"
    as_c = {"user": "node-c", "password": mc.password}
    for table in ("awgd_fleet_users", "awgd_fleet_members", "awgd_fleet_usage", "awgd_fleet_events"):
        refused = pg.psql(f"SELECT * FROM awgd.{table}", check=False, **as_c)
        assert refused.returncode != 0 and "permission denied" in refused.stderr, table
    seen = pg.psql("SELECT fleet_user, others, members FROM awgd.fleet_plans()", **as_c).stdout.splitlines()
    assert [line.split("|")[:2] for line in seen] == [["u1", "6000"]]  # not u2; node-b's rows only summed
    # node-c publishes usage for node-b's key, and for its own key under another user: neither lands.
    forged = json.dumps(
        [
            {"i": "wg0", "k": A, "u": "u1", "w": datetime.now(UTC).timestamp(), "used": 10**9},
            {"i": "wg0", "k": B, "u": "u2", "w": datetime.now(UTC).timestamp(), "used": 10**9},
        ]
    )
    taken = pg.psql(f"SELECT awgd.fleet_report('{forged}')", **as_c).stdout.strip()
    assert taken == "0"
    assert fleet.fleet_usage("u1").used == 6000  # type: ignore[union-attr]
    assert fleet.fleet_usage("u2").used == 0  # type: ignore[union-attr]
    assert pg.query("SELECT count(*) FROM awgd.awgd_fleet_events WHERE type = 'quota.exceeded'") == [["0"]]
    # The mirror's right is its own: a bot's admin group may not pass fleet plans on.
    refused = b.daemon.call("fleet.sync", users=[], as_of=datetime.now(UTC).isoformat())
    assert "result" in refused  # root (the test) may: it is the daemon's owner


class HeldLock:
    """The owner holding a lock on a table in an open transaction (psql kept running), so
    that a mirror's round stops just there, mid-transaction."""

    def __init__(self, pg: Any, table: str) -> None:
        env = {**os.environ, "PGPASSWORD": pg.password or "", "PGOPTIONS": "-c search_path=pg_catalog,awgd"}
        command = [
            "psql",
            "-X",
            "-q",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(pg.port),
            "-U",
            postgres.ADMIN,
            "-d",
            postgres.DATABASE,
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"BEGIN; LOCK TABLE awgd.{table} IN EXCLUSIVE MODE; SELECT 'locked';\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("ROLLBACK;\n\\q\n")
            self.process.stdin.close()
            self.process.wait(30)


def waiting_on_a_lock(pg: Any, timeout: float = 30) -> None:
    """Until a mirror's statement waits on a lock (pg_stat_activity says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pg.query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'awgd-mirror' AND wait_event_type = 'Lock'"
        )
        if found == [["1"]]:
            return
        time.sleep(0.05)
    raise AssertionError("no mirror waited on the lock")


@needs_postgres
@pytest.mark.slow
def test_a_mirror_or_the_database_killed_mid_round_blocks_nobody_wrongly_and_loses_no_unblock(
    daemons, mirror_for, pg, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    b, c, mb, mc, fleet = fleet_setup(daemons, mirror_for, pg, tmp_path)
    b.set({A: (5000, 5000), C: (0, 0)})
    b.sample()
    rounds(mb, mc)
    assert blocked(b, A) == ["fleet_quota"] and blocked(c, B) == ["fleet_quota"]
    plan = fleet_plan(
        limit_bytes=2 * LIMIT, reset="month", anchor=datetime.now(UTC).date(), timezone="UTC", warn_at=(0.5,)
    )
    fleet.set_fleet_plan("u1", plan)  # a top-up

    # node-b's mirror: the node takes the news, then the round stops at its report and is killed.
    lock = HeldLock(pg, "awgd_fleet_usage")
    running = subprocess.Popen(
        mb.command("--once"), env=mb.environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        waiting_on_a_lock(pg)
        assert blocked(b, A) == []  # lifted before the round's end: the node decided
        running.send_signal(signal.SIGKILL)
        assert running.wait(30) == -signal.SIGKILL
    finally:
        lock.release()
    assert blocked(b, A) == []

    # node-c's: PostgreSQL itself killed mid-round.
    lock = HeldLock(pg, "awgd_fleet_usage")
    running = subprocess.Popen(
        mc.command("--once"), env=mc.environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    waiting_on_a_lock(pg)
    assert blocked(c, B) == []
    pg.kill()
    assert running.wait(60) == 1
    lock.release()
    pg.start()
    assert blocked(b, A) == [] and blocked(c, B) == []
    rounds(mb, mc, mb, mc)
    assert blocked(b, A) == [] and blocked(c, B) == []
    assert fleet.fleet_usage("u1").used == 10_000  # type: ignore[union-attr]
    assert central_events(pg) == [
        ("u1", "quota.warning", 0.5),
        ("u1", "quota.exceeded", 0.0),
        ("u1", "quota.warning", 0.5),  # the top-up's version
    ]


@needs_postgres
@needs_faketime
@pytest.mark.slow
def test_the_window_start_lifts_every_node_at_that_instant_with_the_centre_stopped(
    daemons, mirror_for, pg, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    clock = fake_clock("2026-12-07 23:59:35")  # Europe/Moscow: a day plan's window ends in 25 s
    b = ScriptedNode(daemons, tmp_path / "tool-b", env=clock)
    c = ScriptedNode(daemons, tmp_path / "tool-c", env=clock)
    b.set({A: (0, 0)})
    c.set({B: (0, 0)})
    b.sample()
    c.sample()
    mb, mc = mirror_for("node-b", b.daemon), mirror_for("node-c", c.daemon)
    fleet = planner(pg)
    fleet.set_fleet_plan(
        "u1", fleet_plan(limit_bytes=LIMIT, reset="day", anchor=date(2026, 1, 1), timezone="Europe/Moscow")
    )
    fleet.add_fleet_peer("u1", "node-b", "wg0", A)
    fleet.add_fleet_peer("u1", "node-c", "wg0", B)
    rounds(mb, mc)
    b.set({A: (3000, 3000)})
    b.sample()
    rounds(mb, mc)
    c.set({B: (2000, 2000)})
    c.sample()
    rounds(mc, mb)
    assert blocked(b, A) == ["fleet_quota"] and blocked(c, B) == ["fleet_quota"]
    pg.stop()
    # Each node wakes at its window's end by itself and lifts the block then.
    for node in (b, c):
        deadline = time.monotonic() + 60
        while node.daemon.result("events.list", types=["peer.unblocked"])["events"] == []:
            assert time.monotonic() < deadline, "the block was not lifted at the window's start"
            time.sleep(0.2)
        (lifted,) = node.daemon.result("events.list", types=["peer.unblocked"])["events"]
        assert lifted["data"] == {"reason": "fleet_quota"}
        assert lifted["at"].startswith("2026-12-08T00:00:0"), lifted["at"]
    assert blocked(b, A) == [] and blocked(c, B) == []
    # The new window counts from its start: a little more traffic blocks nobody.
    b.set({A: (3100, 3100)})
    b.sample()
    assert blocked(b, A) == []
    pg.start()
    rounds(mb, mc)
    assert fleet.fleet_usage("u1").used == 200  # type: ignore[union-attr]


# ---- fleet.sync on one real daemon (no database needed) ----------------------------------------


def sync_user(name: str, public_key: str, limit: int = 1000) -> dict[str, Any]:
    plan = {"limit_bytes": limit, "reset": "month", "anchor": "2026-01-01", "timezone": "UTC"}
    return {
        "user": name,
        "version": 1,
        "plan": plan,
        "others": None,
        "members": [{"interface": "wg0", "public_key": public_key}],
    }


@pytest.mark.slow
def test_fleet_sync_in_pages_is_taken_whole_and_survives_a_restart(daemons, scripted_tool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (0, 0), C: (0, 0)}}))
    daemon = daemons(scripted_tool.path).start()
    daemon.result("traffic.sample")
    scripted_tool.set(dump({"wg0": {A: (3000, 3000), C: (10, 10)}}))
    daemon.result("traffic.sample")
    first = daemon.result("fleet.sync", users=[sync_user("u1", A)], as_of="2026-12-07T10:00:00Z", more=True)
    assert first == {"taken": False, "pending": 1}
    assert daemon.result("traffic.get", public_key=A)["blocked"] == []  # not before the last page
    last = daemon.result("fleet.sync", users=[sync_user("u2", C)], as_of="2026-12-07T10:00:00Z")
    assert last["taken"] is True and last["users"] == 2
    usage = {share["public_key"]: share for share in last["usage"]}
    # Joined mid-window: what the node booked in the window before counts.
    assert usage[A]["used_bytes"] == 6000 and usage[C]["used_bytes"] == 20
    assert usage[A]["blocked"] == ["fleet_quota"] and usage[C]["blocked"] == []
    # A peer in two users across pages is refused, and nothing changes.
    daemon.result("fleet.sync", users=[sync_user("u1", A)], as_of="2026-12-07T11:00:00Z", more=True)
    twice = daemon.call("fleet.sync", users=[sync_user("u3", A)], as_of="2026-12-07T11:00:00Z")
    assert twice["error"]["code"] == -32602 and "member of 'u1' too" in twice["error"]["message"]
    # A page of another as_of starts over: only the last one's users stand.
    daemon.result("fleet.sync", users=[sync_user("u1", A, limit=10**9)], as_of="2026-12-07T12:00:00Z", more=True)
    done = daemon.result("fleet.sync", users=[sync_user("u2", C)], as_of="2026-12-07T12:00:01Z")
    assert done["users"] == 1 and daemon.result("traffic.get", public_key=A)["blocked"] == []
    # Kept across a restart: the block, and the newest as_of (older news is still refused).
    daemon.result("fleet.sync", users=[sync_user("u1", A)], as_of="2026-12-07T13:00:00Z")
    assert daemon.result("traffic.get", public_key=A)["blocked"] == ["fleet_quota"]
    assert daemon.stop() == 0
    daemon.start()
    assert daemon.result("traffic.get", public_key=A)["blocked"] == ["fleet_quota"]
    stale = daemon.result("fleet.sync", users=[], as_of="2026-12-07T12:59:59Z")
    assert stale["taken"] is False and stale["users"] == 1
    scripted_tool.set(dump({"wg0": {A: (3000, 3000), C: (600, 600)}}))
    daemon.result("traffic.sample")
    assert daemon.result("traffic.get", public_key=A)["blocked"] == ["fleet_quota"]
    assert daemon.result("traffic.get", public_key=C)["blocked"] == []  # u2 was dropped at 13:00
    # A throttle plan slows its members down instead, and lets go when the user goes.
    slow = sync_user("u3", C)
    slow["plan"] |= {"over_quota": "throttle", "throttle_kbit": 1000}
    daemon.result("fleet.sync", users=[sync_user("u1", A), slow], as_of="2026-12-07T14:00:00Z")
    throttled = daemon.result("traffic.get", public_key=C)
    assert throttled["blocked"] == [] and throttled["rate_limit"] == {"down_kbit": 1000, "up_kbit": 1000}
    daemon.result("fleet.sync", users=[sync_user("u1", A)], as_of="2026-12-07T15:00:00Z")
    assert daemon.result("traffic.get", public_key=C)["rate_limit"] is None
    kinds = [
        (e["type"], e["public_key"])
        for e in daemon.result("events.list", types=["peer.throttled", "peer.unthrottled"])["events"]
    ]
    assert kinds == [("peer.throttled", C), ("peer.unthrottled", C)]
    # Restarted with the centre silent, a node still blocks at its own sample: where each
    # member is judged next is worked out again from the stored shares.
    daemon.result(
        "fleet.sync", users=[sync_user("u1", A), sync_user("u4", C, limit=2000)], as_of="2026-12-07T16:00:00Z"
    )
    assert daemon.result("traffic.get", public_key=C)["blocked"] == []  # 1,200 of 2,000
    assert daemon.stop() == 0
    daemon.start()
    scripted_tool.set(dump({"wg0": {A: (3000, 3000), C: (1000, 1000)}}))
    daemon.result("traffic.sample")
    assert daemon.result("traffic.get", public_key=C)["blocked"] == ["fleet_quota"]


@needs_postgres
@pytest.mark.slow
def test_the_bot_tells_the_fleet_users_owner_once_each_across_a_restart(daemons, mirror_for, pg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("aiogram", reason="the bot extra (aiogram 3) is not installed")
    import asyncio

    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from test_aiogram_notifications import sent_to, told
    from test_aiogram_router import telegram

    from awgd_client.aiogram_notifications import FleetNotifier

    b, c, mb, mc, fleet = fleet_setup(daemons, mirror_for, pg, tmp_path)
    store = tmp_path / "fleet-last-id"
    alice = 1001

    bots: list[Bot] = []

    async def scenario() -> list[str]:
        async with telegram() as (fake, api):

            async def notifier() -> FleetNotifier:
                bot = Bot("42:TEST", session=AiohttpSession(api=TelegramAPIServer.from_base(api)))
                made = FleetNotifier(fleet, bot, {"u1": alice}.get, store, poll_seconds=0.2)
                await made.start()
                bots.append(bot)
                return made

            first = await notifier()
            b.set({A: (3000, 3000), C: (0, 0)})
            await asyncio.to_thread(b.sample)
            await asyncio.to_thread(rounds, mb, mc)
            await told(fake, alice, 1)
            await first.stop()
            c.set({B: (2500, 2500)})
            await asyncio.to_thread(c.sample)
            await asyncio.to_thread(rounds, mc, mb, mc, mb)  # the exceeded event, stored once
            second = await notifier()
            await told(fake, alice, 2)
            await asyncio.to_thread(rounds, mb, mc)
            await second.stop()
            for bot in bots:
                await bot.session.close()
            return sent_to(fake, alice)

    messages = asyncio.run(scenario())
    assert len(messages) == 2, messages
    assert "6\xa0kB of 10\xa0kB used on all servers (60%)" in messages[0], messages
    assert "all 10\xa0kB are used on all servers" in messages[1], messages


@needs_postgres
@pytest.mark.slow
@pytest.mark.wireguard
def test_on_real_amneziawg_the_fleet_block_cuts_the_device_off_and_a_top_up_lets_it_pass(  # type: ignore[no-untyped-def]
    daemons, bed, mirror_for, pg, tmp_path
) -> None:
    from test_peers import Server, pings

    real = Server(daemons, bed, on_server=(1, 2))
    device, neighbour = bed.peers[0], bed.peers[1]
    b = ScriptedNode(daemons, tmp_path / "tool-b")
    b.set({B: (0, 0)})
    b.sample()
    real.daemon.result("traffic.sample")
    ma, mb = mirror_for("node-a", real.daemon), mirror_for("node-b", b.daemon)
    fleet = planner(pg)
    plan = fleet_plan(limit_bytes=LIMIT, reset="month", anchor=datetime.now(UTC).date(), timezone="UTC")
    fleet.set_fleet_plan("u1", plan)
    fleet.add_fleet_peer("u1", "node-a", real.ifname, device.tunnel.public_key)
    fleet.add_fleet_peer("u1", "node-b", "wg0", B)
    rounds(ma, mb)
    assert pings(bed, device) and pings(bed, neighbour)
    b.set({B: (6000, 6000)})  # the user's other server takes the sum past the limit
    b.sample()
    rounds(mb, ma)
    assert real.result("traffic.get", public_key=device.tunnel.public_key)["blocked"] == ["fleet_quota"]
    assert not pings(bed, device)
    assert pings(bed, neighbour)  # nobody else's traffic is touched
    # An admin's own block and unblock on the same peer leave the fleet's reason alone.
    real.result("peer.block", public_key=device.tunnel.public_key)
    unblocked = real.result("peer.unblock", public_key=device.tunnel.public_key)
    assert unblocked["blocked"] == ["fleet_quota"] and not pings(bed, device)
    # A top-up lifts it, and the device passes again.
    fleet.set_fleet_plan("u1", {**plan, "limit_bytes": 100 * LIMIT})
    rounds(ma)
    assert real.result("traffic.get", public_key=device.tunnel.public_key)["blocked"] == []
    assert pings(bed, device)
    # Given new keys, a blocked peer carries its block over; the centre still counts the old
    # key, so the next round lifts it, and counting the new key blocks it again.
    fleet.set_fleet_plan("u1", plan)
    rounds(ma)
    assert real.result("traffic.get", public_key=device.tunnel.public_key)["blocked"] == ["fleet_quota"]
    new_key = key("N")
    rekeyed = real.result("peer.rekey", public_key=device.tunnel.public_key, new_public_key=new_key)
    assert rekeyed["blocked"] == ["fleet_quota"]
    rounds(ma)
    assert real.result("traffic.get", public_key=new_key)["blocked"] == []
    fleet.add_fleet_peer("u1", "node-a", real.ifname, new_key)
    rounds(ma)
    assert real.result("traffic.get", public_key=new_key)["blocked"] == ["fleet_quota"]


@pytest.mark.slow
def test_a_fleet_user_near_its_limit_is_sampled_often(daemons, scripted_tool) -> None:  # type: ignore[no-untyped-def]
    """Past its last warning threshold, below its limit: the next samples decide the cut-off,
    so they come every plans.fast_sampling_seconds (10 s), as for a node's own plan."""
    scripted_tool.set(dump({"wg0": {A: (0, 0)}}))
    daemon = daemons(scripted_tool.path).start()  # its own schedule: never
    daemon.result("traffic.sample")
    scripted_tool.set(dump({"wg0": {A: (450, 450)}}))
    daemon.result("traffic.sample")
    idle = daemon.result("server.status")["sampler"]["next_sample_at"]
    assert not idle.startswith(datetime.now(UTC).strftime("%Y-%m-%dT%H")), idle  # nothing soon
    daemon.result("fleet.sync", users=[sync_user("u1", A)], as_of="2026-12-07T10:00:00Z")  # 900 of 1,000
    calls = scripted_tool.calls
    deadline = time.monotonic() + 30
    while scripted_tool.calls == calls:
        assert time.monotonic() < deadline, "no sample came by itself"
        time.sleep(0.2)
    status = daemon.result("server.status")["sampler"]
    gap = datetime.fromisoformat(status["next_sample_at"]) - datetime.fromisoformat(status["last_sample_at"])
    assert gap <= timedelta(seconds=10), status
