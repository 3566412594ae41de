"""A whole sample end to end: scripted tool -> parser -> accounting -> real ledger file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import CAPTURES, ScriptedTool, secrets_in_captures

from awgd.ledger import Ledger
from awgd.periods import period_containing
from awgd.sampler import Sampler, SampleResult
from awgd.system_reader import SamplingError, read_system

SRV_PEER = "6NCqMhFSG4mXZ28vhdHtmVrAL2sqQFKvBHSIPCdphVs="
ZONE = ZoneInfo("Europe/Moscow")


class Sampling:
    """The daemon's sample path without the daemon: read the scripted tool, book the reading."""

    def __init__(self, tool: ScriptedTool, ledger: Ledger, watched: tuple[str, ...] = ()) -> None:
        self.tool = tool
        self.sampler = Sampler(ledger, watched=watched, schedule="0 0 1 * *", zone=ZONE)
        self.peers = self.sampler.peers

    async def sample(self) -> SampleResult:
        return await self.sampler.book(await read_system([str(self.tool.path)], [], 5))


def make_sampler(tool: ScriptedTool, ledger: Ledger, watched: tuple[str, ...] = ()) -> Sampling:
    return Sampling(tool, ledger, watched)


def peer_line(iface: str, key: str, rx: int, tx: int) -> str:
    return f"{iface}\t{key}\t(none)\t10.0.0.2:5000\t10.9.0.2/32\t1795624736\t{rx}\t{tx}\toff\n"


IFACE_LINE = "wg0\t" + "S" * 42 + "A=\t" + "P" * 42 + "A=\t51820\toff\n"


def test_every_capture_books_without_leaking_a_secret(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger.open(f"sqlite:///{path}")
    sampler = make_sampler(scripted_tool, ledger)
    booked = 0
    for capture in CAPTURES:
        if capture.interface is not None or capture.returncode != 0:
            continue
        scripted_tool.play(capture)
        result = asyncio.run(sampler.sample())
        booked += result.rows_written
    assert booked > 0
    assert len(ledger.all_peers()) >= 8
    ledger.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ledger.sqlite3"))
    secrets = secrets_in_captures()
    assert secrets
    for secret in secrets:
        assert secret.encode() not in data, "a private or preshared key reached the ledger file"
    assert SRV_PEER.encode() in data  # the check above is looking at the right bytes
    assert b"10.251.0.2" not in data  # endpoints stay in memory


def test_samples_book_what_moved(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    sampler = make_sampler(scripted_tool, ledger)
    key = "K" * 42 + "A="
    scripted_tool.set(IFACE_LINE + peer_line("wg0", key, 100, 200))
    first = asyncio.run(sampler.sample())
    assert first.peers_moved == 0  # the baseline
    scripted_tool.set(IFACE_LINE + peer_line("wg0", key, 150, 260))
    second = asyncio.run(sampler.sample())
    assert second.peers_moved == 1
    idle = asyncio.run(sampler.sample())
    assert idle.rows_written == 0
    period = period_containing(datetime.now(UTC), "0 0 1 * *", ZONE)
    assert ledger.usage("wg0", key, period) == (50, 60)


def test_failed_sample_touches_nothing(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    sampler = make_sampler(scripted_tool, ledger)
    key = "K" * 42 + "A="
    scripted_tool.set(IFACE_LINE + peer_line("wg0", key, 100, 200))
    asyncio.run(sampler.sample())
    scripted_tool.set(IFACE_LINE + "wg0\tgarbage\n")
    with pytest.raises(SamplingError, match="line 2"):
        asyncio.run(sampler.sample())
    scripted_tool.set("", "Unable to list interfaces: Permission denied\n", 1)
    with pytest.raises(SamplingError):
        asyncio.run(sampler.sample())
    assert sampler.peers["wg0"][key].rx == 100
    scripted_tool.set(IFACE_LINE + peer_line("wg0", key, 130, 200))
    asyncio.run(sampler.sample())
    period = period_containing(datetime.now(UTC), "0 0 1 * *", ZONE)
    assert ledger.usage("wg0", key, period) == (30, 0)


def test_unread_interface_keeps_its_peers_present(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    sampler = make_sampler(scripted_tool, ledger)
    key = "K" * 42 + "A="
    other = IFACE_LINE.replace("wg0", "wg1") + peer_line("wg1", key, 1, 1)
    scripted_tool.set(IFACE_LINE + peer_line("wg0", key, 100, 200) + other)
    asyncio.run(sampler.sample())
    scripted_tool.set(other, "Unable to access interface wg0: Permission denied\n", 0)
    asyncio.run(sampler.sample())
    assert sampler.peers["wg0"][key].present
    # Read again after the failure: whatever moved meanwhile is booked by the usual rule.
    scripted_tool.set(IFACE_LINE + peer_line("wg0", key, 180, 200) + other)
    asyncio.run(sampler.sample())
    period = period_containing(datetime.now(UTC), "0 0 1 * *", ZONE)
    assert ledger.usage("wg0", key, period) == (80, 0)


def test_watched_interfaces_limit_the_booking(tmp_path: Path, scripted_tool: ScriptedTool) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    key = "K" * 42 + "A="
    both = IFACE_LINE + peer_line("wg0", key, 1, 1) + IFACE_LINE.replace("wg0", "wg1") + peer_line("wg1", key, 1, 1)
    scripted_tool.set(both)
    asyncio.run(make_sampler(scripted_tool, ledger).sample())
    narrowed = make_sampler(scripted_tool, ledger, watched=("wg1",))
    scripted_tool.set(IFACE_LINE.replace("wg0", "wg1") + peer_line("wg1", key, 5, 5))
    asyncio.run(narrowed.sample())
    assert narrowed.peers["wg0"][key].present  # not watched is not absent
