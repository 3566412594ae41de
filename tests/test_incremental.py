"""The incremental paths give exactly what the full paths give.

DumpParser re-reads only the lines that differ from the previous dump, and the sampler
passes the accounting only the peers whose Peer object changed since the last committed
booking. Both are checked here against the reference (parse_dump, and observing every
peer) over random histories: counters moving, handshakes and endpoints changing, peers
added, removed, duplicated and re-keyed, headers changed, garbage lines, interfaces
restarting, vanishing or going unread, and ledger writes failing.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from awgd import dump_parser
from awgd.accounting import Booking, InterfaceCheckpoint, PeerCheckpoint, account, advance
from awgd.dump_parser import DumpError, DumpParser, Interface, Peer, parse_dump
from awgd.ip_link import Link
from awgd.peer_changes import changed_peers
from awgd.periods import period_containing
from awgd.sampler import booked_after, observe
from awgd.state import State
from awgd.system_reader import Reading

PRIVATE = base64.b64encode(bytes(range(32))).decode()
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def key(n: int) -> str:
    return base64.b64encode(n.to_bytes(32, "big")).decode()


@dataclass
class Line:
    key: str
    rx: int = 0
    tx: int = 0
    handshake: int = 0
    endpoint: str = "(none)"
    ips: str = "10.0.0.1/32"
    keepalive: str = "off"
    raw: str | None = None  # a literal peer line (garbage, odd counters) instead of the fields

    def text(self, iface: str) -> str:
        if self.raw is not None:
            return f"{iface}\t{self.raw}"
        fields = (self.key, "(none)", self.endpoint, self.ips, self.handshake, self.rx, self.tx, self.keepalive)
        return "\t".join([iface, *map(str, fields)])


@dataclass
class Block:
    name: str
    port: int = 51820
    lines: list[Line] = field(default_factory=list)

    def text(self) -> list[str]:
        head = f"{self.name}\t{PRIVATE}\t{key(999)}\t{self.port}\toff"
        return [head] + [line.text(self.name) for line in self.lines]


ODD_FIELDS = [
    "",  # empty counter
    "12a",
    "²",  # a non-ASCII digit: isdigit() says yes, the format says no
    "0" * 21 + "5",  # leading zeros past 20 digits
    str(2**63),  # past COUNTER_MAX
    "007",  # leading zeros within 20 digits: valid
    str(2**63 - 1),
]


def mutate(blocks: list[Block], rng: random.Random) -> None:
    """One random change to the dump's model, weighted towards the common ones."""
    lines = [(b, i) for b in blocks for i in range(len(b.lines))]
    rare = ["handshake", "endpoint", "ips", "keepalive", "add", "remove", "dup", "rekey", "port", "odd", "garbage"]
    kind = rng.choice(["move"] * 6 + rare + ["swap", "shuffle"])
    if kind == "port" or not lines:
        block = rng.choice(blocks)
        block.port = rng.choice([51820, 51821])
        if not lines:
            block.lines.append(Line(key(rng.randrange(40))))
        return
    block, index = rng.choice(lines)
    line = block.lines[index]
    if kind == "move":
        for _ in range(rng.randrange(1, 4)):
            b, i = rng.choice(lines)
            b.lines[i].rx += rng.randrange(1, 1000)
            b.lines[i].tx += rng.randrange(0, 1000)
            b.lines[i].raw = None
    elif kind == "handshake":
        line.handshake = rng.choice([0, 1795620000, 1795620120])
    elif kind == "endpoint":
        line.endpoint = rng.choice(["(none)", "198.51.100.7:51000", "[2001:db8::1]:51000"])
    elif kind == "ips":
        line.ips = rng.choice(["10.0.0.1/32", "10.0.0.2/32,fd00::2/128", "(none)"])
    elif kind == "keepalive":
        line.keepalive = rng.choice(["off", "25", "0"])
    elif kind == "add":
        block.lines.insert(rng.randrange(len(block.lines) + 1), Line(key(rng.randrange(40))))
    elif kind == "remove":
        del block.lines[index]
    elif kind == "dup":
        block.lines.insert(rng.randrange(len(block.lines) + 1), Line(line.key, line.rx + 1, line.tx))
    elif kind == "rekey":
        line.key = rng.choice([key(rng.randrange(40)), rng.choice(block.lines).key])  # often a duplicate
    elif kind == "odd":
        counters = [str(line.handshake), str(line.rx), str(line.tx)]
        counters[rng.randrange(3)] = rng.choice(ODD_FIELDS)
        line.raw = f"{line.key}\t(none)\t{line.endpoint}\t10.0.0.1/32\t" + "\t".join(counters) + "\toff"
    elif kind == "shuffle":  # wireguard-go lists peers in Go map order: new on every dump
        rng.shuffle(block.lines)
    elif kind == "garbage":
        line.raw = rng.choice(["x", "a\tb\tc\td\te\tf\tg\th", f"{line.key}\t(none)\t(none)\t(none)\t1\t2\t3\t4"])
    else:
        other = rng.choice(blocks)
        if other is not block and other.lines:
            block.lines[index], other.lines[0] = other.lines[0], line


