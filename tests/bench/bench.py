"""awgd's benchmarks: every figure beside the floor it cannot beat, measured in the same run.

Run as root with `bash tests/bench/run.sh` (not part of the test suite). Prints a table and
writes every figure, with medians, minima, maxima and the machine's description, to a JSON
file (default bench-results.json). `--quick` uses fewer peers and repeats, for a smoke run;
`--only rpc,memory` runs some sections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import importlib.util
import itertools
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client"), str(ROOT / "fleet"), str(HERE.parent / "helpers")]

import amnezia  # noqa: E402
import postgres  # noqa: E402
from daemon import Awgd  # noqa: E402
from wgbed import AMNEZIAWG, WIREGUARD, Flavor, TestBed, available  # noqa: E402

from awgd.bookkeeper import Bookkeeper  # noqa: E402
from awgd.config import Config  # noqa: E402
from awgd.dump_parser import DumpParser  # noqa: E402
from awgd.fleet_plans import FleetUser, Share  # noqa: E402
from awgd.gc_policy import CollectorPolicy  # noqa: E402
from awgd.ledger import Ledger  # noqa: E402
from awgd.periods import period_containing  # noqa: E402
from awgd.plans import Judged, PlanState, lifetime, window_at  # noqa: E402
from awgd.quota import Plan, start  # noqa: E402
from awgd.sampling import Sampler  # noqa: E402
from awgd.system_reader import Reading  # noqa: E402
from awgd_fleet import schema as fleet_schema  # noqa: E402
from awgd_fleet.mirror import Mirror as FleetMirror  # noqa: E402
from awgd_fleet.mirror import MirrorConfig  # noqa: E402

ZONE = ZoneInfo("UTC")
# Far above what any benchmark peer uses: the plans are judged, never hot, never blocking.
PLAN_LIMIT = 10**15
PLANNED_SHARE = 0.1
RESULTS: dict[str, Any] = {}
ROWS: list[tuple[str, str, str, str, str]] = []  # what, figure, floor, ratio, target


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def row(what: str, figure: str, floor: str, ratio: float | None, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else (" ok" if ok else " MISSED")
    ROWS.append((what, figure, floor, "" if ratio is None else f"{ratio:.3f}x", target + verdict))


def ratio_row(what: str, figures: list[float], floors: list[float], target: float | None) -> float:
    """A row of the medians of `figures` and `floors` and their ratio, against `target` (a
    ratio not to exceed; None: only reported). Returns the ratio."""
    base = statistics.median(floors)
    ratio = statistics.median(figures) / base
    met = None if target is None else ratio <= target
    row(what, ms(statistics.median(figures)), ms(base), ratio, "" if target is None else f"<= {target}x", met)
    return ratio


# ---- synthetic dumps in the real format ---------------------------------------------------


def keys(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [base64.b64encode(rng.randbytes(32)).decode() for _ in range(n)]


def synthetic_dump(
    peer_keys: list[str], counters: list[tuple[int, int]], handshake: int, order: list[int] | None = None
) -> bytes:
    """A dump of one interface with the peers in `order` (default: as given, like the kernel's
    list; wireguard-go and amneziawg-go print a new order every time)."""
    head = f"wg0\t{peer_keys[0]}\t{peer_keys[1]}\t51820\toff"
    lines = [head]
    for i in order if order is not None else range(len(peer_keys)):
        key, (rx, tx) = peer_keys[i], counters[i]
        lines.append(
            f"wg0\t{key}\t(none)\t198.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:51820\t10.{i >> 16 & 255}."
            f"{i >> 8 & 255}.{i & 255}/32\t{handshake}\t{rx}\t{tx}\toff"
        )
    return ("\n".join(lines) + "\n").encode()


def advance_counters(counters: list[tuple[int, int]], fraction: float, rng: random.Random) -> list[tuple[int, int]]:
    return [(rx + 1500, tx + 3000) if rng.random() < fraction else (rx, tx) for rx, tx in counters]


# ---- 1. the floor: `awg show all dump` on real amneziawg-go (wg on wireguard-go without it) ---

TIMER = """
import json, subprocess, sys, time
tool = sys.argv[4]
runs = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    out = subprocess.run([tool, "show", "all", "dump"], capture_output=True, check=True).stdout
    runs.append(time.perf_counter() - t)
naive = []
key = sys.argv[2].encode()
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    out = subprocess.run([tool, "show", "all", "dump"], capture_output=True, check=True).stdout
    line = next(l for l in out.split(b"\\n") if key in l)
    naive.append(time.perf_counter() - t)
print(json.dumps({"runs": runs, "naive": naive, "lines": out.count(b"\\n")}))
"""


def interface_config(flavor: Flavor, private_key: str, port: int, peer_keys: list[str]) -> str:
    """An interface with these peers, in `setconf` form, with the flavor's obfuscation. Every
    peer has an endpoint, as every peer of a server whose peers all move has, and as every
    peer of the synthetic dumps has (the same one): the tool prints it in every dump, which
    is part of the floor's cost (tests/bench/NOTES.md). Nothing is sent to them: a peer with
    no traffic queued and no keepalive starts no handshake."""
    head = [f"[Interface]\nPrivateKey = {private_key}\nListenPort = {port}"]
    head += [f"{name} = {value}" for name, value in flavor.obfuscation.items()]
    parts = ["\n".join(head) + "\n"]
    parts += [
        f"[Peer]\nPublicKey = {k}\nAllowedIPs = 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32\n"
        f"Endpoint = 198.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:51820\n"
        for i, k in enumerate(peer_keys)
    ]
    return "\n".join(parts)


def real_interface(bed: TestBed, n: int, workdir: Path) -> list[str]:
    """Configure the bed's server interface with n peers in one `setconf`."""
    server = bed.servers[0]
    peer_keys = keys(n, seed=n)
    conf = workdir / f"wg-{n}.conf"
    conf.write_text(interface_config(bed.flavor, server.private_key, server.port, peer_keys))
    server.wg("setconf", server.ifname, str(conf))
    return peer_keys


