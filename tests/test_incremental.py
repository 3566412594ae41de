"""The incremental paths give exactly what the plain ones give.

DumpParser re-reads only the lines that differ from the previous dump and says which peers
those are, and the books visit only those peers. Both are checked here against the plain
statements (parse_dump, and the rules of awgd.accounting over whole observations) over
random histories: counters moving, handshakes and endpoints changing, peers added, removed,
duplicated and re-keyed, shuffled as wireguard-go shuffles them, headers changed, garbage
lines, interfaces restarting, vanishing, going unread or unwatched, and ledger writes failing.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from awgd import dump_parser
from awgd.accounting import Booking, Checkpoint, InterfaceCheckpoint, Observation, account
from awgd.books import Books
from awgd.dump_parser import DumpError, DumpParser, Interface, parse_dump
from awgd.entry import Entry
from awgd.ip_link import Link
from awgd.peer_settings import Settings
from awgd.periods import period_containing
from awgd.system_reader import Reading

PRIVATE = base64.b64encode(bytes(range(32))).decode()
T0 = datetime(2026, 11, 20, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
MONTHLY = "0 0 1 * *"


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
        text += blocks[0].text()[:2]  # a repeated interface (docs/FORMAT.md, rule 9)
    return "\n".join(text) + "\n"


def owner_order(rng: random.Random) -> Callable[[str], dict[str, int]]:
    """An owner's order of keys for the parser (as awgd.books gives one): a random order of
    some of the keys the histories use, the others left without a rank."""
    ranked = [key(i) for i in [*range(40), 50, 100]]
    rng.shuffle(ranked)
    ranks = {public_key: rank for rank, public_key in enumerate(ranked[: rng.randrange(len(ranked) + 1)])}
    return lambda interface: ranks if interface != "awg1" else {}


def outcome(parse: object, data: str) -> tuple[Interface, ...] | tuple[int, str]:
    """What parsing gives, with each interface's peers in key order: DumpParser keeps the
    dump's order or, once it saw the order change (Go's map order), its owner's."""
    try:
        parsed: tuple[Interface, ...] = parse(data)  # type: ignore[operator]
    except DumpError as error:
        return (error.line, error.reason)
    return tuple(replace(i, peers=tuple(sorted(i.peers, key=itemgetter(0)))) for i in parsed)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 40), size=st.integers(0, 12))
def test_dump_parser_equals_parse_dump_over_any_history(seed: int, steps: int, size: int) -> None:
    rng = random.Random(seed)
    blocks = [Block("wg0", lines=[Line(key(i)) for i in range(size)]), Block("awg1", lines=[Line(key(100))])]
    parser = DumpParser(owner_order(rng))
    for _ in range(steps):
        for _ in range(rng.randrange(1, 3)):
            mutate(blocks, rng)
        data = dump_of(blocks, rng)
        assert outcome(parser.parse, data) == outcome(parse_dump, data)


def test_moving_counters_take_the_positional_path() -> None:
    blocks = [Block("wg0", lines=[Line(key(i), rx=i) for i in range(5)]), Block("wg1", lines=[Line(key(9))])]
    parser = DumpParser()
    parser.parse(dump_of(blocks, random.Random(0)))
    blocks[0].lines[1].rx += 1
    blocks[1].lines[0].handshake = 1795620000
    lines = dump_of(blocks, random.Random(0)).splitlines()
    layout = dump_parser._reread(list(lines), parser._last, ascii_text=True)
    assert layout is not None
    assert layout.interfaces == parse_dump("\n".join(lines))
    assert [len(i.changed or ()) for i in layout.interfaces] == [1, 1]


