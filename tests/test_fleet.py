"""The fleet (docs/FLEET.md): real awgd nodes, each with its real awgd-mirror process, and a
real PostgreSQL (Debian's postgresql-15, a throwaway cluster made here with initdb).

One node runs real amneziawg-go with clients pinging through it; the others read a scripted
tool, so that the tests set their counters exactly (and reset them) while the database or
the mirror is down, is killed, or the node's clock is off."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import postgres
import pytest
import sqlalchemy as sa
import test_plans
from conftest import ScriptedTool, dump, key
from daemon import Awgd
from test_daemon_rollover import LIBFAKETIME, needs_faketime
from test_peers import Server
from wgbed import TestBed

if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
    pytest.skip("needs psycopg or psycopg2 (Debian's python3-psycopg2)", allow_module_level=True)

from awgd_fleet import schema as fleet_schema
from awgd_fleet.reader import FleetClient, with_driver

_problem = postgres.problem()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_problem is not None, reason=_problem or ""),
]

ROOT = Path(__file__).resolve().parent.parent
bed = test_plans.bed  # two clients on real amneziawg-go 3.1
# A mirror that follows its node catches up within this (it asks again after each sample).
CATCH_UP_SECONDS = 60


@pytest.fixture
def pg() -> Iterator[postgres.Postgres]:
    made = postgres.Postgres(postgres.own_root())
    try:
        made.psql(fleet_schema.schema_sql())
        yield made
    finally:
        made.remove()


class Mirror:
    """One node's awgd-mirror, as its own process with its own config and role."""

    def __init__(self, pg: postgres.Postgres, name: str, daemon: Awgd, directory: Path) -> None:
        self.pg, self.name, self.daemon = pg, name, daemon
        directory.mkdir(parents=True, exist_ok=True)
        self.password = pg.add_node(name)
        secret = directory / "password"
        secret.write_text(self.password + "\n")
        secret.chmod(0o600)
        self.config = directory / "mirror.toml"
        url = f"postgresql://{name}@127.0.0.1:{pg.port}/{postgres.DATABASE}"
        fleet = f'[fleet]\nurl = "{url}"\nnode = "{name}"\npassword_file = "{secret}"\n'
        self.config.write_text(f'{fleet}\n[rpc]\nsocket = "{daemon.socket}"\n')
        self.log = directory / "mirror.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "awgd_fleet.mirror", "--config", str(self.config), "--verbose", *extra]

    @staticmethod
    def environment() -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client"), str(ROOT / "fleet")])}

    def once(self) -> subprocess.CompletedProcess[str]:
        return self.run("--once")

    def run(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*extra),
            env={**self.environment(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def start(self) -> Mirror:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=log, stderr=log)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            assert self.process.wait(30) == 0, self.log.read_text()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def mirror_for(pg: postgres.Postgres, tmp_path: Path) -> Iterator[Callable[[str, Awgd], Mirror]]:
    made: list[Mirror] = []

    def make(name: str, daemon: Awgd) -> Mirror:
        made.append(Mirror(pg, name, daemon, tmp_path / f"mirror-{name}"))
        return made[-1]

    yield make
    for mirror in made:
        if mirror.process is not None and mirror.process.poll() is None:
            mirror.process.kill()
            mirror.process.wait()


class ScriptedNode:
    """An awgd reading a scripted tool: the test sets every peer's counters."""

    def __init__(self, daemons: Any, directory: Path, **options: Any) -> None:
        self.tool = ScriptedTool(directory)
        self.counters: dict[str, tuple[int, int]] = {}
        self.tool.set(dump({"wg0": {}}))
        self.daemon: Awgd = daemons(self.tool.path, **options).start()

    def set(self, counters: dict[str, tuple[int, int]], handshake: int | None = None) -> None:
        self.counters = dict(counters)
        if len(counters) < 1000:
            self.tool.set(dump({"wg0": self.counters}, handshake))
            return
        # conftest.dump gives each peer its own endpoint port: not enough of them for this many.
        lines = [
            f"wg0\t{public}\t(none)\t(none)\t10.{i // 65536}.{i // 256 % 256}.{i % 256}/32\t0\t{rx}\t{tx}\toff"
            for i, (public, (rx, tx)) in enumerate(counters.items())
        ]
        self.tool.set(dump({"wg0": {}}) + "".join(line + "\n" for line in lines))

    def sample(self) -> None:
        self.daemon.result("traffic.sample")


def two_nodes(  # type: ignore[no-untyped-def]
    daemons, mirror_for, tmp_path: Path, b_counters: dict[str, tuple[int, int]], c_counters: dict[str, tuple[int, int]]
) -> tuple[ScriptedNode, ScriptedNode, Mirror, Mirror]:
    """Nodes node-b and node-c with these counters, sampled and mirrored once each."""
    b = ScriptedNode(daemons, tmp_path / "tool-b")
    c = ScriptedNode(daemons, tmp_path / "tool-c")
    b.set(b_counters)
    c.set(c_counters)
    b.sample()
    c.sample()
    mb, mc = mirror_for("node-b", b.daemon), mirror_for("node-c", c.daemon)
    assert mb.once().returncode == 0 and mc.once().returncode == 0
    return b, c, mb, mc


# ---- reading both sides ------------------------------------------------------------------------


def listing(daemon: Awgd) -> dict[tuple[str, str], dict[str, Any]]:
    """The node's own traffic.list, every peer, by (interface, public key)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    offset = 0
    while True:
        page = daemon.result("traffic.list", limit=10000, offset=offset, sort="public_key")
        for peer in page["peers"]:
            found[(peer["interface"], peer["public_key"])] = peer
        offset += len(page["peers"])
        if offset >= page["total"] or not page["peers"]:
            return found


def central(pg: postgres.Postgres, node: str) -> dict[tuple[str, str], dict[str, Any]]:
    rows = pg.query(
        "SELECT interface, public_key, coalesce(label, ''), present, period_rx, period_tx, lifetime_rx, lifetime_tx,"
        " extract(epoch FROM period_start)::bigint, extract(epoch FROM period_end)::bigint,"
        " array_to_string(blocked, ','), coalesce(extract(epoch FROM latest_handshake)::bigint, 0)"
        f" FROM awgd_fleet_peers WHERE node = '{node}'"
    )
    return {
        (row[0], row[1]): {
            "label": row[2] or None,
            "present": row[3] == "t",
            "period": (int(row[4]), int(row[5])),
            "lifetime": (int(row[6]), int(row[7])),
            "period_bounds": (int(row[8]), int(row[9])),
            "blocked": [part for part in row[10].split(",") if part],
            "latest_handshake": int(row[11]),
        }
        for row in rows
    }


def _unix(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def as_central(peer: dict[str, Any]) -> dict[str, Any]:
    """A PeerTraffic of traffic.list in the shape `central` reads the view in."""
    period = peer["period"]
    return {
        "label": peer["label"],
        "present": peer["present"],
        "period": (period["rx_bytes"], period["tx_bytes"]),
        "lifetime": (peer["lifetime"]["rx_bytes"], peer["lifetime"]["tx_bytes"]),
        "period_bounds": (_unix(period["start"]), _unix(period["end"])),
        "blocked": list(peer["blocked"]),
        "latest_handshake": _unix(peer["latest_handshake"]) if peer["latest_handshake"] else 0,
    }


# traffic.history is asked of this many peers (one call each); beyond them the closed
# periods are compared in one query with the current period's rows.
HISTORY_CHECKED = 50


def _differing(mine: dict[Any, Any], theirs: dict[Any, Any], what: str) -> str | None:
    """None when equal; else a short account (pytest's own diff of two 20,000-entry dicts
    takes minutes, and a catching-up mirror is compared many times)."""
    if mine == theirs:
        return None
    keys = sorted((k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)), key=repr)
    shown = "; ".join(f"{k}: node {mine.get(k)!r}, central {theirs.get(k)!r}" for k in keys[:3])
    return f"{what}: {len(keys)} differ, e.g. {shown}"


def mirror_difference(pg: postgres.Postgres, node: str, daemon: Awgd) -> str | None:
    """None when the view holds exactly the node's own traffic.list, and its periods the
    node's history; else what differs."""
    own = {key: as_central(peer) for key, peer in listing(daemon).items()}
    problem = _differing(own, central(pg, node), "peers")
    if problem:
        return problem
    rows = pg.query(
        "SELECT interface, public_key, extract(epoch FROM start)::bigint, rx, tx FROM awgd_fleet_periods"
        f" WHERE node = '{node}'"
    )
    periods: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
    for interface, public_key, start, rx, tx in rows:
        periods.setdefault((interface, public_key), {})[int(start)] = (int(rx), int(tx))
    current = {peer_key: peer["period"] for peer_key, peer in own.items()}  # as traffic.list has it
    seen = {peer_key: periods.get(peer_key, {}).get(peer["period_bounds"][0]) for peer_key, peer in own.items()}
    problem = _differing(current, seen, "current periods")
    if problem:
        return problem
    for interface, public_key in sorted(own)[:HISTORY_CHECKED]:
        history = daemon.result("traffic.history", public_key=public_key, interface=interface, limit=1000)
        booked = {_unix(b["start"]): (b["rx_bytes"], b["tx_bytes"]) for b in history["buckets"] if b["total_bytes"]}
        mirrored = {start: usage for start, usage in periods.get((interface, public_key), {}).items() if any(usage)}
        problem = _differing(booked, mirrored, f"periods of {public_key}")
        if problem:
            return problem
    return None


def assert_mirrored(pg: postgres.Postgres, node: str, daemon: Awgd) -> None:
    problem = mirror_difference(pg, node, daemon)
    assert problem is None, problem


def wait_mirrored(
    pg: postgres.Postgres, node: str, daemon: Awgd, mirror: Mirror, timeout: float = CATCH_UP_SECONDS
) -> None:
    """Until the view equals the node's figures (the mirror follows by itself)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            problem = mirror_difference(pg, node, daemon)
        except subprocess.CalledProcessError as exc:  # the database is still starting
            problem = f"psql: {exc.stderr}"
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the mirror did not catch up ({problem}); its log:\n{mirror.log_text()}")
        time.sleep(0.2)


def day_rows(pg: postgres.Postgres, node: str) -> dict[tuple[str, date], tuple[int, int]]:
    rows = pg.query(f"SELECT public_key, day, rx, tx FROM awgd_fleet_days WHERE node = '{node}'")
    return {(row[0], date.fromisoformat(row[1])): (int(row[2]), int(row[3])) for row in rows}


# ---- the views equal each node, to the byte ------------------------------------------------------


@pytest.mark.wireguard
def test_three_nodes_views_equal_each_nodes_own_figures(  # type: ignore[no-untyped-def]
    daemons, bed: TestBed, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    real = Server(daemons, bed, on_server=(1, 2))
    # A label that COPY's text format must escape (a backslash), with quotes, a comma and more.
    awkward = 'Ана\\"O\'Brien", tab\\t 🛰'
    real.daemon.result("peer.update", public_key=bed.peers[0].tunnel.public_key, interface=real.ifname, label=awkward)
    b = ScriptedNode(daemons, tmp_path / "tool-b")
    c = ScriptedNode(daemons, tmp_path / "tool-c")
    shared = key("K")  # a user with access on two servers
    b.set({key("B"): (1000, 2000), shared: (10, 20)})
    c.set({key("C"): (3000, 4000), shared: (30, 40)})
    for node in (b, c):
        node.sample()
    real.daemon.result("traffic.sample")
    b.set({key("B"): (1500, 2500), shared: (110, 220)})
    c.set({key("C"): (3300, 4400), shared: (330, 440)})
    bed.ping(bed.peers[0], 3)
    bed.ping(bed.peers[1], 2)
    for node in (b, c):
        node.sample()
    real.daemon.result("traffic.sample")
    mirrors = {
        "node-a": mirror_for("node-a", real.daemon),
        "node-b": mirror_for("node-b", b.daemon),
        "node-c": mirror_for("node-c", c.daemon),
    }
    for mirror in mirrors.values():
        done = mirror.once()
        assert done.returncode == 0, done.stderr
    for name, mirror in mirrors.items():
        assert_mirrored(pg, name, mirror.daemon)
    real_peers = central(pg, "node-a")
    assert len(real_peers) == 2 and all(peer["lifetime"][0] > 0 for peer in real_peers.values())
    assert real_peers[(real.ifname, bed.peers[0].tunnel.public_key)]["label"] == awkward

    fleet = FleetClient(pg.url())
    both = fleet.traffic(shared)
    assert [n.node for n in both.nodes] == ["node-b", "node-c"]
    assert (both.lifetime_rx, both.lifetime_tx) == (110 + 330, 220 + 440)
    assert fleet.traffic(key("Q")).nodes == ()
    nodes = {n.node: n for n in fleet.nodes()}
    assert set(nodes) == set(mirrors)
    assert all(n.healthy and 0 <= n.stale_seconds < CATCH_UP_SECONDS for n in nodes.values())
    fleet.close()

    # A round with nothing new changes no figure, and a second mirror round counts nothing twice.
    for mirror in mirrors.values():
        assert mirror.once().returncode == 0
        assert_mirrored(pg, mirror.name, mirror.daemon)


# ---- faults: nothing lost, nothing doubled, and the mirror catches up by itself --------------------


def blocked_mid_write(pg: postgres.Postgres, role: str) -> bool:
    """Whether the role's round has written (its transaction has an id) and waits on a lock."""
    found = pg.query(
        "SELECT count(*) FROM pg_stat_activity"
        f" WHERE usename = '{role}' AND backend_xid IS NOT NULL AND wait_event_type = 'Lock'"
    )
    return found[0][0] != "0"


class NodeRowsHeld:
    """A SHARE lock on awgd_nodes, taken before the sample whose round is to be cut: the round
    that copies it gets through its opening SELECT ... FOR UPDATE and its peers' rows, and
    stops at its closing write of the node's row, before its commit. Taken before the sample,
    so that no round can copy the sample and commit first."""

    def __init__(self, pg: postgres.Postgres) -> None:
        self.pg = pg
        self.engine = sa.create_engine(with_driver(pg.url()), future=True)
        self.admin = self.engine.connect()
        self.admin.execute(sa.text("LOCK TABLE awgd.awgd_nodes IN SHARE MODE"))

    def wait_stuck(self, role: str, mirror: Mirror) -> None:
        """Until the role's round has written and waits on the lock: a kill now is mid-write."""
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while not blocked_mid_write(self.pg, role):
            assert time.monotonic() < deadline, f"the mirror never wrote; its log:\n{mirror.log_text()}"
            time.sleep(0.05)

    def release(self) -> None:
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # PostgreSQL may have been killed under it
            self.admin.rollback()
            self.admin.close()
        self.engine.dispose()


def many(prefix: int, count: int, step: int) -> dict[str, tuple[int, int]]:
    """`count` peers with distinct valid keys, each at counters made of `step`."""
    keys = [f"{prefix:02d}{index:040d}A=" for index in range(count)]
    return {public: (step * (index + 1), 2 * step * (index + 1)) for index, public in enumerate(keys)}


def test_postgres_stopped_for_several_samples_loses_nothing(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    b = ScriptedNode(daemons, tmp_path / "tool-b")
    c = ScriptedNode(daemons, tmp_path / "tool-c")
    b.set({key("B"): (100, 200), key("K"): (5, 5)})
    c.set({key("C"): (300, 400)})
    b.sample()
    c.sample()
    mb, mc = mirror_for("node-b", b.daemon).start(), mirror_for("node-c", c.daemon).start()
    wait_mirrored(pg, "node-b", b.daemon, mb)
    wait_mirrored(pg, "node-c", c.daemon, mc)

    pg.stop()
    # The nodes go on alone: samples book, and one node's counters reset while it is cut off
    # (its interface restarted: 150 -> 40 books 40, not -110).
    b.set({key("B"): (150, 260), key("K"): (7, 9)})
    b.sample()
    c.set({key("C"): (350, 470)})
    c.sample()
    b.set({key("B"): (40, 30), key("K"): (7, 9)})
    b.sample()
    b.set({key("B"): (90, 80), key("K"): (1007, 9)})
    b.sample()
    peer = b.daemon.result("traffic.get", public_key=key("B"))
    assert (peer["lifetime"]["rx_bytes"], peer["lifetime"]["tx_bytes"]) == (100 + 50 + 40 + 50, 200 + 60 + 30 + 50)
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while "retrying" not in mb.log_text():  # the mirror noticed, and waits
        assert time.monotonic() < deadline, mb.log_text()
        time.sleep(0.1)

    pg.start()
    wait_mirrored(pg, "node-b", b.daemon, mb)
    wait_mirrored(pg, "node-c", c.daemon, mc)
    assert central(pg, "node-b")[("wg0", key("B"))]["lifetime"] == (240, 340)
    assert "mirroring again" in mb.log_text()
    # Told once, not once per retry.
    assert mb.log_text().count("retrying") <= 2, mb.log_text()


def test_postgres_killed_mid_write_loses_nothing(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    node = ScriptedNode(daemons, tmp_path / "tool")
    node.set(many(1, 20000, 1))
    node.sample()
    mirror = mirror_for("node-b", node.daemon).start()
    wait_mirrored(pg, "node-b", node.daemon, mirror, timeout=300)

    held = NodeRowsHeld(pg)
    node.set(many(1, 20000, 3))  # every peer moves: a round of 20,000 rows
    node.sample()
    held.wait_stuck("node-b", mirror)
    pg.kill()
    held.release()
    assert not pg.running()
    node.set(many(1, 20000, 5))
    node.sample()
    pg.start()  # crash recovery: the cut transaction is gone, the cursor with it
    wait_mirrored(pg, "node-b", node.daemon, mirror, timeout=300)
    peer = central(pg, "node-b")[("wg0", next(iter(many(1, 1, 1))))]
    assert peer["lifetime"] == (5, 10)  # a peer new to a running ledger counts from zero


def test_mirror_killed_mid_write_loses_nothing(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    node = ScriptedNode(daemons, tmp_path / "tool")
    node.set(many(2, 20000, 1))
    node.sample()
    mirror = mirror_for("node-b", node.daemon).start()
    wait_mirrored(pg, "node-b", node.daemon, mirror, timeout=300)
    cursor = pg.query("SELECT cursor FROM awgd_nodes WHERE node = 'node-b'")

    held = NodeRowsHeld(pg)
    node.set(many(2, 20000, 4))
    node.sample()
    held.wait_stuck("node-b", mirror)
    mirror.kill()
    held.release()
    # What the killed round wrote is gone with it: the old figures and the old cursor.
    deadline = time.monotonic() + 30
    while pg.query("SELECT count(*) FROM pg_stat_activity WHERE usename = 'node-b'") != [["0"]]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert pg.query("SELECT cursor FROM awgd_nodes WHERE node = 'node-b'") == cursor
    assert pg.query("SELECT count(*) FROM awgd_peers WHERE lifetime_rx > 1 * 20000") == [["0"]]

    mirror.start()
    wait_mirrored(pg, "node-b", node.daemon, mirror, timeout=300)
    first = central(pg, "node-b")[("wg0", next(iter(many(2, 1, 1))))]
    assert first["lifetime"] == (4, 8)


@needs_faketime
def test_a_node_whose_clock_is_behind_crosses_midnight_while_cut_off(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    # The node's clock says 2026-03-31, a quarter of an hour before its midnight (Moscow),
    # months behind the database's: its days and periods are its own, and staleness is
    # measured on the database's clock.
    env = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "@2026-03-31 23:59:50", "TZ": "Europe/Moscow"}
    node = ScriptedNode(daemons, tmp_path / "tool", env=env)
    node.set({key("B"): (1000, 1000)})
    node.sample()
    node.set({key("B"): (3000, 5000)})
    node.sample()
    mirror = mirror_for("node-b", node.daemon)
    done = mirror.run("--once", env=env)
    assert done.returncode == 0, done.stderr
    before = day_rows(pg, "node-b")
    assert before == {(key("B"), date(2026, 3, 31)): (3000, 5000)}

    # Cut off across the node's midnight and into a new month: a new day and a new period.
    deadline = time.monotonic() + 30
    while not node.daemon.result("server.status")["period"]["start"].startswith("2026-04-01"):
        assert time.monotonic() < deadline, "the node did not reach its midnight"
        time.sleep(0.2)
    node.set({key("B"): (3500, 5600)})
    node.sample()
    done = mirror.run("--once", env=env)
    assert done.returncode == 0, done.stderr
    assert_mirrored(pg, "node-b", node.daemon)
    assert day_rows(pg, "node-b") == {
        (key("B"), date(2026, 3, 31)): (3000, 5000),
        (key("B"), date(2026, 4, 1)): (500, 600),
    }
    periods = pg.query("SELECT start, rx, tx FROM awgd_fleet_periods WHERE node = 'node-b' ORDER BY start")
    assert [(row[1], row[2]) for row in periods] == [("3000", "5000"), ("500", "600")]
    (fleet_node,) = FleetClient(pg.url()).nodes()
    assert fleet_node.stale_seconds < CATCH_UP_SECONDS  # the database's clock, not the node's
    assert fleet_node.last_sample_at is not None
    assert fleet_node.last_sample_at < datetime.now(UTC) - timedelta(days=30)  # the node's own clock


def test_the_daemon_restarting_and_periods_rolling_while_the_mirror_is_away(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    node = ScriptedNode(daemons, tmp_path / "tool", periods={"schedule": "* * * * * */4"})  # a period every 4 s
    node.set({key("B"): (10, 10), key("C"): (0, 0)})
    node.sample()
    mirror = mirror_for("node-b", node.daemon)
    assert mirror.once().returncode == 0
    for step in range(1, 4):  # traffic in three more periods
        started = node.daemon.result("server.status")["period"]["start"]
        node.set({key("B"): (10 + 100 * step, 10 + 200 * step), key("C"): (0, 0)})
        node.sample()
        deadline = time.monotonic() + 30
        while node.daemon.result("server.status")["period"]["start"] == started:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    node.daemon.stop()
    node.daemon.start()  # a new daemon: the mirror's cursor is not its own
    node.set({key("B"): (1000, 2000), key("C"): (7, 0)})
    node.sample()
    done = mirror.once()
    assert done.returncode == 0, done.stderr
    assert_mirrored(pg, "node-b", node.daemon)
    rows = pg.query(f"SELECT sum(rx), sum(tx) FROM awgd_fleet_periods WHERE public_key = '{key('B')}'")
    assert rows == [["1000", "2000"]]  # every period's share, once


# ---- roles: a node writes only its own rows; readers read the views --------------------------------


def test_one_nodes_role_cannot_touch_another_nodes_rows(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    _b, _c, mb, _mc = two_nodes(daemons, mirror_for, tmp_path, {key("B"): (100, 100)}, {key("C"): (300, 300)})
    before = {
        table: pg.query(f"SELECT * FROM {table} WHERE node = 'node-c' ORDER BY 1, 2, 3")
        for table in fleet_schema.TABLES
    }

    def as_b(sql: str) -> subprocess.CompletedProcess[str]:
        return pg.psql(sql, user="node-b", password=mb.password, check=False)

    row = "'wg0', 'X', true, now(), now(), now(), 0, 0, 0, 0"
    inserted = as_b(
        "INSERT INTO awgd_peers (node, interface, public_key, present, first_seen, period_start, period_end,"
        f" period_rx, period_tx, lifetime_rx, lifetime_tx) VALUES ('node-c', {row})"
    )
    assert inserted.returncode != 0 and "permission denied" in inserted.stderr
    for table in fleet_schema.TABLES:
        changed = as_b(
            f"UPDATE {table} SET mirrored_at = now() - interval '1 day' WHERE node = 'node-c' RETURNING node"
        )
        assert changed.returncode != 0 and "permission denied" in changed.stderr, (table, changed)
        deleted = as_b(f"DELETE FROM {table} WHERE node = 'node-c' RETURNING node")
        assert deleted.returncode != 0 and "permission denied" in deleted.stderr, (table, deleted)
        seen = as_b(f"SELECT count(*) FROM {table} WHERE node = 'node-c'")
        assert seen.stdout.strip() == "0"  # not even read
        # D11: no lock that blocks anyone's writes (ACCESS SHARE, which only reading takes, blocks none).
        for mode in ("ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE"):
            locked = as_b(f"BEGIN; LOCK TABLE {table} IN {mode} MODE; COMMIT;")
            assert locked.returncode != 0 and "permission denied" in locked.stderr, (table, mode, locked)
    moved = as_b("UPDATE awgd_peers SET node = 'node-c' WHERE node = 'node-b'")
    assert moved.returncode != 0 and "permission denied" in moved.stderr
    # The write functions write the caller's own rows, whatever the rows say.
    row = json.dumps([{"i": "wg0", "k": key("C"), "d": "2026-01-01", "rx": 7, "tx": 7}])
    assert as_b(f"SELECT awgd.mirror_days('{row}')").returncode == 0
    assert pg.query("SELECT node FROM awgd_days WHERE day = '2026-01-01'") == [["node-b"]]
    pg.psql("DELETE FROM awgd_days WHERE day = '2026-01-01'")
    assert {
        table: pg.query(f"SELECT * FROM {table} WHERE node = 'node-c' ORDER BY 1, 2, 3")
        for table in fleet_schema.TABLES
    } == before
    assert before["awgd_nodes"] and before["awgd_peers"]  # (the open period and day live in the peer's row)

    # A reader sees every node through the views, and nothing else.
    pg.psql("CREATE ROLE bot LOGIN PASSWORD 'bot-secret' IN ROLE awgd_reader;")
    as_bot = {"user": "bot", "password": "bot-secret", "check": False}
    seen = pg.psql("SELECT node, lifetime_rx FROM awgd_fleet_peers ORDER BY node", **as_bot)  # type: ignore[arg-type]
    assert seen.stdout.split() == ["node-b|100", "node-c|300"]
    assert pg.psql("SELECT count(*) FROM awgd_peers", **as_bot).returncode != 0  # type: ignore[arg-type]
    assert pg.psql("DELETE FROM awgd_fleet_peers", **as_bot).returncode != 0  # type: ignore[arg-type]
    totals = FleetClient(pg.url("bot", "bot-secret")).traffic(key("C"))
    assert totals.lifetime_total == 600


# ---- the schema -------------------------------------------------------------------------------------


def test_the_schema_is_idempotent_and_the_mirror_checks_it(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "awgd_fleet.mirror", "--print-schema"],
        env=Mirror.environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == fleet_schema.schema_sql()
    pg.psql(printed)  # again, over the fixture's: a no-op that also re-makes the views and policies
    assert pg.query("SELECT max(version) FROM awgd_schema") == [[str(fleet_schema.SCHEMA_VERSION)]]
    indexes = {row[0] for row in pg.query("SELECT indexname FROM pg_indexes WHERE tablename LIKE 'awgd_%'")}
    assert {"awgd_peers_by_key", "awgd_periods_by_key", "awgd_days_by_key", "awgd_peers_pkey"} <= indexes

    node = ScriptedNode(daemons, tmp_path / "tool")
    node.set({key("B"): (1, 1)})
    node.sample()
    # A role not named like its node is refused, with what to do.
    wrong = mirror_for("node-b", node.daemon)
    wrong.config.write_text(wrong.config.read_text().replace('node = "node-b"', 'node = "node-x"'))
    done = wrong.once()
    assert done.returncode == 2 and "named like the node" in done.stderr
    # A database without the schema: told to print it.
    pg.psql("CREATE DATABASE empty", database="postgres")
    pg.psql("GRANT CONNECT ON DATABASE empty TO awgd_node", database="postgres")
    bare = mirror_for("node-y", node.daemon)
    bare.config.write_text(bare.config.read_text().replace(f'/{postgres.DATABASE}"', '/empty"'))
    done = bare.once()
    assert done.returncode == 2 and "--print-schema" in done.stderr, done.stderr
    # A schema newer than the mirror: told which version to print.
    pg.psql("INSERT INTO awgd_schema (version) VALUES (99)")
    right = mirror_for("node-z", node.daemon)
    done = right.once()
    assert done.returncode == 2 and "version 99" in done.stderr, done.stderr


# ---- the schema's own hardening (issue 26, D8) --------------------------------------------------

# Functions a node's role plants in `public` where PostgreSQL 14 and older let PUBLIC create
# (CVE-2018-1058's pattern): each has a closer argument type than pg_catalog's, so an
# unqualified call on a path holding `public` would run it as the caller, and it says so.
PLANTED = """
CREATE TABLE public.pwned (who text, what text);
GRANT INSERT, SELECT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.to_timestamp(bigint) RETURNS timestamptz LANGUAGE sql AS
    $$ INSERT INTO public.pwned VALUES (current_user, 'to_timestamp'); SELECT pg_catalog.now() $$;
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE sql AS
    $$ INSERT INTO public.pwned VALUES (current_user, 'make_interval'); SELECT interval '1 hour' $$;
CREATE FUNCTION public.format(text, name) RETURNS text LANGUAGE sql AS
    $$ INSERT INTO public.pwned VALUES (current_user, 'format'); SELECT 'SELECT 1' $$;
"""


def test_functions_planted_in_public_never_run(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    pg.psql("GRANT CREATE ON SCHEMA public TO PUBLIC")  # PostgreSQL 14's default, and any upgraded from it
    _b, c, mb, mc = two_nodes(daemons, mirror_for, tmp_path, {key("B"): (100, 100)}, {key("C"): (300, 300)})
    planted = pg.psql(PLANTED, user="node-b", password=mb.password, check=False)
    assert planted.returncode == 0, planted.stderr  # what the review did on PostgreSQL 14
    c.set({key("C"): (400, 450)})
    c.sample()
    assert mc.once().returncode == 0  # another node's mirror
    pg.psql(fleet_schema.schema_sql())  # the owner's migration, run again
    pg.psql("CREATE ROLE bot LOGIN PASSWORD 'bot-secret' IN ROLE awgd_reader;")
    reading = FleetClient(pg.url("bot", "bot-secret"))
    assert reading.traffic(key("C")).lifetime_total == 850 and reading.nodes()
    reading.close()
    # The views and the mirror's writes reached only pg_catalog's functions.
    assert pg.query("SELECT who, what FROM public.pwned") == []
    assert pg.query("SELECT count(*) FROM awgd.awgd_fleet_peers WHERE online IS NOT NULL") == [["2"]]
    # Nothing of the fleet's is in `public`; in `awgd` only its owner may create.
    assert (
        pg.query(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE nspname = 'public' AND relname LIKE 'awgd%'"
        )
        == []
    )
    assert pg.query("SELECT has_schema_privilege('public', 'awgd', 'CREATE')") == [["f"]]


def test_the_mirror_refuses_a_path_where_public_may_create(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    node = ScriptedNode(daemons, tmp_path / "tool")
    node.set({key("B"): (1, 1)})
    node.sample()
    pg.psql("GRANT CREATE ON SCHEMA awgd TO PUBLIC")
    done = mirror_for("node-b", node.daemon).once()
    assert done.returncode == 2 and "REVOKE CREATE ON SCHEMA awgd FROM PUBLIC" in done.stderr, done.stderr
    assert pg.query("SELECT count(*) FROM awgd.awgd_peers") == [["0"]]


# The schema SQL of version 1, as awgd-mirror --print-schema printed it (tables in `public`).
SCHEMA_V1 = (ROOT / "tests" / "data" / "fleet_schema_v1.sql").read_text()


def test_a_version_1_database_moves_into_its_own_schema(tmp_path: Path) -> None:
    made = postgres.Postgres(postgres.own_root())
    try:
        made.psql("SET search_path = public;\n" + SCHEMA_V1)  # as the last release made it, with a row
        made.psql(
            "INSERT INTO public.awgd_days (node, interface, public_key, day, rx, tx)"
            " VALUES ('n', 'wg0', 'K', '2026-11-01', 5, 6)"
        )
        made.psql(fleet_schema.schema_sql())
        assert made.query("SELECT node, rx, tx FROM awgd.awgd_fleet_days") == [["n", "5", "6"]]
        assert made.query("SELECT version FROM awgd.awgd_schema ORDER BY 1") == [["1"], ["2"], ["3"], ["4"]]
        gone = "SELECT to_regclass('public.awgd_days') IS NULL, to_regclass('public.awgd_schema') IS NULL"
        assert made.query(gone) == [["t", "t"]]
        policies = made.query("SELECT count(*) FROM pg_policies WHERE schemaname = 'awgd'")
        assert policies == [[str(len(fleet_schema.TABLES))]]
    finally:
        made.remove()


def test_a_table_lock_stalls_nobody_for_long(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    """The review's D11: a node's role took ACCESS EXCLUSIVE on awgd_peers, and another node's
    round and the bot's read waited the full 29 s. A node's role can no longer take it (the
    test above); a lock someone else holds (the owner's maintenance) costs each a few
    seconds: it gives up after its lock_timeout."""
    _b, c, _mb, mc = two_nodes(daemons, mirror_for, tmp_path, {key("B"): (100, 100)}, {key("C"): (300, 300)})
    pg.psql("CREATE ROLE bot LOGIN PASSWORD 'bot-secret' IN ROLE awgd_reader;")
    engine = sa.create_engine(with_driver(pg.url()), future=True)  # the owner
    holder = engine.connect()
    try:
        holder.execute(sa.text("LOCK TABLE awgd.awgd_peers IN ACCESS EXCLUSIVE MODE"))
        c.set({key("C"): (400, 400)})
        c.sample()
        started = time.monotonic()
        done = mc.once()
        waited = time.monotonic() - started
        assert done.returncode == 1 and "lock timeout" in done.stderr, done.stderr
        assert waited < 20, waited
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            FleetClient(pg.url("bot", "bot-secret")).traffic(key("C"))
        assert time.monotonic() - started < 15
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert mc.once().returncode == 0  # and once the lock is gone, the round goes through
    assert FleetClient(pg.url("bot", "bot-secret")).traffic(key("C")).lifetime_total == 800


def test_rows_a_node_publishes_for_a_key_bound_elsewhere_are_not_summed(  # type: ignore[no-untyped-def]
    daemons, pg: postgres.Postgres, mirror_for, tmp_path: Path
) -> None:
    """The review's D16: a node published rows for another node's key, and the fleet's sums
    believed them. The owner binds a key to its nodes (awgd_keys); other nodes' rows of it
    are shown bound = false and left out of FleetClient's sums."""
    # node-c claims the key too: a hostile or mistaken node.
    two_nodes(daemons, mirror_for, tmp_path, {key("U"): (100, 100)}, {key("U"): (5000, 5000)})
    pg.psql("CREATE ROLE bot LOGIN PASSWORD 'bot-secret' IN ROLE awgd_reader;")
    fleet = FleetClient(pg.url("bot", "bot-secret"))
    open_key = fleet.traffic(key("U"))
    assert open_key.lifetime_total == 10200 and {n.bound for n in open_key.nodes} == {None}  # not bound: both count
    pg.psql(f"INSERT INTO awgd_keys (public_key, node) VALUES ('{key('U')}', 'node-b')")
    bound = fleet.traffic(key("U"))
    assert {n.node: n.bound for n in bound.nodes} == {"node-b": True, "node-c": False}
    assert bound.lifetime_total == 200 and bound.period_total == 200
    fleet.close()
    # Only the owner keeps the bindings.
    refused = pg.psql("INSERT INTO awgd_keys VALUES ('x', 'node-c')", user="bot", password="bot-secret", check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr
