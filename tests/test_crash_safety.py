"""SIGKILL a process that books samples, hundreds of times: the ledger stays exact."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

HELPERS = Path(__file__).parent / "helpers"
ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(HELPERS))

from crash_history import history  # noqa: E402

from awgd.ledger import Ledger  # noqa: E402

SAMPLES = 3000
PEERS = 50  # per interface; about half move in each sample
KILLS_PER_LEDGER = 100  # two ledgers side by side: 200 kills in all


def worker(path: Path, seed: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client"), str(HELPERS)])}
    return subprocess.Popen(
        [sys.executable, str(HELPERS / "crash_worker.py"), str(path), str(seed), str(SAMPLES), str(PEERS)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def torture(path: Path, seed: int, outcome: dict[int, object]) -> None:
    rng = random.Random(seed)
    finished_early = 0
    try:
        for _ in range(KILLS_PER_LEDGER):
            process = worker(path, seed)
            assert process.stdout is not None
            if rng.random() < 0.1:
                delay = rng.uniform(0, 0.4)  # somewhere in start-up: opening, creating the schema
            else:
                assert process.stdout.readline() == "ready\n"
                delay = rng.uniform(0, 0.03)  # somewhere in the booking loop
            try:
                process.wait(timeout=delay)
                finished_early += 1
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
            process.stdout.close()
            if path.exists():
                assert integrity(path) == "ok"
        process = worker(path, seed)
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0 and out.endswith("finished\n")
        outcome[seed] = finished_early
    except BaseException as exc:  # reported by the test thread
        outcome[seed] = exc


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    seeds = (11, 12)
    outcome: dict[int, object] = {}
    threads = [threading.Thread(target=torture, args=(tmp_path / f"l{s}.sqlite3", s, outcome)) for s in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in seeds:
        result = outcome[seed]
        if isinstance(result, BaseException):
            raise result
        # Most runs must really have been killed, or the test proves nothing.
        assert isinstance(result, int) and result < KILLS_PER_LEDGER // 4
        _, true = history(seed, SAMPLES, PEERS)
        path = tmp_path / f"l{seed}.sqlite3"
        assert integrity(path) == "ok"
        # Read back through the ledger itself: a bucket is its closed row plus the open running total.
        ledger = Ledger.open(f"sqlite:///{path}")
        contents = ledger.load()
        months: set[int] = set()
        lifetime, periods, days = {}, {}, {}
        for record in contents.peers:
            key = (record.interface, record.public_key)
            lifetime[key] = (record.lifetime_rx, record.lifetime_tx)
            opened = {"open_period": contents.open_period, "open_day": contents.open_day}
            by_period = ledger.history(record.id, "period", 1000, **opened)
            by_day = ledger.history(record.id, "day", 1000, **opened)
            months.update(b.start for b in by_period)
            periods[key] = (sum(b.rx for b in by_period), sum(b.tx for b in by_period))
            days[key] = (sum(b.rx for b in by_day), sum(b.tx for b in by_day))
        ledger.close()
        assert len(months) == 2  # the history crosses 1 December 00:00 in Moscow
        for key, expected in true.items():
            assert lifetime[key] == expected, key
            assert periods[key] == expected, key
            assert days[key] == expected, key