def test_a_shuffled_dump_is_kept_in_its_owners_order() -> None:
    """Go's map order: once the parser sees the order change, each interface's peers come in
    the order its owner gives (awgd.books: the order the books were made in), and every later
    dump is placed in that order and compared position by position."""
    blocks = [Block("wg0", lines=[Line(key(i), rx=i) for i in range(50)])]
    wanted = [key(i) for i in range(50)]
    random.Random(1).shuffle(wanted)  # neither the dump's order nor key order
    ranks = {public_key: rank for rank, public_key in enumerate(wanted[:45])}
    expected = wanted[:45] + sorted(wanted[45:])  # keys without a rank come after, in key order
    parser = DumpParser(lambda name: ranks if name == "wg0" else {})
    (first,) = parser.parse(dump_of(blocks, random.Random(0)))
    assert not parser._last.reordered  # the kernel's order until it changes
    assert [p.public_key for p in first.peers] == [key(i) for i in range(50)]
    blocks[0].lines[7].rx += 1
    random.Random(3).shuffle(blocks[0].lines)
    lines = dump_of(blocks, random.Random(0)).splitlines()
    assert dump_parser._reread(list(lines), parser._last, ascii_text=True) is None
    (iface,) = parser.parse("\n".join(lines))
    assert parser._last.reordered
    assert [p.public_key for p in iface.peers] == expected
    # Read afresh in that order: every Peer a new object (laid out in memory in that order).
    assert iface.changed is not None and len(iface.changed) == 50
    assert not {id(p) for p in iface.peers} & {id(p) for p in first.peers}
    assert next(p for p in iface.peers if p.public_key == key(7)).rx_bytes == 8
    # From now on every dump is placed in that order and compared position by position.
    next(line for line in blocks[0].lines if line.key == key(3)).tx += 5
    random.Random(4).shuffle(blocks[0].lines)
    lines = dump_of(blocks, random.Random(0)).splitlines()
    placed = dump_parser._placed(lines, parser._last)
    assert placed is not None
    layout = dump_parser._reread(placed, parser._last, ascii_text=True)
    assert layout is not None and layout.reordered
    (iface,) = layout.interfaces
    assert [p.public_key for p in iface.peers] == expected
    assert iface.changed is not None and [p.public_key for p in iface.changed] == [key(3)]
    assert iface.peers == parser.parse("\n".join(lines))[0].peers
    # One key in place of another (as many lines): placed where other keys stood, which the
    # positional path refuses; the full path keeps the order, the new key (no rank) last.
    blocks[0].lines[0] = Line(key(60), rx=1)
    gone = next(p.public_key for p in iface.peers if p.public_key not in {line.key for line in blocks[0].lines})
    lines = dump_of(blocks, random.Random(0)).splitlines()
    placed = dump_parser._placed(lines, parser._last)
    assert placed is not None and dump_parser._reread(placed, parser._last, ascii_text=True) is None
    (iface,) = parser.parse("\n".join(lines))
    after = [k for k in expected if k != gone]
    assert [p.public_key for p in iface.peers] == [*after[:44], *sorted([*after[44:], key(60)])]
    assert parser._last.reordered and iface.changed is None  # the keys changed


def test_go_order_books_and_ledger_rows_go_front_to_back() -> None:
    """With the books' own order given to the parser (as the sampler does), a Go-order server's
    samples visit the books, and hand the ledger its rows, in id order: the peers first seen
    first, then each one added later, at the end."""
    books = Books(period_containing(T0, MONTHLY, UTC_ZONE))
    parser = DumpParser(books.order)
    blocks = [Block("wg0", lines=[Line(key(i), rx=1) for i in range(40)])]
    rng = random.Random(5)
    for step in range(6):
        for line in blocks[0].lines:
            line.rx += 10
        if step == 3:
            blocks[0].lines.append(Line(key(77), rx=5))
        rng.shuffle(blocks[0].lines)
        (iface,) = parser.parse(dump_of(blocks, rng))
        links = {"wg0": Link(4, True)}
        entry = take(
            books, Reading(T0 + timedelta(minutes=step), "wg", (iface,), frozenset(), links, "b", ()), frozenset(), True
        )
        ids = [row[4] for row in entry.moved]
        if step:
            assert len(ids) == 40 + (step > 3) and ids == sorted(ids), step
    assert books.members["wg0"][key(77)].id == 41
    assert [row[4] for row in entry.moved][-1] == 41