def dump_of(blocks: list[Block], rng: random.Random) -> str:
    text = [row for block in blocks for row in block.text()]
    if rng.random() < 0.05 and len(blocks) > 1:
        text += blocks[0].text()[:2]  # a repeated interface (FORMAT.md 7.11)
    return "\n".join(text) + "\n"


def outcome(parse: object, data: str) -> tuple[Interface, ...] | tuple[int, str]:
    try:
        return parse(data)  # type: ignore[operator, no-any-return]
    except DumpError as error:
        return (error.line, error.reason)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 40), size=st.integers(0, 12))
def test_dump_parser_equals_parse_dump_over_any_history(seed: int, steps: int, size: int) -> None:
    rng = random.Random(seed)
    blocks = [Block("wg0", lines=[Line(key(i)) for i in range(size)]), Block("awg1", lines=[Line(key(100))])]
    parser = DumpParser()
    for _ in range(steps):
        for _ in range(rng.randrange(1, 3)):
            mutate(blocks, rng)
        data = dump_of(blocks, rng)
        assert outcome(parser.parse, data) == outcome(parse_dump, data)


def test_moving_counters_take_the_fast_path() -> None:
    blocks = [Block("wg0", lines=[Line(key(i), rx=i) for i in range(5)]), Block("wg1", lines=[Line(key(9))])]
    parser = DumpParser()
    parser.parse(dump_of(blocks, random.Random(0)))
    blocks[0].lines[1].rx += 1
    blocks[1].lines[0].handshake = 1795620000
    lines = dump_of(blocks, random.Random(0)).splitlines()
    layout = dump_parser._reread(list(lines), parser._last, ascii_text=True)
    assert layout is not None
    assert layout.interfaces == parse_dump("\n".join(lines))


def test_an_unchanged_line_gives_back_the_same_peer_object() -> None:
    blocks = [Block("wg0", lines=[Line(key(i), rx=i) for i in range(5)])]
    parser = DumpParser()
    first = parser.parse(dump_of(blocks, random.Random(0)))[0].peers
    blocks[0].lines[2].rx += 10
    second = parser.parse(dump_of(blocks, random.Random(0)))[0].peers
    assert [a is b for a, b in zip(first, second, strict=True)] == [True, True, False, True, True]
    assert second[2].rx_bytes == 12
    assert changed_peers(first, second) == [second[2]]
    blocks[0].lines.pop(0)  # positions shift: the full path, which still reuses every Peer it saw
    third = parser.parse(dump_of(blocks, random.Random(0)))[0].peers
    assert all(a is b for a, b in zip(second[1:], third, strict=True))
    assert changed_peers(second, third) is None


def test_changed_peers_in_either_order() -> None:
    a, b, c = (Peer(key(n), None, (), 0, 1, 1, None) for n in (1, 2, 3))
    moved = a._replace(rx_bytes=5)
    assert changed_peers((a, b), (a, b)) == []
    assert changed_peers((a, b), (moved, b)) == [moved]
    assert changed_peers((a, b), (b, a)) == []  # wireguard-go's order changes on every dump
    assert changed_peers((a, b), (b, moved)) == [moved]
    assert changed_peers((a,), (a, b)) is None
    assert changed_peers((a, b), (a, c)) is None  # a key replaced by another
    assert changed_peers((a, b), (c, moved)) is None