def floor(bed: TestBed, n: int, repeats: int, workdir: Path) -> dict[str, Any]:
    peer_keys = real_interface(bed, n, workdir)
    tool = bed.flavor.tool
    out = bed.server.run(sys.executable, "-c", TIMER, str(repeats), peer_keys[n // 2], "10", tool, timeout=600)
    data = json.loads(out)
    assert data["lines"] >= n
    return {"dump": summary(data["runs"]), "naive_lookup": summary(data["naive"]), "keys": peer_keys}


# ---- 2. awgd's own cost per sample (parse + accounting + commit, no tool) --------------------


class Booker:
    """The daemon's per-sample path without the tool: parse, then the daemon's own Sampler
    (the books take the reading, the ledger writes it, the books commit it), on one event
    loop and under the daemon's garbage collector policy, as in the daemon."""

    def __init__(self, workdir: Path, at: datetime, *, hours: bool = True) -> None:
        self.path = workdir / "ledger.sqlite3"
        self.ledger = Ledger.open(f"sqlite:///{self.path}")
        config = Config(zone=ZONE, hour_retention_days=31 if hours else 0)
        period = period_containing(at, config.periods_schedule, ZONE)
        self.sampler = Sampler(Bookkeeper.load(self.ledger, period, ZONE, config.periods_schedule), lambda: config)
        self.parser = DumpParser(self.sampler.books.order)  # as the sampler makes its own
        self.loop = asyncio.new_event_loop()
        self.collector = CollectorPolicy()

    def sample(self, data: bytes, when: datetime) -> tuple[float, int]:
        started = time.perf_counter()
        with self.collector.sampling():
            parsed = self.parser.parse(data)
            reading = Reading(when, "wg", parsed, frozenset(), {"wg0": _link()}, "boot", ())
            _, written = self.loop.run_until_complete(self.sampler.book(reading))
        return time.perf_counter() - started, written

    def plan(self, peer_keys: list[str], at: datetime) -> None:
        """Give these peers a monthly plan far above their usage, as plan.set stores it."""
        books = self.sampler.books
        judged = Judged.nothing()
        for public_key in peer_keys:
            book = books.peers[("wg0", public_key)]
            plan = Plan(PLAN_LIMIT, "month", date(2026, 11, 1))
            window = window_at(plan, at, ZONE, Config().periods_schedule)
            state = PlanState(start(window, lifetime(book)), window)
            judged.settled[book.key] = replace(book.settings, plan=plan)
            judged.states[book.key] = state

        async def decided(books: object, window_usage: object) -> Judged:
            return judged

        self.loop.run_until_complete(self.sampler.bookkeeper.store(decided))

    def fleet(self, peer_keys: list[str], at: datetime) -> None:
        """Make each of these peers the one member here of a fleet user of its own, with a
        monthly fleet plan far above its usage and others' usage on another node, as
        fleet.sync stores them."""
        books = self.sampler.books
        judged = Judged.nothing()
        plan = Plan(PLAN_LIMIT, "month", date(2026, 11, 1))
        for number, public_key in enumerate(peer_keys):
            book = books.peers[("wg0", public_key)]
            user = FleetUser(f"user-{number}", plan, "UTC", 1, 1.0, 0, 0, frozenset({book.key}))
            window_start = int(books.fleet_window(user, at).start.timestamp())
            user = replace(user, others_window=window_start, others=10**6)
            judged.fleet.users[user.user] = user
            judged.fleet.shares[book.key] = Share(user.user, window_start, lifetime(book))
        judged.fleet.as_of = 1.0

        async def decided(books: object, window_usage: object) -> Judged:
            return judged

        self.loop.run_until_complete(self.sampler.bookkeeper.store(decided))

    def close(self) -> None:
        self.loop.close()
        self.ledger.close()


def own_cost(
    n: int,
    fraction: float,
    samples: int,
    shuffled: bool = False,
    planned: float = 0.0,
    *,
    hours: bool = True,
    step: timedelta = timedelta(minutes=1),
    ledger_bytes: list[int] | None = None,
    fleet: float = 0.0,
) -> dict[str, Any]:
    """`samples` consecutive samples of a running ledger, each moving `fraction` of the peers,
    after a baseline and one sample in which every peer moved (so every peer has its rows).
    `shuffled`: the peers in a new random order in every dump, as Go's map order prints them.
    `planned`: the share of peers given a monthly plan first (none near its limit).
    `hours`: hourly history on (the default) or off; `step`: the time between samples.
    `ledger_bytes`: given, gets the ledger file's size at the end (checkpointed, vacuumed).
    `fleet`: the share of peers made members of a fleet user each (awgd.fleet_plans)."""
    rng = random.Random(7)
    peer_keys = keys(n)
    workdir = Path(tempfile.mkdtemp(prefix="awgd-bench-"))
    at = datetime(2026, 11, 20, tzinfo=UTC)
    booker = Booker(workdir, at, hours=hours)
    order = list(range(n))

    def dump() -> bytes:
        if shuffled:
            rng.shuffle(order)
        return synthetic_dump(peer_keys, counters, 1795620000, order)

    counters = [(rng.randrange(10**9), rng.randrange(10**9)) for _ in range(n)]
    booker.sample(dump(), at)  # the baseline
    counters = advance_counters(counters, 1.0, rng)
    booker.sample(dump(), at + timedelta(minutes=1))
    if planned:
        booker.plan(rng.sample(peer_keys, round(n * planned)), at + timedelta(minutes=1))
    if fleet:
        booker.fleet(rng.sample(peer_keys, round(n * fleet)), at + timedelta(minutes=1))
    times, rows = [], []
    for index in range(samples):
        counters = advance_counters(counters, fraction, rng)
        data = dump()
        elapsed, written = booker.sample(data, at + timedelta(minutes=2) + step * index)
        times.append(elapsed)
        rows.append(written)
    booker.close()
    if ledger_bytes is not None:
        ledger_bytes.append(file_bytes(booker.path))
    shutil.rmtree(workdir)
    # The daemon's collector policy froze everything alive after each sample: let this run's
    # books go, so that the next run starts as clean as a daemon does.
    del booker
    gc.unfreeze()
    gc.collect()
    return {"time": summary(times), "rows_written": rows}


def _link() -> Any:
    from awgd.ip_link import Link

    return Link(5, True)


# ---- the daemon, with a scripted tool printing synthetic dumps --------------------------------


class ScriptedDaemon:
    def __init__(self, workdir: Path, n: int, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.dump_file = workdir / "dump.out"
        tool = workdir / "awg"
        tool.write_text(f"#!/bin/sh\nexec cat {self.dump_file}\n")
        tool.chmod(0o755)
        self.keys = keys(n, seed=3)
        self.counters = [(i * 1000, i * 2000) for i in range(n)]
        self.handshake: int | None = None  # None: now, at every write
        self.write()
        self.daemon = Awgd(workdir / "d", tool, periods={"timezone": "UTC"}, env=env)

    def write(self) -> None:
        tmp = self.dump_file.with_suffix(".tmp")
        handshake = int(time.time()) if self.handshake is None else self.handshake
        tmp.write_bytes(synthetic_dump(self.keys, self.counters, handshake))
        tmp.replace(self.dump_file)

    def rss_mib(self) -> float:
        assert self.daemon.process is not None
        return vm_rss_mib(self.daemon.process.pid)


class LineClient:
    """A minimal blocking JSON-lines client, the same for awgd and for the floor server."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def ask(self, line: bytes) -> bytes:
        self.sock.sendall(line)
        return self.file.readline()

    def pipeline(self, lines: list[bytes]) -> int:
        sender = threading.Thread(target=self.sock.sendall, args=(b"".join(lines),))
        sender.start()
        got = sum(1 for _ in range(len(lines)) if self.file.readline())
        sender.join()
        return got

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def latencies(path: str, make: Callable[[int], bytes], count: int) -> list[float]:
    client = LineClient(path)
    times = []
    for i in range(count):
        line = make(i)
        started = time.perf_counter()
        answer = client.ask(line)
        times.append(time.perf_counter() - started)
        assert answer.endswith(b"\n") and b',"result":' in answer[:60], answer[:200]
    client.close()
    return times


def throughput(path: str, make: Callable[[int], bytes], count: int, connections: int) -> float:
    per = count // connections
    results = [0] * connections

    def run(index: int) -> None:
        client = LineClient(path)
        results[index] = client.pipeline([make(index * per + i) for i in range(per)])
        client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert sum(results) == per * connections
    return per * connections / elapsed


FLOOR_SERVER = """
import asyncio, sys
ANSWER = b'{"jsonrpc":"2.0","id":1,"result":{"ok":true}}\\n'
async def handle(reader, writer):
    while await reader.readline():
        writer.write(ANSWER)
        await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_unix_server(handle, path=sys.argv[1], limit=2**20)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rpc_figures(path: str, make: Callable[[int], bytes], count: int) -> dict[str, Any]:
    lat = latencies(path, make, count)
    return {
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
        "pipelined_1": throughput(path, make, count * 2, 1),
        "pipelined_32": throughput(path, make, count * 2, 32),
    }


# ---- the run ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    import sqlalchemy

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_kib": int(memory),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlalchemy": sqlalchemy.__version__,
        "time": datetime.now(UTC).isoformat(),
    }


class Run:
    """One benchmark run: its settings, its work directory, and the test bed it needs, made once."""

    def __init__(self, quick: bool, workdir: Path) -> None:
        # The floor and the whole sample on real amneziawg-go, the main AmneziaWG deployment;
        # on wireguard-go where its binaries are missing (the rows say which).
        self.flavor = AMNEZIAWG if available(AMNEZIAWG) is None else WIREGUARD
        self.quick = quick
        self.workdir = workdir
        self.sizes = [1000, 10000] if quick else [1000, 10000, 50000]
        self.repeats = 2 if quick else 5
        self.samples = 3 if quick else 9
        self.mid = 10000
        self.floors: dict[int, dict[str, Any]] = {}
        self._bed: TestBed | None = None

    @property
    def bed(self) -> TestBed:
        if self._bed is None:
            self._bed = TestBed(clients=0, flavor=self.flavor).up()
        return self._bed

    def floor(self, n: int) -> dict[str, Any]:
        """`awg show all dump` on real amneziawg-go with n peers (measured once per run and N)."""
        if n not in self.floors:
            self.floors[n] = floor(self.bed, n, self.samples, self.workdir)
            RESULTS[f"floor_{n}"] = {k: v for k, v in self.floors[n].items() if k != "keys"}
            what = f"1. floor: {self.flavor.tool_name} show all dump on {self.flavor.name}, N={n}"
            row(what, ms(self.floors[n]["dump"]["median"]), "", None, "", None)
        return self.floors[n]

    def close(self) -> None:
        if self._bed is not None:
            self._bed.down()


def bench_own_cost(run: Run) -> None:
    # The floor is taken again before each of awgd's runs at that N, and the ratio uses the
    # median of all of them: on a shared, noisy machine a single floor drifts away from the
    # moments the runs saw.
    for n in run.sizes:
        print(f"1./2. the floor ({run.flavor.name}) and awgd's own cost, N={n} ...", flush=True)
        floors = [run.floor(n)["dump"]["median"]]
        real_interface(run.bed, n, run.workdir)  # the floors in turns at this N, whatever ran before
        costs = []
        for (fraction, target), shuffled in itertools.product(((1.0, 1.0), (0.01, 0.25), (0.0, None)), (False, True)):
            floors.append(floor_now(run.bed, 3))
            # Small servers' samples take about a millisecond: more of them steady the median.
            costs.append((fraction, target, shuffled, own_cost(n, fraction, run.samples * max(1, 5000 // n), shuffled)))
        base = statistics.median(floors)
        RESULTS[f"floor_{n}"]["floor_in_turns"] = summary(floors)
        for fraction, target, shuffled, cost in costs:
            order = "shuffled" if shuffled else "sorted"
            RESULTS[f"own_{order}_{n}_{fraction}"] = cost
            median = cost["time"]["median"]
            if target is None:
                rows_written = max(cost["rows_written"])
                row(
                    f"2. own cost, {order}, N={n}, none moving",
                    ms(median),
                    ms(base),
                    median / base,
                    f"0 rows ({rows_written})",
                    rows_written == 0,
                )
            else:
                row(
                    f"2. own cost, {order}, N={n}, {fraction:.0%} moving",
                    ms(median),
                    ms(base),
                    median / base,
                    f"<= {target}x",
                    median / base <= target,
                )


def bench_plans(run: Run) -> None:
    # The same samples with and without plans on 10 % of the peers, in turns, so that both
    # see the same moments of a noisy machine; the ratio is of the medians.
    n = max(run.sizes)
    for fraction in (1.0, 0.01):
        print(f"8. plans on {PLANNED_SHARE:.0%} of N={n}, {fraction:.0%} moving ...", flush=True)
        without, with_plans = [], []
        for _ in range(3):
            for share, into in ((0.0, without), (PLANNED_SHARE, with_plans)):
                into.append(own_cost(n, fraction, run.samples, shuffled=True, planned=share)["time"]["median"])
        base, cost = statistics.median(without), statistics.median(with_plans)
        RESULTS[f"plans_{n}_{fraction}"] = {"without": summary(without), "with": summary(with_plans)}
        row(
            f"8. sample with plans on {PLANNED_SHARE:.0%}, N={n}, {fraction:.0%} moving",
            ms(cost),
            ms(base),
            cost / base,
            "<= 1.1x no plans",
            cost / base <= 1.1,
        )
    idle = own_cost(n, 0.0, run.samples, shuffled=True, planned=PLANNED_SHARE)
    RESULTS[f"plans_{n}_idle"] = idle
    written = max(idle["rows_written"])
    row(f"8. idle sample with plans, N={n}", ms(idle["time"]["median"]), "", None, f"0 rows ({written})", written == 0)


def floor_now(bed: TestBed, runs: int) -> float:
    """The median of `runs` runs of the dump, now, on the bed's interface as it is."""
    out = bed.server.run(sys.executable, "-c", TIMER, str(runs), "x", "0", bed.flavor.tool, timeout=600)
    return statistics.median(json.loads(out)["runs"])


def bench_whole_sample(run: Run) -> None:
    print(f"3. a whole sample in the running daemon on {run.flavor.name}, N=10000 ...", flush=True)
    run.floor(run.mid)
    real_interface(run.bed, run.mid, run.workdir)
    daemon = Awgd(
        run.workdir / "real",
        run.flavor.tool,
        wireguard={"reader": "tool"},  # this row is the tool's; section 14 has the sockets'
        periods={"timezone": "UTC"},
        prefix=run.bed.server.argv(),
    )
    daemon.start()
    try:
        # The floor and the sample taken in turns, so that both see the same moments of a
        # shared, noisy machine.
        whole, floors = [], []
        for _ in range(run.repeats * 2):
            floors.append(floor_now(run.bed, 3))
            started = time.perf_counter()
            daemon.result("traffic.sample")
            whole.append(time.perf_counter() - started)
    finally:
        daemon.stop()
    RESULTS["whole_sample_10000"] = {"sample": summary(whole), "floor": summary(floors)}
    ratio_row(f"3. whole sample in the daemon, {run.flavor.name}, N=10000", whole, floors, 1.5)


DOCKER_FLOOR = ["docker", "exec", amnezia.SERVER_NAME, "awg", "show", "all", "dump"]


def bench_docker(run: Run) -> None:
    """A whole sample through `docker exec` into Amnezia's container, 10,000 peers, against
    `docker exec amnezia-awg awg show all dump` itself."""
    problem = amnezia.available() or available(AMNEZIAWG)
    if problem:
        row("3. whole sample through docker exec, N=10000", "skipped", "", None, problem, None)
        return
    print("3. a whole sample through docker exec into amnezia-awg, N=10000 ...", flush=True)
    engine = amnezia.DockerEngine().start()
    try:
        server = amnezia.AmneziaServer(engine, amnezia.build_image(engine, AMNEZIAWG, "awg"), AMNEZIAWG, clients=0)
        server.up()
        try:
            conf = run.workdir / "amnezia.conf"
            conf.write_text(interface_config(AMNEZIAWG, server.private_key, 51820, keys(run.mid, seed=run.mid)))
            engine.docker("cp", str(conf), f"{amnezia.SERVER_NAME}:{amnezia.AMNEZIA_DIR}/bench.conf")
            engine.docker("exec", amnezia.SERVER_NAME, "awg", "setconf", "wg0", f"{amnezia.AMNEZIA_DIR}/bench.conf")
            env = {**os.environ, **engine.env}
            figures: dict[str, list[float]] = {"uapi": [], "tool": []}
            floors: list[float] = []
            daemons = {
                reader: Awgd(
                    run.workdir / f"docker-{reader}",
                    "auto",
                    wireguard={"exec_prefix": DOCKER_FLOOR[:3], "reader": reader},
                    periods={"timezone": "UTC"},
                    env=engine.env,
                )
                for reader in figures
            }
            for daemon in daemons.values():
                daemon.start()
            try:
                for daemon in daemons.values():
                    daemon.result("traffic.sample")  # the first finds the container's tool
                for _ in range(run.repeats * 2):
                    started = time.perf_counter()
                    out = subprocess.run(DOCKER_FLOOR, capture_output=True, check=True, env=env).stdout
                    floors.append(time.perf_counter() - started)
                    assert out.count(b"\n") > run.mid
                    for reader, daemon in daemons.items():
                        started = time.perf_counter()
                        daemon.result("traffic.sample")
                        figures[reader].append(time.perf_counter() - started)
                for reader, daemon in daemons.items():
                    assert daemon.result("traffic.list", limit=1)["total"] == run.mid
                    shown = [i["reader"] for i in daemon.result("server.status")["interfaces"]]
                    assert shown == [reader], shown
            finally:
                for daemon in daemons.values():
                    daemon.stop()
        finally:
            server.down()
    finally:
        engine.remove()
    whole = figures["uapi"]
    RESULTS["docker_sample_10000"] = {
        "sample": summary(whole),
        "sample_tool": summary(figures["tool"]),
        "floor": summary(floors),
    }
    ratio_row("3. whole sample through Amnezia's container (socket), N=10000", whole, floors, 0.6)
    ratio_row("3. the same read by docker exec awg (reader = tool), N=10000", figures["tool"], floors, 1.5)


def bench_uapi(run: Run) -> None:
    """Section 14: a whole sample read from amneziawg-go's control socket, in the running
    daemon on the host (the bed's namespace), against `awg show all dump` alone."""
    targets = {1000: 0.7, 10000: 0.9}
    for n, target in targets.items():
        print(f"14. a whole sample read by socket on {run.flavor.name}, N={n} ...", flush=True)
        real_interface(run.bed, n, run.workdir)
        daemon = Awgd(
            run.workdir / f"uapi-{n}",
            run.flavor.tool,
            periods={"timezone": "UTC"},
            prefix=run.bed.server.argv(),  # reader "auto": the socket, where the tool also looks
        )
        daemon.start()
        try:
            daemon.result("traffic.sample")
            whole: list[float] = []
            asked: list[float] = []
            floors: list[float] = []
            # One dump and one sample in turns, each the first in a while for amneziawg-go: a
            # daemon samples once a minute, and amneziawg-go answers its first get=1 after a
            # pause 1.5x slower than one of a burst (tests/bench/NOTES.md); so is each dump.
            for _ in range(run.repeats * 4):
                floors.append(floor_now(run.bed, 1))
                time.sleep(0.2)
                started = time.perf_counter()
                daemon.result("traffic.sample")
                asked.append(time.perf_counter() - started)
                # The sample as the daemon takes it on its schedule (read, parse, booking), as
                # it reports it; `asked` adds the RPC call that ordered it.
                whole.append(daemon.result("server.status")["sampler"]["last_duration_seconds"])
                time.sleep(0.2)
            shown = [i["reader"] for i in daemon.result("server.status")["interfaces"]]
            assert shown == ["uapi"], shown
            assert daemon.result("traffic.list", limit=1)["total"] == n
        finally:
            daemon.stop()
        RESULTS[f"uapi_sample_{n}"] = {"sample": summary(whole), "asked": summary(asked), "floor": summary(floors)}
        ratio_row(f"14. whole sample by socket in the daemon, {run.flavor.name}, N={n}", whole, floors, target)
        ratio_row(f"14. the same with the traffic.sample call that ordered it, N={n}", asked, floors, None)


def bench_rpc(run: Run) -> None:
    naive = run.floor(run.mid)["naive_lookup"]["median"]
    print("4. RPC with a 10,000-peer ledger ...", flush=True)
    scripted = ScriptedDaemon(run.workdir / "rpc", run.mid)
    scripted.daemon.start()
    count = 500 if run.quick else 2000
    floor_path = str(run.workdir / "floor.sock")
    floor_server = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, floor_path], stdout=subprocess.PIPE)
    try:
        scripted.counters = advance_counters(scripted.counters, 1.0, random.Random(1))
        scripted.write()
        scripted.daemon.result("traffic.sample")
        assert floor_server.stdout is not None and floor_server.stdout.readline() == b"ready\n"
        rng = random.Random(5)
        chosen = [rng.choice(scripted.keys) for _ in range(count * 2)]

        def get(i: int) -> bytes:
            message = {"jsonrpc": "2.0", "id": i, "method": "traffic.get", "params": {"public_key": chosen[i]}}
            return json.dumps(message).encode() + b"\n"

        def status(i: int) -> bytes:
            return json.dumps({"jsonrpc": "2.0", "id": i, "method": "server.status"}).encode() + b"\n"

        # The floor and awgd measured in turns, three times, and each figure the median.
        rounds: dict[str, list[dict[str, Any]]] = {"floor": [], "traffic.get": [], "server.status": []}
        for _ in range(3):
            rounds["floor"].append(rpc_figures(floor_path, status, count))
            rounds["traffic.get"].append(rpc_figures(scripted.daemon.socket, get, count))
            rounds["server.status"].append(rpc_figures(scripted.daemon.socket, status, count))
        medians = {
            who: {key: statistics.median(r[key] for r in taken) for key in taken[0]} for who, taken in rounds.items()
        }
        floor_rpc = medians["floor"]
        RESULTS["rpc_floor"] = floor_rpc
        for name in ("traffic.get", "server.status"):
            figures = medians[name]
            RESULTS[f"rpc_{name}"] = figures
            ratio = figures["p50"] / floor_rpc["p50"]
            row(f"4. {name} p50 latency", ms(figures["p50"]), ms(floor_rpc["p50"]), ratio, "<= 3x", ratio <= 3)
            row(f"4. {name} p99 latency", ms(figures["p99"]), ms(floor_rpc["p99"]), None, "", None)
            for key, label in (("pipelined_1", "1 connection"), ("pipelined_32", "32 connections")):
                share = figures[key] / floor_rpc[key]
                row(
                    f"4. {name} throughput, {label}",
                    f"{figures[key]:,.0f}/s",
                    f"{floor_rpc[key]:,.0f}/s",
                    share,
                    ">= 0.3x",
                    share >= 0.3,
                )
        speedup = naive / RESULTS["rpc_traffic.get"]["p50"]
        RESULTS["naive_vs_traffic_get"] = speedup
        row(
            "4. traffic.get vs the naive bot (wg show + search)",
            ms(RESULTS["rpc_traffic.get"]["p50"]),
            ms(naive),
            1 / speedup,
            ">= 100x faster",
            speedup >= 100,
        )
    finally:
        floor_server.kill()
        scripted.daemon.stop()


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bench_exporter(run: Run) -> None:
    # The scrape's cost beyond traffic.list itself: a full listing read by the same client
    # library, and a scrape over HTTP, in turns; the medians' difference is the exporter's.
    print("9. awgd-exporter, one scrape at 10,000 peers ...", flush=True)
    scripted = ScriptedDaemon(run.workdir / "exporter", run.mid)
    scripted.daemon.start()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client"), str(ROOT / "fleet")])}
    # With its token, as the .deb runs it: without one it leaves the per-peer series out.
    token = base64.b64encode(os.urandom(24)).decode()
    token_file = run.workdir / "exporter-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "awgd_client.exporter",
            "--listen",
            f"127.0.0.1:{port}",
            "--socket",
            scripted.daemon.socket,
            "--token-file",
            str(token_file),
        ],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        assert exporter.stderr is not None
        first = exporter.stderr.readline()
        assert b"serving" in first, first
        scripted.counters = advance_counters(scripted.counters, 1.0, random.Random(1))
        scripted.write()
        scripted.daemon.result("traffic.sample")
        from awgd_client import Client
        from awgd_client.metrics import read_peers

        listing, scrape = [], []
        for _ in range(3 if run.quick else 7):
            started = time.perf_counter()
            with Client(scripted.daemon.socket) as client:
                assert len(read_peers(client)) == run.mid
            listing.append(time.perf_counter() - started)
            started = time.perf_counter()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, timeout=60) as answer:
                body = answer.read()
            scrape.append(time.perf_counter() - started)
            assert body.count(b"wireguard_sent_bytes_total{") == run.mid
        rss = vm_rss_mib(exporter.pid)
        base, cost = statistics.median(listing), statistics.median(scrape)
        RESULTS["exporter"] = {"listing": summary(listing), "scrape": summary(scrape), "rss_mib": rss}
        row(
            "9. exporter scrape, N=10000, beyond traffic.list",
            ms(cost - base),
            ms(base),
            cost / base,
            "<= +500 ms",
            cost - base <= 0.5,
        )
        row("9. exporter RSS after scrapes, N=10000", f"{rss:.1f} MiB", "", None, "<= 80 MiB", rss <= 80)
    finally:
        exporter.terminate()
        exporter.wait(10)
        scripted.daemon.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_memory(run: Run) -> None:
    print("5. memory ...", flush=True)
    targets = {1000: 60, 10000: 100, 50000: 250}
    for n in run.sizes:
        memory = ScriptedDaemon(run.workdir / f"mem{n}", n)
        memory.daemon.start()
        rng = random.Random(n)
        try:
            for _ in range(100):
                memory.counters = advance_counters(memory.counters, 0.01, rng)
                memory.write()
                memory.daemon.result("traffic.sample")
            rss_100 = memory.rss_mib()
            RESULTS[f"rss_100_{n}"] = rss_100
            row(
                f"5. RSS after 100 samples, N={n}",
                f"{rss_100:.1f} MiB",
                "",
                None,
                f"<= {targets[n]} MiB",
                rss_100 <= targets[n],
            )
            if n == run.mid and not run.quick:
                for _ in range(900):
                    memory.counters = advance_counters(memory.counters, 0.01, rng)
                    memory.write()
                    memory.daemon.result("traffic.sample")
                rss_1000 = memory.rss_mib()
                RESULTS["rss_1000_10000"] = rss_1000
                growth = rss_1000 / rss_100
                row(
                    "5. RSS sample 1000 / sample 100, N=10000",
                    f"{rss_1000:.1f} MiB",
                    f"{rss_100:.1f} MiB",
                    growth,
                    "within 5%",
                    abs(growth - 1) <= 0.05,
                )
        finally:
            memory.daemon.stop()


def bench_startup(run: Run) -> None:
    print("6./7. start-up, ledger growth, history ...", flush=True)
    startup_and_history(run.workdir, run.mid, 400, run.repeats)


def pg_bytes(pg: postgres.Postgres, database: str) -> int:
    """The fleet tables' size with their indexes and TOAST, after a VACUUM."""
    pg.psql("VACUUM ANALYZE", database=database)
    tables = ", ".join(f"'{table}'" for table in fleet_schema.TABLES)
    query = f"SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(ARRAY[{tables}]) t"
    found = pg.psql(query, database=database)
    return int(found.stdout.strip())


def mirror_into(pg: postgres.Postgres, database: str, node: str, socket_path: str) -> float:
    """One full round of a new node into `database`; its seconds."""
    password = pg.add_node(node)
    url = pg.url(node, password, database)
    mirror = FleetMirror(MirrorConfig(url, node, socket_path))
    try:
        started = time.perf_counter()
        mirror.run_round()
        return time.perf_counter() - started
    finally:
        mirror.close()


def bench_fleet(run: Run) -> None:
    problem = postgres.problem()
    if problem is None and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
        problem = "needs psycopg or psycopg2"
    if problem is not None:
        row("10. fleet mirror", "skipped", "", None, problem, None)
        return
    n = max(run.sizes)
    pg = postgres.Postgres(run.workdir / "pg")
    try:
        pg.psql(fleet_schema.schema_sql())
        scripted = ScriptedDaemon(run.workdir / "fleet", n)
        # Handshakes as a real server's: renewed every two minutes, not at every sample (a new
        # handshake is a change the mirror copies).
        scripted.handshake = int(time.time())
        scripted.write()
        scripted.daemon.start()
        print(f"10. the fleet mirror, N={n}: a first full round ...", flush=True)
        password = pg.add_node("bench")
        mirror = FleetMirror(MirrorConfig(pg.url("bench", password), "bench", scripted.daemon.socket))
        started = time.perf_counter()
        mirror.run_round()
        RESULTS[f"fleet_first_round_{n}"] = time.perf_counter() - started
        rng = random.Random(11)
        for fraction in (1.0, 0.01):
            print(f"10. mirroring one sample, N={n}, {fraction:.0%} moving, in turns with the local sample ...")
            rounds, locals_ = [], []
            for _ in range(3):
                for _ in range(max(1, run.samples // 3)):
                    scripted.counters = advance_counters(scripted.counters, fraction, rng)
                    scripted.write()
                    scripted.daemon.result("traffic.sample")
                    started = time.perf_counter()
                    done = mirror.run_round()
                    rounds.append(time.perf_counter() - started)
                    assert done.peers >= round(n * fraction) * 0.9, done
                locals_.append(own_cost(n, fraction, run.samples, shuffled=True)["time"]["median"])
            cost, base = statistics.median(rounds), statistics.median(locals_)
            RESULTS[f"fleet_round_{n}_{fraction}"] = {"round": summary(rounds), "own": summary(locals_)}
            row(
                f"10. mirror one sample, N={n}, {fraction:.0%} moving",
                ms(cost),
                ms(base),
                cost / base,
                "<= 2x own cost",
                cost / base <= 2,
            )
        mirror.close()
        scripted.daemon.stop()

        # Size: the same ledgers as row 7 (n peers, none and `days` days of day buckets),
        # each mirrored whole into a database of its own.
        size_n, days = run.mid, 30
        print(f"10. central bytes per peer-day ({size_n} peers, {days} days) ...", flush=True)
        figures = {}
        for label, held in (("empty", 0), ("full", days)):
            database = f"size_{label}"
            pg.psql(f"CREATE DATABASE {database}", database="postgres")
            pg.psql(fleet_schema.schema_sql(), database=database)
            before = pg_bytes(pg, database)
            sized = ScriptedDaemon(run.workdir / f"size-{label}", size_n)
            sized.daemon.dir.mkdir(parents=True, exist_ok=True)
            build_ledger(sized.daemon.ledger, size_n, held)
            sized.daemon.start()
            mirror_into(pg, database, f"size-{label}", sized.daemon.socket)
            sized.daemon.stop()
            figures[label] = pg_bytes(pg, database) - before
            local_file = run.workdir / f"local-{label}.sqlite3"
            build_ledger(local_file, size_n, held)
            figures[f"local_{label}"] = file_bytes(local_file)
        central = (figures["full"] - figures["empty"]) / (size_n * days)
        local = (figures["local_full"] - figures["local_empty"]) / (size_n * days)
        RESULTS["fleet_bytes_per_peer_day"] = {"central": central, "local": local}
        row("10. central database bytes per peer-day", f"{central:.1f} B", f"{local:.1f} B", central / local, "", None)
    finally:
        pg.remove()


# Section 11: speed limits. As many limited peers as the issue names, on one interface.
SHAPED_PEERS = 5000
IPERF_SECONDS = 3


def shaped_wanted(n: int, down: int = 2000) -> dict[str, Any]:
    from awgd.shaping import RateLimit, Wanted

    return {f"k{i}": Wanted(RateLimit(down, 1000), (f"10.8.{i // 250 + 1}.{i % 250 + 2}/32",)) for i in range(n)}


def tc_batch(namespace: str, lines: list[list[str]]) -> float:
    """Seconds `tc -batch` took to run these commands in the namespace (fails loudly)."""
    from awgd.shaping import batch

    started = time.perf_counter()
    argv = ["ip", "netns", "exec", namespace, "tc", "-batch", "-"]
    done = subprocess.run(argv, input=batch(lines), capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"tc -batch failed: {done.stderr.strip()[:300]}")
    return elapsed


def iperf_mbit(server_ns: str, client_ns: str, address: str) -> float:
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "--forceflush"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    for line in server.stdout:
        if "listening" in line.lower():
            break
    done = subprocess.run(
        ["ip", "netns", "exec", client_ns, "iperf3", "-c", address, "-t", str(IPERF_SECONDS), "-J"],
        capture_output=True,
        text=True,
        check=True,
    )
    server.wait(timeout=30)
    return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e6


def bench_shaping(run: Run) -> None:
    """11. The cost of speed limits: tc's work for one change among 5,000 limited peers, the
    per-packet cost of their classifier for a packet no filter claims, and what a sample
    pays (Shaper.reconcile with nothing changed)."""
    from awgd.shaper import Shaper
    from awgd.shaping import InterfaceShaping, RateLimit, ifb_name, plan

    if shutil.which("iperf3") is None or shutil.which("tc") is None:
        row("11. speed limits", "skipped", "", None, "needs tc and iperf3", None)
        return
    a, b = f"awgdbench{os.getpid()}a", f"awgdbench{os.getpid()}b"
    for name in (a, b):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", a, "link", "add", "awg0", "type", "veth", "peer", "name", "eth0", "netns", b], check=True
        )
        for name, dev, address in ((a, "awg0", "10.9.0.1/24"), (b, "eth0", "10.9.0.2/24")):
            subprocess.run(["ip", "-n", name, "addr", "add", address, "dev", dev], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
        print(f"11. speed limits: {SHAPED_PEERS} limited peers ...", flush=True)
        plain = [iperf_mbit(b, a, "10.9.0.2")]  # the veth alone, before any qdisc
        state = InterfaceShaping("awg0", ifb_name("awg0"))
        wanted = shaped_wanted(SHAPED_PEERS)
        steps = plan(state, 1, wanted)
        for line in steps.ip_before:
            subprocess.run(["ip", "netns", "exec", a, "ip", *line], check=False)
        setup = tc_batch(a, steps.tc)
        row(f"11. set up {SHAPED_PEERS} limited peers (tc -batch)", ms(setup), "", None, "", None)
        changes = []
        for i in range(20):
            wanted[f"k{i * 97}"] = replace(wanted[f"k{i * 97}"], limit=RateLimit(3000 + i, 1000))
            changes.append(tc_batch(a, plan(state, 1, wanted).tc))
        change = statistics.median(changes)
        RESULTS["shaping_change"] = summary(changes)
        row(f"11. one peer's limit changed among {SHAPED_PEERS}", ms(change), "", None, "< 50 ms", change < 0.05)
        # A packet to an unlimited address goes through the hash table and finds no filter.
        shaped = [iperf_mbit(b, a, "10.9.0.2")]
        subprocess.run(["ip", "netns", "exec", a, "tc", "qdisc", "del", "dev", "awg0", "root"], check=True)
        plain.append(iperf_mbit(b, a, "10.9.0.2"))
        state = InterfaceShaping("awg0", ifb_name("awg0"))
        tc_batch(a, [line for line in plan(state, 1, wanted).tc if "ffff:" not in line and "ifbawg0" not in line])
        shaped.append(iperf_mbit(b, a, "10.9.0.2"))
        without, with_limits = statistics.median(plain), statistics.median(shaped)
        packet_bits = 8 * 1448  # a full TCP segment through the veth
        per_packet_ns = (packet_bits / (with_limits * 1e6) - packet_bits / (without * 1e6)) * 1e9
        RESULTS["shaping_throughput"] = {"without": plain, "with": shaped, "per_packet_ns": per_packet_ns}
        row(
            f"11. unlimited traffic beside {SHAPED_PEERS} limited peers",
            f"{with_limits:.0f} Mbit/s",
            f"{without:.0f} Mbit/s",
            with_limits / without,
            f"{per_packet_ns:.0f} ns a packet",
            None,
        )
    finally:
        for name in (a, b):
            subprocess.run(["ip", "netns", "del", name], check=False)
    # What a sample pays: the shaper's look at the books when nothing changed, against the
    # sample's own cost at the same N with 1 % of the peers moving.
    n = max(run.sizes)
    booker = Booker(Path(tempfile.mkdtemp(prefix="awgd-bench-")), datetime(2026, 11, 20, tzinfo=UTC))
    peer_keys = keys(n)
    counters = [(i, i) for i in range(n)]
    booker.sample(synthetic_dump(peer_keys, counters, 1795620000), datetime(2026, 11, 20, tzinfo=UTC))
    books = booker.sampler.books
    limit = RateLimit(2000, 1000)
    for public_key in peer_keys[:SHAPED_PEERS]:
        book = books.peers[("wg0", public_key)]
        books.settle("wg0", public_key, replace(book.settings, rate_limit=limit), datetime.now(UTC))
    shaper = Shaper(lambda: Config(zone=ZONE))
    interface = books.interfaces["wg0"]
    ifindex = interface.checkpoint.ifindex if interface.checkpoint is not None else None
    applied = shaper._applied["wg0"] = InterfaceShaping("wg0", ifb_name("wg0"))  # as if applied
    shaper._changed_at["wg0"] = books.links_read  # after the last reading of the links
    from awgd.shaping import Wanted

    plan(applied, ifindex, {k: Wanted(limit, books.peers[("wg0", k)].allowed_ips) for k in peer_keys[:SHAPED_PEERS]})
    times = []
    for _ in range(run.samples):
        started = time.perf_counter()
        booker.loop.run_until_complete(shaper.reconcile(books))
        times.append(time.perf_counter() - started)
    booker.close()
    full = times[0]  # the first look is a full one (nothing seen yet); the others are quiet
    row(f"11. a full look at {SHAPED_PEERS} limits (once in 15 min)", ms(full), "", None, "", None)
    reconcile = statistics.median(times[1:])
    sample = own_cost(n, 0.01, run.samples, shuffled=True)["time"]["median"]
    RESULTS["shaping_reconcile"] = {"reconcile": summary(times), "sample": sample}
    row(
        f"11. a sample's look at {SHAPED_PEERS} limits, N={n}, 1% moving",
        ms(sample + reconcile),
        ms(sample),
        (sample + reconcile) / sample,
        "<= 1.1x no limits",
        (sample + reconcile) / sample <= 1.1,
    )


def bench_hours(run: Run) -> None:
    """Hourly history (issue 31): what it costs every sample (two running totals more in the
    row a moving peer rewrites), the sample that closes an hour, and the ledger's bytes."""
    n = max(run.sizes)
    print(f"12. hourly history, N={n}, every peer moving ...", flush=True)
    # In turns, so that both see the same moments of a noisy machine; ratio of the medians.
    off, on = [], []
    for _ in range(3):
        off.append(own_cost(n, 1.0, run.samples, shuffled=True, hours=False)["time"]["median"])
        on.append(own_cost(n, 1.0, run.samples, shuffled=True, hours=True)["time"]["median"])
    base, cost = statistics.median(off), statistics.median(on)
    RESULTS[f"hours_{n}"] = {"off": summary(off), "on": summary(on)}
    row(
        f"12. sample with hourly history, N={n}, 100% moving",
        ms(cost),
        ms(base),
        cost / base,
        "<= 1.05x hours off",
        cost / base <= 1.05,
    )
    # Every sample an hour after the last: each one closes the hour before it (one set-wise
    # statement over the running totals), against samples a minute apart.
    closing = own_cost(n, 1.0, run.samples, shuffled=True, step=timedelta(hours=1))["time"]["median"]
    RESULTS[f"hours_closing_{n}"] = closing
    row(
        f"12. the sample that closes an hour, N={n}, 100% moving",
        ms(closing),
        ms(cost),
        closing / cost,
        "<= 1.5x a sample within it",
        closing / cost <= 1.5,
    )
    # Bytes: the same hours of every peer moving, kept and not kept.
    hours, mid = 12, run.mid
    kept: list[int] = []
    own_cost(mid, 1.0, hours, hours=True, step=timedelta(hours=1), ledger_bytes=kept)
    own_cost(mid, 1.0, hours, hours=False, step=timedelta(hours=1), ledger_bytes=kept)
    per_peer_hour = (kept[0] - kept[1]) / (mid * (hours - 1))  # the last hour is still open
    RESULTS["bytes_per_peer_hour"] = per_peer_hour
    row(
        f"12. ledger bytes per moving peer-hour (N={mid}, {hours} h)",
        f"{per_peer_hour:.1f} B",
        "",
        None,
        "<= 100 B",
        per_peer_hour <= 100,
    )


# Section 13: fleet plans (issue 32). As many fleet users as the issue names.
FLEET_USERS = 10_000


def bench_fleet_plans(run: Run) -> None:
    """Fleet plans: what 10,000 fleet users cost a node's sample (every member moving), and
    a mirror round's extra cost with them (reading their plans and the others' sums, fleet.sync,
    writing the shares back) against the same round without."""
    n = FLEET_USERS
    print(f"13. fleet plans, N={n} peers, each a fleet user's member, every peer moving ...", flush=True)
    without, with_fleet = [], []
    for _ in range(3):
        without.append(own_cost(n, 1.0, run.samples, shuffled=True)["time"]["median"])
        with_fleet.append(own_cost(n, 1.0, run.samples, shuffled=True, fleet=1.0)["time"]["median"])
    base, cost = statistics.median(without), statistics.median(with_fleet)
    RESULTS[f"fleet_plans_sample_{n}"] = {"without": summary(without), "with": summary(with_fleet)}
    row(
        f"13. sample, N={n}, {n} fleet users, 100% moving",
        ms(cost),
        ms(base),
        cost / base,
        "<= 1.25x none",
        cost / base <= 1.25,
    )

    problem = postgres.problem()
    if problem is None and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
        problem = "needs psycopg or psycopg2"
    if problem is not None:
        row("13. mirror round with fleet users", "skipped", "", None, problem, None)
        return
    pg = postgres.Postgres(run.workdir / "pg-fleet-plans")
    try:
        pg.psql(fleet_schema.schema_sql())
        scripted = ScriptedDaemon(run.workdir / "fleet-plans", n)
        scripted.handshake = int(time.time())
        scripted.write()
        scripted.daemon.start()
        password = pg.add_node("bench")
        mirror = FleetMirror(MirrorConfig(pg.url("bench", password), "bench", scripted.daemon.socket))
        mirror.run_round()
        rng = random.Random(13)

        def rounds(count: int) -> list[float]:
            taken = []
            for _ in range(count):
                scripted.counters = advance_counters(scripted.counters, 0.01, rng)
                scripted.write()
                scripted.daemon.result("traffic.sample")
                started = time.perf_counter()
                mirror.run_round()
                taken.append(time.perf_counter() - started)
            return taken

        plain = rounds(run.samples)
        # Each peer a fleet user's member, each user with a member on another node too, whose
        # share the owner writes (as that node's report would).
        today = datetime.now(UTC).date().isoformat()
        plan = json.dumps({"limit_bytes": PLAN_LIMIT, "reset": "month", "anchor": today, "timezone": "UTC"})
        rows = "\n".join(f"u{i}\t{plan}" for i in range(n))
        pg.psql(f"COPY awgd.awgd_fleet_users (fleet_user, plan) FROM STDIN;\n{rows}\n\\.\n")
        members = "\n".join(f"bench\twg0\t{key}\tu{i}\nother\twg0\t{key}\tu{i}" for i, key in enumerate(scripted.keys))
        pg.psql(f"COPY awgd.awgd_fleet_members (node, interface, public_key, fleet_user) FROM STDIN;\n{members}\n\\.\n")
        pg.psql(
            "INSERT INTO awgd.awgd_fleet_usage (node, interface, public_key, fleet_user, window_start, used)"
            " SELECT node, interface, public_key, fleet_user, date_trunc('month', now()), 12345"
            " FROM awgd.awgd_fleet_members WHERE node = 'other'"
        )
        first = rounds(1)[0]  # every user new to the node: all stored
        planned = rounds(run.samples)
        cost, base = statistics.median(planned), statistics.median(plain)
        RESULTS[f"fleet_plans_round_{n}"] = {"with": summary(planned), "without": summary(plain), "first": first}
        row(f"13. mirror round, N={n}, 1% moving, {n} fleet users", ms(cost), ms(base), cost / base, "", None)
        row(f"13. the round that first passes {n} fleet users on", ms(first), ms(base), first / base, "", None)
        mirror.close()
        scripted.daemon.stop()
    finally:
        pg.remove()


SECTIONS: dict[str, Callable[[Run], None]] = {
    "own": bench_own_cost,
    "plans": bench_plans,
    "exporter": bench_exporter,
    "whole": bench_whole_sample,
    "docker": bench_docker,
    "rpc": bench_rpc,
    "memory": bench_memory,
    "startup": bench_startup,
    "fleet": bench_fleet,
    "shaping": bench_shaping,
    "hours": bench_hours,
    "fleet_plans": bench_fleet_plans,
    "uapi": bench_uapi,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer peers and repeats (a smoke run)")
    parser.add_argument("--json", default="bench-results.json", help="where to write every figure")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections to run (of {', '.join(SECTIONS)})"
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    problem = available()
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 1
    RESULTS["machine"] = machine()
    run = Run(args.quick, Path(tempfile.mkdtemp(prefix="awgd-bench-")))
    try:
        for name in chosen:
            SECTIONS[name](run)
    finally:
        run.close()
        shutil.rmtree(run.workdir, ignore_errors=True)
    report(args.json)
    return 0 if all("MISSED" not in r[4] for r in ROWS) else 1


def build_ledger(path: Path, n: int, days: int) -> None:
    """A ledger of n peers with `days` days of day buckets each, written directly."""
    Ledger.open(f"sqlite:///{path}").close()
    now = int(time.time())
    today = datetime.now(UTC).date()
    with sqlite3.connect(path) as conn:
        peer_keys = keys(n, seed=3)
        conn.executemany(
            "INSERT INTO peers (id, interface, public_key, first_seen) VALUES (?, 'wg0', ?, ?)",
            [(i + 1, k, now) for i, k in enumerate(peer_keys)],
        )
        conn.executemany(
            "INSERT INTO peer_counters (peer_id, present, rx, tx, lifetime_rx, lifetime_tx, period_rx, period_tx,"
            " day_rx, day_tx) VALUES (?, 1, 0, 0, 0, 0, 0, 0, 0, 0)",
            [(i + 1,) for i in range(n)],
        )
        conn.execute("UPDATE meta SET tracking_since = ?", (now - days * 86400,))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for offset in range(days):
            day = today - timedelta(days=offset)
            number = day.year * 10000 + day.month * 100 + day.day
            conn.executemany(
                "INSERT INTO day_usage VALUES (?, ?, ?, ?)",
                [(i + 1, number, 1000 + i * 7 + offset, 2000 + i * 3 + offset) for i in range(n)],
            )
        conn.commit()


def file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    return path.stat().st_size


def startup_and_history(workdir: Path, n: int, days: int, repeats: int) -> None:
    empty = workdir / "empty.sqlite3"
    build_ledger(empty, n, 0)
    full = workdir / "full.sqlite3"
    build_ledger(full, n, days)
    per_peer_day = (file_bytes(full) - file_bytes(empty)) / (n * days)
    RESULTS["bytes_per_peer_day"] = per_peer_day
    row(
        "7. ledger bytes per peer-day (day buckets)", f"{per_peer_day:.1f} B", "", None, "<= 100 B", per_peer_day <= 100
    )

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client"), str(ROOT / "fleet")])}
    imports = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import awgd.daemon, awgd.cli"], env=env, check=True)
        imports.append(time.perf_counter() - started)
    scripted = ScriptedDaemon(workdir / "startup", n)
    scripted.daemon.dir.mkdir(parents=True, exist_ok=True)
    starts = []
    for _ in range(repeats):
        shutil.copy(full, scripted.daemon.ledger)
        started = time.perf_counter()
        scripted.daemon.start()
        starts.append(time.perf_counter() - started)
        if len(starts) < repeats:
            scripted.daemon.stop()
    base = statistics.median(imports)
    RESULTS["startup"] = {"ready": summary(starts), "import": summary(imports)}
    ratio = statistics.median(starts) / base
    row(
        f"6. start-up to READY=1 ({n} peers, {days} days)",
        ms(statistics.median(starts)),
        ms(base),
        ratio,
        "<= 3x import",
        ratio <= 3,
    )
    key = scripted.keys[n // 2]
    history = latencies(
        scripted.daemon.socket,
        lambda i: (
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "traffic.history",
                    "params": {"public_key": key, "granularity": "day", "limit": days},
                }
            ).encode()
            + b"\n"
        ),
        100,
    )
    scripted.daemon.stop()
    p50 = percentile(history, 0.5)
    RESULTS["history_400_days"] = summary(history)
    row("7. traffic.history, 400 days of one peer among 10,000", ms(p50), "", None, "<= 5 ms p50", p50 <= 0.005)


def report(path: str) -> None:
    headers = ("measurement", "figure", "floor", "ratio", "target")
    widths = [max(len(h), *(len(r[i]) for r in ROWS)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in ROWS]
    print("\n" + "\n".join(lines))
    RESULTS["table"] = [dict(zip(headers, r, strict=True)) for r in ROWS]
    Path(path).write_text(json.dumps(RESULTS, indent=2, default=str))
    print(f"\nevery figure: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