def test_an_unchanged_line_gives_back_the_same_peer_object() -> None:
    blocks = [Block("wg0", lines=[Line(key(i), rx=i) for i in range(5)])]
    parser = DumpParser()
    first = parser.parse(dump_of(blocks, random.Random(0)))[0]
    assert first.changed is None  # nothing to compare with
    blocks[0].lines[2].rx += 10
    second = parser.parse(dump_of(blocks, random.Random(0)))[0]
    assert [a is b for a, b in zip(first.peers, second.peers, strict=True)] == [True, True, False, True, True]
    assert second.peers[2].rx_bytes == 12
    assert second.changed == (second.peers[2],)
    blocks[0].lines.pop(0)  # a peer removed: the full path, which still reuses every Peer it saw
    third = parser.parse(dump_of(blocks, random.Random(0)))[0]
    assert all(a is b for a, b in zip(second.peers[1:], third.peers, strict=True))
    assert third.changed is None  # the keys differ: everything must be compared


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 40), size=st.integers(0, 12))
def test_changed_names_every_peer_that_differs(seed: int, steps: int, size: int) -> None:
    """Interface.changed: None unless the interface lists the same keys as in the last dump;
    then every peer not in it is the very Peer object of its key in the last dump."""
    rng = random.Random(seed)
    blocks = [Block("wg0", lines=[Line(key(i)) for i in range(size)]), Block("awg1", lines=[Line(key(100))])]
    parser = DumpParser(owner_order(rng))
    last: dict[str, Interface] = {}
    for _ in range(steps):
        for _ in range(rng.randrange(1, 3)):
            mutate(blocks, rng)
        try:
            parsed = parser.parse(dump_of(blocks, rng))
        except DumpError:
            continue
        for iface in parsed:
            before = last.get(iface.name)
            same_keys = before is not None and {p.public_key for p in before.peers} == {
                p.public_key for p in iface.peers
            }
            if not same_keys:
                assert iface.changed is None
                continue
            assert iface.changed is not None and before is not None
            old = {p.public_key: p for p in before.peers}
            listed = {id(p) for p in iface.changed}
            assert listed <= {id(p) for p in iface.peers}
            for peer in iface.peers:
                assert id(peer) in listed or peer is old[peer.public_key]
        last = {i.name: i for i in parsed}


# ---- the books' incremental booking -----------------------------------------------------------


def readings(rng: random.Random, steps: int, size: int) -> Iterator[Reading]:
    """A random history of readings as the daemon gets them: counters moving, peers added,
    removed and re-keyed, wireguard-go's shuffled order, reboots and re-created interfaces,
    interfaces gone or unread while the parser still remembers their lines (so their Peer
    objects come back identical when they reappear). Only dumps that parse are read."""
    blocks = [Block("wg0", lines=[Line(key(i)) for i in range(size)]), Block("wg1", lines=[Line(key(50))])]
    parser = DumpParser(owner_order(rng))
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


class Reference:
    """The rules of awgd.accounting applied to whole observations: what the books must match."""

    def __init__(self) -> None:
        self.peers: dict[str, dict[str, Checkpoint]] = {}
        self.interfaces: dict[str, InterfaceCheckpoint] = {}
        self.totals: dict[tuple[str, str], tuple[int, int]] = {}
        self.baseline = True

    def book(self, reading: Reading, watched: frozenset[str], commits: bool) -> Booking:
        read = [i for i in reading.interfaces if not watched or i.name in watched]
        unread = set(reading.unread)
        if watched:
            unread |= (set(self.peers) | set(self.interfaces)) - watched
        links = reading.links or {}
        observation = Observation(
            counters={i.name: {p.public_key: (p.rx_bytes, p.tx_bytes) for p in i.peers} for i in read},
            ifindexes={i.name: links[i.name].ifindex for i in read if i.name in links},
            boot_id=reading.boot_id,
            unread=frozenset(unread),
        )
        booking = account(self.peers, self.interfaces, observation, baseline=self.baseline)
        if commits:
            for (name, peer_key), checkpoint in booking.peers.items():
                self.peers.setdefault(name, {})[peer_key] = checkpoint
            self.interfaces.update(booking.interfaces)
            for peer_key, (drx, dtx) in booking.deltas.items():
                rx, tx = self.totals.get(peer_key, (0, 0))
                self.totals[peer_key] = (rx + drx, tx + dtx)
            self.baseline = False
        return booking