# ---- the sampler's incremental observation ----------------------------------------------------


class Pipeline:
    """Checkpoints advanced the way the sampler advances them, full or incremental."""

    def __init__(self, incremental: bool) -> None:
        self.incremental = incremental
        self.peers: dict[str, dict[str, PeerCheckpoint]] = {}
        self.interfaces: dict[str, InterfaceCheckpoint] = {}
        self.booked: dict[str, tuple[Peer, ...]] = {}
        self.first = True

    def book(self, reading: Reading, commits: bool) -> Booking:
        known = set(self.peers) | set(self.interfaces)
        if self.incremental:
            observation = observe(reading, (), known, self.booked, self.interfaces)
        else:
            observation = observe(reading, (), known)
        booking = account(self.peers, self.interfaces, observation, first_sample=self.first)
        if commits:
            advance(self.peers, self.interfaces, booking)
            self.first = False
            if self.incremental:
                self.booked = booked_after(self.booked, reading, observation)
        return booking


def readings(rng: random.Random, steps: int, size: int) -> Iterator[Reading]:
    """A random history of readings as the daemon gets them: counters moving, peers added,
    removed and re-keyed, wireguard-go's shuffled order, reboots and re-created interfaces,
    interfaces gone or unread while the parser still remembers their lines (so their Peer
    objects come back identical when they reappear). Only dumps that parse are read."""
    blocks = [Block("wg0", lines=[Line(key(i)) for i in range(size)]), Block("wg1", lines=[Line(key(50))])]
    parser = DumpParser()
    ifindex = {"wg0": 4, "wg1": 5}
    boot = "boot-1"
    for step in range(steps):
        event = rng.random()
        if event < 0.05:
            boot = f"boot-{step}"  # a reboot: every counter restarted
            for b in blocks:
                for line in b.lines:
                    line.rx, line.tx = line.rx % 7, 0
        elif event < 0.1:
            ifindex["wg0"] += 1  # the interface was re-created
        for _ in range(rng.randrange(0, 3)):
            mutate(blocks, rng)
        for block in blocks:
            block.lines = [line for line in block.lines if line.raw is None]
            if rng.random() < 0.3:
                rng.shuffle(block.lines)
        try:
            parsed = parser.parse(dump_of(blocks, random.Random(0)))
        except DumpError:
            continue
        interfaces = tuple(i for i in parsed if rng.random() > 0.1)
        unread = frozenset(i.name for i in parsed if i not in interfaces and rng.random() < 0.5)
        links = {name: Link(index, True) for name, index in ifindex.items() if rng.random() > 0.05}
        yield Reading(T0 + timedelta(minutes=step), "wg", interfaces, unread, links, boot, ())


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 40), size=st.integers(1, 10))
def test_incremental_booking_equals_the_full_booking(seed: int, steps: int, size: int) -> None:
    rng = random.Random(seed)
    full, incremental = Pipeline(False), Pipeline(True)
    used_fast_path = False
    for reading in readings(rng, steps, size):
        commits = rng.random() > 0.1  # sometimes the ledger write fails
        if incremental.booked and any(i.name in incremental.booked for i in reading.interfaces):
            used_fast_path = True
        assert incremental.book(reading, commits) == full.book(reading, commits)
        assert incremental.peers == full.peers and incremental.interfaces == full.interfaces
    if steps > 5:
        assert used_fast_path or not full.peers


# ---- the daemon's in-memory state ------------------------------------------------------------


def figures(state: State) -> dict[tuple[str, str], tuple[object, ...]]:
    return {
        key: (p.present, p.session_rx, p.session_tx, p.endpoint, p.latest_handshake, state.sampled_at(p))
        for key, p in state.peers.items()
    }


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 30), size=st.integers(1, 10))
def test_incremental_state_equals_observing_every_peer(seed: int, steps: int, size: int) -> None:
    period = period_containing(T0, "0 0 1 * *", ZoneInfo("UTC"))
    incremental, full = State(period=period), State(period=period)
    for reading in readings(random.Random(seed), steps, size):
        incremental.observe(reading)
        full.observed.clear()  # forces the path that visits every peer
        full.observe(reading)
        assert figures(incremental) == figures(full)
        assert incremental.sampler.peers_seen == full.sampler.peers_seen
