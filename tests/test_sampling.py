"""A whole sample without the daemon: scripted tool -> parser -> books -> real ledger file,
through the daemon's own Sampler."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from booking import booked
from conftest import CAPTURES, ScriptedTool, secrets_in_captures

from awgd.bookkeeper import Bookkeeper
from awgd.config import Config
from awgd.ledger import Ledger
from awgd.periods import period_containing
from awgd.sampling import Sampler, SamplingFailed

SRV_PEER = "6NCqMhFSG4mXZ28vhdHtmVrAL2sqQFKvBHSIPCdphVs="
ZONE = ZoneInfo("Europe/Moscow")
KEY = "K" * 42 + "A="


class Sampling:
    """The daemon's sample path without the daemon: the Sampler over a real ledger file."""

    def __init__(self, tool: ScriptedTool, path: Path, watched: tuple[str, ...] = ()) -> None:
        self.path = path
        self.ledger = Ledger.open(f"sqlite:///{path}")
        self.config = Config(tool=str(tool.path), interfaces=watched, zone=ZONE)
        period = period_containing(datetime.now(UTC), self.config.periods_schedule, ZONE)
        bookkeeper = Bookkeeper.load(self.ledger, period, ZONE, self.config.periods_schedule)
        self.sampler = Sampler(bookkeeper, lambda: self.config)
        self.books = bookkeeper.books

    def sample(self) -> datetime:
        return asyncio.run(self.sampler.join_or_start())

    def period(self, key: str, interface: str = "wg0") -> tuple[int, int]:
        ((_, rx, tx), *_) = booked(self.path, key)[interface]
        return rx, tx


def peer_line(iface: str, key: str, rx: int, tx: int) -> str:
    return f"{iface}\t{key}\t(none)\t10.0.0.2:5000\t10.9.0.2/32\t1795624736\t{rx}\t{tx}\toff\n"


IFACE_LINE = "wg0\t" + "S" * 42 + "A=\t" + "P" * 42 + "A=\t51820\toff\n"


def test_every_capture_books_without_leaking_a_secret(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    path = tmp_path / "ledger.sqlite3"
    sampling = Sampling(scripted_tool, path)
    for capture in CAPTURES:
        if capture.interface is not None or capture.returncode != 0:
            continue
        scripted_tool.play(capture)
        sampling.sample()
    assert len(sampling.ledger.load().peers) >= 8
    sampling.ledger.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ledger.sqlite3"))
    secrets = secrets_in_captures()
    assert secrets
    for secret in secrets:
        assert secret.encode() not in data, "a private or preshared key reached the ledger file"
    assert SRV_PEER.encode() in data  # the check above is looking at the right bytes
    assert b"10.251.0.2" not in data  # endpoints stay in memory


def test_samples_book_what_moved(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    sampling = Sampling(scripted_tool, tmp_path / "l.sqlite3")
    scripted_tool.set(IFACE_LINE + peer_line("wg0", KEY, 100, 200))
    sampling.sample()
    assert sampling.books.tracking_since is not None  # the baseline
    scripted_tool.set(IFACE_LINE + peer_line("wg0", KEY, 150, 260))
    sampling.sample()
    version = sampling.books.version
    sampling.sample()  # idle: the books say nothing changed, the ledger gets nothing
    assert sampling.books.version == version + 2  # taken and committed, with nothing in it
    assert sampling.period(KEY) == (50, 60)
    assert sampling.sampler.health.last_duration is not None and sampling.sampler.health.last_duration > 0


def test_failed_sample_touches_nothing(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    sampling = Sampling(scripted_tool, tmp_path / "l.sqlite3")
    scripted_tool.set(IFACE_LINE + peer_line("wg0", KEY, 100, 200))
    sampling.sample()
    scripted_tool.set(IFACE_LINE + "wg0\tgarbage\n")
    with pytest.raises(SamplingFailed, match="line 2"):
        sampling.sample()
    scripted_tool.set("", "Unable to list interfaces: Permission denied\n", 1)
    with pytest.raises(SamplingFailed):
        sampling.sample()
    (book,) = sampling.books.find(KEY)
    assert book.checkpoint_rx == 100
    assert sampling.sampler.health.consecutive_failures == 2
    scripted_tool.set(IFACE_LINE + peer_line("wg0", KEY, 130, 200))
    sampling.sample()
    assert sampling.period(KEY) == (30, 0)


def test_unread_interface_keeps_its_peers_present(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    sampling = Sampling(scripted_tool, tmp_path / "l.sqlite3")
    other = IFACE_LINE.replace("wg0", "wg1") + peer_line("wg1", KEY, 1, 1)
    scripted_tool.set(IFACE_LINE + peer_line("wg0", KEY, 100, 200) + other)
    sampling.sample()
    scripted_tool.set(other, "Unable to access interface wg0: Permission denied\n", 0)
    sampling.sample()
    assert sampling.books.peers[("wg0", KEY)].checkpoint_present
    # Read again after the failure: whatever moved meanwhile is booked by the usual rule.
    scripted_tool.set(IFACE_LINE + peer_line("wg0", KEY, 180, 200) + other)
    sampling.sample()
    assert sampling.period(KEY) == (80, 0)


def test_watched_interfaces_limit_the_booking(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    both = IFACE_LINE + peer_line("wg0", KEY, 1, 1) + IFACE_LINE.replace("wg0", "wg1") + peer_line("wg1", KEY, 1, 1)
    scripted_tool.set(both)
    sampling = Sampling(scripted_tool, tmp_path / "l.sqlite3")
    sampling.sample()
    sampling.config = replace(sampling.config, interfaces=("wg1",))
    scripted_tool.set(IFACE_LINE.replace("wg0", "wg1") + peer_line("wg1", KEY, 5, 5))
    sampling.sample()
    assert sampling.books.peers[("wg0", KEY)].checkpoint_present  # not watched is not absent
    assert sampling.books.peers[("wg0", KEY)].present