def take(books: Books, reading: Reading, watched: frozenset[str], commits: bool) -> Entry:
    entry = books.take(reading, watched=watched, target=books.target(reading.taken_at, MONTHLY, UTC_ZONE))
    if commits:
        books.commit(entry)
    else:
        books.failed()
    return entry


def deltas(entry: Entry) -> dict[tuple[str, str], tuple[int, int]]:
    """What an entry books, per peer: only the non-zero deltas."""
    rows = [*zip(entry.new_books, entry.new_counters, strict=True), *zip(entry.moved_books, entry.moved, strict=True)]
    return {book.key: (row[2], row[3]) for book, row in rows if row[2] or row[3]}


def checkpoints(books: Books) -> dict[str, dict[str, Checkpoint]]:
    found: dict[str, dict[str, Checkpoint]] = {}
    for book in books:
        if book.id is not None:
            checkpoint = Checkpoint(book.checkpoint_rx, book.checkpoint_tx, book.checkpoint_present)
            found.setdefault(book.interface, {})[book.public_key] = checkpoint
    return found


def shown(books: Books) -> dict[tuple[str, str], tuple[object, ...]]:
    return {
        book.key: (book.present, book.session, book.line, book.latest_handshake, books.sampled_at(book))
        for book in books
    }


def full(reading: Reading) -> Reading:
    """The same reading with no `changed` lists: the books must visit every peer."""
    return replace(reading, interfaces=tuple(replace(i, changed=None) for i in reading.interfaces))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    steps=st.integers(1, 40),
    size=st.integers(1, 10),
    watched=st.sampled_from([frozenset(), frozenset({"wg0"}), frozenset({"wg1", "wg9"})]),
)
def test_the_books_book_what_the_rules_say(seed: int, steps: int, size: int, watched: frozenset[str]) -> None:
    rng = random.Random(seed)
    period = period_containing(T0, MONTHLY, UTC_ZONE)
    incremental, everyone, reference = Books(period), Books(period), Reference()
    took_fast_path = False
    blocked: set[tuple[str, str]] = set()  # what an admin has blocked
    booked_blocked: dict[tuple[str, str], int] = {}  # what the rules book while it was
    for reading in readings(rng, steps, size):
        for peer_key in list(incremental.peers):  # an admin blocks or unblocks a few peers
            if rng.random() < 0.15:
                blocked ^= {peer_key}
                settings = Settings(blocked=("admin",) if peer_key in blocked else ())
                for books in (incremental, everyone):
                    books.settle(*peer_key, settings, T0)
        commits = rng.random() > 0.1  # sometimes the ledger write fails
        entry = take(incremental, reading, watched, commits)
        take(everyone, full(reading), watched, commits)
        booking = reference.book(reading, watched, commits)
        assert deltas(entry) == booking.deltas
        held = {k: rx + tx for k, (rx, tx) in booking.deltas.items() if k in blocked and rx + tx}
        assert {book.key: n for book, n in entry.blocked_books} == held
        assert sorted(n for _, n in entry.blocked) == sorted(held.values())
        if commits:
            for peer_key, n in held.items():
                booked_blocked[peer_key] = booked_blocked.get(peer_key, 0) + n
        assert {b.key: b.blocked_bytes for b in incremental if b.blocked_bytes} == booked_blocked
        assert entry.interfaces == booking.interfaces
        assert checkpoints(incremental) == reference.peers
        assert shown(incremental) == shown(everyone)
        assert {b.key: (b.lifetime_rx, b.lifetime_tx) for b in incremental if b.lifetime_rx or b.lifetime_tx} == {
            k: v for k, v in reference.totals.items() if v != (0, 0)
        }
        took_fast_path |= any(i.changed is not None and len(i.changed) < len(i.peers) for i in reading.interfaces)
        for books in (incremental, everyone):  # one book per peer, the same wherever it is found
            for (name, public_key), book in books.peers.items():
                assert books.members[name][public_key] is book and book.key == (name, public_key)
                assert [b for b in books.by_key[public_key] if b.interface == name] == [book]
            assert sum(map(len, books.members.values())) == len(books.peers)
    if steps > 10 and size > 3:
        assert took_fast_path or not reference.peers
