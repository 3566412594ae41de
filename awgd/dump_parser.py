"""Parse `awg|wg show all dump` and `show IFACE dump` output into plain immutable data.

`parse_dump` is pure: text in, data out. The rules are those of docs/FORMAT.md
("How awgd reads a dump"): lines split on TAB only, the first line of each interface is its interface
line whatever its length, peer lines have exactly 9 fields (8 without the interface name)
and are validated strictly.

`DumpParser` parses one server's consecutive dumps to the same results, but re-reads only
what changed since its last dump, and says per interface which peers those are
(`Interface.changed`), so that nothing downstream needs to look at the others.

Secrets: the interface private key, the AmneziaWG header-protection key and every
peer's preshared key are read past and dropped here; no type below has a field
for them, and no error message quotes a line's content.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import compress, count
from operator import itemgetter, ne
from typing import NamedTuple

from awgd_client.names import KEY_PATTERN, interface_name_problem

# WireGuard prints u64 counters, but SQLite integers are signed 64-bit; 2**63 bytes is
# 8 EiB, which no peer reaches, so a larger value is treated as garbage.
COUNTER_MAX = 2**63 - 1

# Interface-line field counts, without the interface-name field, by format (docs/FORMAT.md).
# An unknown count is still accepted (the first three fields from the left, fwmark from the
# right): newer AmneziaWG releases add fields.
FORMATS_BY_FIELD_COUNT = {
    4: "wg",
    13: "awg1",
    22: "awg1.5",
    20: "awg2",
    27: "awg3.0",
    29: "awg3.1",
}
MIN_INTERFACE_FIELDS = 4
PEER_FIELDS = 8

_KEY = KEY_PATTERN
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)"
# IPv6 literals are checked loosely here and strictly with ipaddress afterwards.
_IPV6ISH = r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{1,41}"  # a colon within the first five characters
_ENDPOINT = rf"(?:{_IPV4}|\[(?P<v6>{_IPV6ISH})(?:%[0-9A-Za-z_.-]{{1,15}})?\]):{_PORT}"
_CIDR = rf"(?:{_IPV4}/(?:3[0-2]|[12]?[0-9])|{_IPV6ISH}/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))"
_U64 = r"[0-9]{1,20}"
_KEEPALIVE = r"off|[0-9]{1,10}(?:-[0-9]{1,10})?"

_PEER_RE = re.compile(
    rf"(?P<pub>{_KEY})\t(?:{_KEY}|\(none\))\t(?P<ep>\(none\)|{_ENDPOINT})\t"
    rf"(?P<ips>\(none\)|{_CIDR}(?:,{_CIDR})*)\t(?P<hs>{_U64})\t(?P<rx>{_U64})\t(?P<tx>{_U64})\t"
    rf"(?P<ka>{_KEEPALIVE})",
    re.ASCII,
)
_KEY_RE = re.compile(_KEY, re.ASCII)
# Shared with awgd.uapi_parser, which reads the same values in another frame.
ENDPOINT_PATTERN = _ENDPOINT
CIDR_PATTERN = _CIDR
_PORT_RE = re.compile(_PORT, re.ASCII)
_FWMARK_RE = re.compile(r"off|0x[0-9a-f]{1,8}", re.ASCII)


class DumpError(ValueError):
    """A dump that cannot be trusted. Names the line and the fault, never the content."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class Peer(NamedTuple):
    """A NamedTuple rather than a frozen dataclass: 50,000 of them are built per sample, and a
    frozen dataclass's __init__ costs several times as much."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # Unix seconds; 0 = never
    rx_bytes: int  # received from the peer
    tx_bytes: int  # sent to the peer
    keepalive: tuple[int, int] | None  # seconds (min, max); None = off


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    public_key: str | None
    listen_port: int
    fwmark: int | None
    format: str  # a key of FORMATS_BY_FIELD_COUNT's values, or "unknown"
    peers: tuple[Peer, ...]
    # Filled by DumpParser: the peers that may differ from its last dump, when this interface
    # lists the same keys as then (a peer not among them is the very same Peer object as
    # then); None when that is not known (no last dump, keys added, removed or re-keyed).
    changed: tuple[Peer, ...] | None = field(default=None, compare=False)
    # AmneziaWG's obfuscation parameters as printed (jc, jmin, jmax, s1.. as integers, h1..h4
    # and i1..i5 as strings, unset ones left out); None on plain WireGuard. Not secrets: every
    # client config carries them (the AWG3 header protection key is one, and is not here).
    awg: tuple[tuple[str, int | str], ...] | None = None


def parse_dump(data: bytes | str, interface: str | None = None) -> tuple[Interface, ...]:
    """Parse `show all dump` output, or `show IFACE dump` output when `interface` is given.

    Interfaces come back in the tool's order; a repeated interface (docs/FORMAT.md) is
    merged into its first block, and a peer key repeated on one interface keeps its
    first line.
    """
    lines = _lines(data)
    if not lines:
        return ()
    if interface is not None:
        _check_name(interface, 0)
        return _parse_one(lines, interface)
    return _parse_all(lines, {}).interfaces


# What DumpParser asks its owner for an interface whose dumps come in a new order each time:
# the rank of each key it wants the peers kept in (lower first). Keys without one come after
# those with one, in key order.
Ranks = Callable[[str], Mapping[str, int]]


class DumpParser:
    """parse_dump for consecutive `show all dump` outputs of one server, with the same
    interfaces and peers, and with `Interface.changed` filled in.

    Between two samples most lines are unchanged, and a moving peer's line differs only in
    its handshake and counters. So the parser keeps the last dump's layout (its lines,
    interface blocks and the Peer on each line) and tries, in turn:

    1. as many lines under the same headers, compared position by position with the last
       dump's; only the lines that differ are re-read, and of those only the fields that
       differ. The kernel lists peers in a stable order, so its dumps take this path as they
       come. wireguard-go and amneziawg-go list them in Go's map order, new on every dump:
       once the parser has seen the order change, it puts each interface's lines back where
       the same keys stood in its last dump before comparing ("placing" them);
    2. the full path, which still reuses the Peer of every line it saw last time.

    An unchanged line gives back the very same Peer object on every path. Each interface's
    peers come in the dump's order until the order was seen to change; from then on in an
    order of the parser's owner (`ranks`: awgd.books gives the order its books were made in,
    which is also the ledger's id order), kept from dump to dump. The order of peers carries
    no meaning, and keeping the books' own lets every sample visit peers, books and ledger
    rows alike, front to back (tests/bench/NOTES.md).

    Kept between samples: the peer lines, which carry preshared keys, in this object only,
    as the tool's output itself is. Header lines, which carry the private key, are not kept.
    """

    def __init__(self, ranks: Ranks | None = None) -> None:
        self._last = _Layout((), [], [], True)
        self._ranks: Ranks = ranks or (lambda interface: {})

    def parse(self, data: bytes | str, interface: str | None = None) -> tuple[Interface, ...]:
        if interface is not None:
            return parse_dump(data, interface)
        text = _decode(data)
        lines = _lines(text)
        last = self._last
        ascii_text = text.isascii()
        reordered = last.reordered
        layout = None
        if reordered:
            placed = _placed(lines, last)
            if placed is not None:
                layout = _reread(placed, last, ascii_text)
        else:
            layout = _reread(lines, last, ascii_text)
            reordered = layout is None and _reordered(lines, last)
        if layout is None:
            ranks = cache(self._ranks)  # asked once per interface, by both below
            layout = _parse_all(lines, last.memo(), ranks)  # a failed parse raises and keeps the old layout
            if reordered:
                layout = layout.ordered(ranks, afresh=not last.reordered)
            layout.interfaces = _with_changes(layout.interfaces, last.interfaces)
        self._last = layout
        return layout.interfaces


# What a header line is remembered as: no line of a dump split on newlines can equal it.
_HEADER = "\n"


class _Layout:
    """A parsed `show all dump`: its interfaces, and where each came from."""

    __slots__ = ("_at", "_positions", "heads", "interfaces", "lines", "reordered", "simple")

    def __init__(
        self,
        interfaces: tuple[Interface, ...],
        lines: list[str],
        heads: list[int],
        simple: bool,
        *,
        reordered: bool = False,
        at: list[Peer | None] | None = None,
        positions: list[list[int] | None] | None = None,
    ) -> None:
        self.interfaces = interfaces
        self.lines = lines  # header lines replaced by _HEADER
        self.heads = heads  # index of each interface's header line, in interface order
        # Each interface printed once and no key repeated: interface k's peers are exactly
        # the lines between heads[k] and the next header, in order.
        self.simple = simple
        # The dumps come in a new order each time: each interface's lines are kept in the
        # order chosen when that was seen (DumpParser), and each dump is placed in it.
        self.reordered = reordered
        self._at = at  # when not simple: the Peer each line printed (None: a header)
        # Per interface, Layout.sorted_positions (made when first needed, and handed on to the
        # next layout while the keys and their order stay).
        self._positions: list[list[int] | None] = positions or [None for _ in interfaces]

    def memo(self) -> dict[str, Peer]:
        """Each peer line's Peer, by the line's text (for the full path)."""
        if not self.simple:
            at = self._at or []
            return {line: peer for line, peer in zip(self.lines, at, strict=True) if peer is not None}
        memo: dict[str, Peer] = {}
        for block, iface in enumerate(self.interfaces):
            first = self.heads[block] + 1
            memo.update(zip(self.lines[first : first + len(iface.peers)], iface.peers, strict=True))
        return memo

    def sorted_positions(self, block: int) -> list[int] | None:
        """For each of interface `block`'s peers, in order, its key's index among its keys
        sorted; None when they are in key order (a simple layout's)."""
        found = self._positions[block]
        if found is None:
            keys = list(map(itemgetter(0), self.interfaces[block].peers))
            by_key = sorted(range(len(keys)), key=keys.__getitem__)
            inverse = sorted(range(len(keys)), key=by_key.__getitem__)
            # [] when already in key order: nothing to rearrange.
            found = self._positions[block] = [] if by_key == inverse else inverse
        return found or None

    def handed_on(self) -> list[list[int] | None]:
        return self._positions

    def ordered(self, ranks: Ranks, *, afresh: bool) -> _Layout:
        """This layout with each interface's peers (and lines) in the order `ranks` gives,
        marked reordered; itself when it cannot be (not simple). `afresh`: every Peer made
        anew in that order, so that the strings and tuples the samples to come go through
        sit in memory in the order they go through them."""
        if not self.simple:
            return self
        lines = list(self.lines)
        interfaces = []
        for block, iface in enumerate(self.interfaces):
            first = self.heads[block] + 1
            rank = ranks(iface.name)
            unranked = len(rank)
            peers = iface.peers
            order = sorted(range(len(peers)), key=lambda i: (rank.get(peers[i][0], unranked), peers[i][0]))
            # Joined and split again: the strings then sit in memory in this order too.
            placed = "\n".join([lines[first + i] for i in order]).split("\n") if peers else []
            lines[first : first + len(peers)] = placed
            if afresh:  # each line was read just now (valid), and with the owner's key strings
                prefix = len(iface.name) + 1
                ordered = tuple(
                    tuple.__new__(Peer, (peers[i][0], *_parse_peer(line[prefix:], 0)[1:]))
                    for i, line in zip(order, placed, strict=True)
                )
            else:
                ordered = tuple(peers[i] for i in order)
            interfaces.append(replace(iface, peers=ordered))
        return _Layout(tuple(interfaces), lines, self.heads, True, reordered=True)


def _placed(lines: list[str], last: _Layout) -> list[str] | None:
    """This dump's lines, each interface's peer lines put where the same key stood in the last
    dump (a reordered one), or None when it has another count of lines.

    Each interface's lines are sorted (a C-level sort of whole lines, which orders them by
    key) and then taken in the last dump's order of its keys' sorted positions. With the same
    keys under the same headers, each line lands where its key stood; with other keys (or a
    key twice) some line lands where another key stood, which the positional path's check of
    every differing line's key sends to the full path. An unchanged line landing where the
    same text stood is the same key's."""
    if not last.simple or len(lines) != len(last.lines):
        return None
    placed = list(lines)
    heads = last.heads
    for block, (head, end) in enumerate(zip(heads, [*heads[1:], len(lines)], strict=True)):
        if end - head <= 1:
            continue
        ordered = sorted(lines[head + 1 : end])
        ranks = last.sorted_positions(block)
        if ranks is not None:
            ordered = list(map(ordered.__getitem__, ranks))
        # Joined and split again, so that they sit in memory in the order they are compared.
        placed[head + 1 : end] = "\n".join(ordered).split("\n")
    return placed


def _reordered(lines: list[str], last: _Layout) -> bool:
    """Whether the first line that differs from the last dump's, under the same interface as
    then, is another key's: the order changed, or keys did."""
    if not last.simple or len(lines) != len(last.lines) or not last.heads:
        return False
    old_lines, heads = last.lines, last.heads
    for index in compress(count(), map(ne, lines, old_lines)):
        block = bisect_right(heads, index) - 1
        if block < 0 or heads[block] == index:
            continue
        prefix = len(last.interfaces[block].name) + 1
        return lines[index][prefix : prefix + 44] != old_lines[index][prefix : prefix + 44]
    return False


def _lines(data: bytes | str) -> list[str]:
    text = data if isinstance(data, str) else _decode(data)
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DumpError(data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8") from None


def _check_name(name: str, line_no: int) -> None:
    if interface_name_problem(name) is not None:
        raise DumpError(line_no, "invalid interface name")


class _FullPath(Exception):
    """The fast path cannot vouch for this dump."""


def _same_headers(lines: list[str], last: _Layout) -> bool:
    """Every interface's header line where it was, for the same interface, with the same fields."""
    for block, head in enumerate(last.heads):
        iface = last.interfaces[block]
        name, _, rest = lines[head].partition("\t")
        if name != iface.name:
            return False
        try:
            fields = _parse_interface_fields(rest.split("\t"), head + 1)
        except DumpError:
            return False
        if fields != (iface.public_key, iface.listen_port, iface.fwmark, iface.format, iface.awg):
            return False
    return True


def _reread(lines: list[str], last: _Layout, ascii_text: bool) -> _Layout | None:
    """Path 1: `last` with only the lines that differ re-read, or None. `lines` is changed
    (headers replaced by _HEADER) only when a layout is returned."""
    if not last.simple or len(lines) != len(last.lines):
        return None
    old_lines, heads, interfaces = last.lines, last.heads, last.interfaces
    # Positions whose text differs; every header differs from its _HEADER placeholder.
    differing = compress(count(), map(ne, lines, old_lines))
    updated = list(interfaces)
    changes: list[list[Peer]] = [[] for _ in interfaces]
    bounds = [*heads[1:], len(lines)]
    block, head, end, prefix, first = -1, -1, -1, 0, 0
    before: tuple[Peer, ...] = ()
    peers: list[Peer] = []
    note = changes[0].append if changes else None
    try:
        for index in differing:
            if index >= end:  # the first differing line of a later interface
                if peers:
                    updated[block] = replace(interfaces[block], peers=tuple(peers))
                while index >= end:
                    block += 1
                    head, end = heads[block], bounds[block]
                before, peers, note = interfaces[block].peers, [], changes[block].append
                prefix, first = len(interfaces[block].name) + 1, head + 1
            if index == head:
                continue  # headers are compared below, once
            at = index - first
            old, line, old_line = before[at], lines[index], old_lines[index]
            # Once per moving peer (50,000 times a sample on a busy server), so written out here
            # and for speed: when the name, keys, endpoint, allowed IPs and keepalive are the
            # old line's text (which was read in full once), only the handshake and counters
            # are read, by str methods that accept exactly what the full path's regular
            # expressions accept (tests/test_incremental.py checks both paths against each
            # other). Anything else is read in full. Unpacking raises ValueError unless there
            # are at least 4 TABs.
            start, handshake, rx, tx, keepalive = line.rsplit("\t", 4)
            cut = len(start)
            if (
                old_line.startswith(start)
                and old_line[cut] == "\t"
                and old_line.count("\t", cut) == 4
                # "off" (nearly every server peer) by the old Peer, cheaper than by its text
                and (old[6] is None if keepalive == "off" else old_line.endswith("\t" + keepalive))
            ):
                # Handshake and counters must be what _U64 accepts, 1 to 20 ASCII digits:
                # isdigit() alone also takes digits such as "²", and int() takes " 1", "+1" and
                # "1_0"; an empty field makes int() raise ValueError. Up to 18 digits cannot
                # exceed COUNTER_MAX.
                if not (rx.isdigit() and tx.isdigit()) or (not ascii_text and not (rx + tx).isascii()):
                    raise _FullPath
                if old_line.startswith(handshake, cut + 1) and old_line[cut + 1 + len(handshake)] == "\t":
                    handshake_ = old[3]  # often: WireGuard handshakes every two minutes
                elif handshake.isdigit() and (ascii_text or handshake.isascii()):
                    handshake_ = int(handshake)
                else:
                    raise _FullPath
                rx_, tx_ = int(rx), int(tx)
                if len(rx) > 18 or len(tx) > 18 or len(handshake) > 18:
                    too_long = len(rx) > 20 or len(tx) > 20 or len(handshake) > 20
                    if too_long or max(rx_, tx_, handshake_) > COUNTER_MAX:
                        raise _FullPath
                peer = tuple.__new__(Peer, (old[0], old[1], old[2], handshake_, rx_, tx_, old[6]))
            else:
                if line.count("\t") != PEER_FIELDS or not line.startswith(old_line[:prefix]):
                    raise _FullPath
                peer = _parse_peer(line[prefix:], 0)
                if peer[0] != old[0]:
                    raise _FullPath  # another key here: the order or the keys changed
            if not peers:
                peers = list(before)
            peers[at] = peer
            note(peer)  # type: ignore[misc]
    except (_FullPath, DumpError, ValueError, IndexError):
        return None  # and the next path decides, naming the first bad line if there is one
    if peers:
        updated[block] = replace(interfaces[block], peers=tuple(peers))
    if not _same_headers(lines, last):
        return None
    for index in heads:
        lines[index] = _HEADER
    return _Layout(
        _changed_as(updated, changes), lines, heads, True, reordered=last.reordered, positions=last.handed_on()
    )


def _changed_as(interfaces: list[Interface], changes: list[list[Peer]]) -> tuple[Interface, ...]:
    return tuple(replace(iface, changed=tuple(changed)) for iface, changed in zip(interfaces, changes, strict=True))


def _with_changes(interfaces: tuple[Interface, ...], before: tuple[Interface, ...]) -> tuple[Interface, ...]:
    """The full path's `changed`: per interface listing the same keys as in `before`, the peers
    that are not the very Peer of their key there."""
    old = {iface.name: iface for iface in before}
    result = []
    for iface in interfaces:
        previous = old.get(iface.name)
        changed: tuple[Peer, ...] | None = None
        if previous is not None and len(previous.peers) == len(iface.peers):
            by_key = dict(zip(map(itemgetter(0), previous.peers), previous.peers, strict=True))
            if by_key.keys() == set(map(itemgetter(0), iface.peers)):
                changed = tuple(peer for peer in iface.peers if by_key[peer[0]] is not peer)
        result.append(replace(iface, changed=changed))
    return tuple(result)


class _Block:
    __slots__ = ("head", "own", "peers")

    def __init__(self, head: _Head) -> None:
        self.head = head
        self.peers: dict[str, Peer] = {}
        self.own: dict[str, str] | None = None  # the owner's key strings (made when needed)


def _parse_all(lines: list[str], memo: Mapping[str, Peer], ranks: Ranks | None = None) -> _Layout:
    """The full path. `memo` maps peer lines of the last dump to their Peers; `ranks` gives
    the keys the owner knows, whose very strings a new Peer then carries (a look-up by key
    finds an identical string at once)."""
    blocks: dict[str, _Block] = {}
    at: list[Peer | None] = [None] * len(lines)
    heads: list[int] = []
    current: str | None = None
    block: _Block | None = None
    for index, line in enumerate(lines):
        name, sep, rest = line.partition("\t")
        if name == current:
            # A peer line printed the same in the last dump: it was valid then, in an
            # interface of this name, so it needs no check at all.
            known = memo.get(line)
            if known is not None:
                at[index] = known
                block.peers.setdefault(known.public_key, known)  # type: ignore[union-attr]
                continue
        line_no = index + 1
        if not sep:
            raise DumpError(line_no, "no TAB-separated fields" if line else "empty line")
        if name != current or rest.count("\t") != PEER_FIELDS - 1:
            if name != current:
                _check_name(name, line_no)
            head = _parse_interface_fields(rest.split("\t"), line_no)
            current = name
            block = blocks.get(name)
            if block is None:
                block = blocks[name] = _Block(head)
            heads.append(index)
            lines[index] = _HEADER
            continue
        assert block is not None
        peer = _parse_peer(rest, line_no)
        if ranks is not None:
            if block.own is None:
                owner_keys = ranks(current)
                block.own = dict(zip(owner_keys, owner_keys, strict=True))
            own = block.own.get(peer[0])
            if own is not None:
                peer = tuple.__new__(Peer, (own, *peer[1:]))
        at[index] = peer
        block.peers.setdefault(peer.public_key, peer)
    interfaces = tuple(_interface(name, block) for name, block in blocks.items())
    # Simple unless an interface or a key was repeated (even on identical lines).
    simple = len(blocks) == len(heads) and sum(len(i.peers) for i in interfaces) == len(lines) - len(heads)
    return _Layout(interfaces, lines, heads, simple, at=None if simple else at)


def _parse_one(lines: list[str], name: str) -> tuple[Interface, ...]:
    block = _Block(_parse_interface_fields(lines[0].split("\t"), 1))
    for index in range(1, len(lines)):
        line = lines[index]
        if line.count("\t") != PEER_FIELDS - 1:
            raise DumpError(index + 1, f"peer line has {line.count(chr(9)) + 1} fields, expected {PEER_FIELDS}")
        peer = _parse_peer(line, index + 1)
        block.peers.setdefault(peer.public_key, peer)
    return (_interface(name, block),)


def _interface(name: str, block: _Block) -> Interface:
    public_key, port, fwmark, fmt, awg = block.head
    return Interface(name, public_key, port, fwmark, fmt, tuple(block.peers.values()), awg=awg)


AwgParams = tuple[tuple[str, int | str], ...]
_Head = tuple[str | None, int, int | None, str, AwgParams | None]
_H = ("h1", "h2", "h3", "h4")
_I = ("i1", "i2", "i3", "i4", "i5")
# The obfuscation parameters' names, in the order each format prints them after the port
# (docs/FORMAT.md); AWG3's header protection key and what follows it are not among them.
AWG_PARAMS = {
    "awg1": ("jc", "jmin", "jmax", "s1", "s2", *_H),
    "awg1.5": ("jc", "jmin", "jmax", "s1", "s2", *_H, *_I),
    "awg2": ("jc", "jmin", "jmax", "s1", "s2", "s3", "s4", *_H, *_I),
    "awg3.0": ("jc", "jmin", "jmax", "s1", "s2", "s3", "s4", *_H, *_I),
    "awg3.1": ("jc", "jmin", "jmax", "s1", "s2", "s3", "s4", *_H, *_I),
}
_NUMERIC_PARAMS = frozenset(("jc", "jmin", "jmax", "s1", "s2", "s3", "s4"))
# A parameter string longer than this is not shown (an I1 packet is a few hundred bytes).
MAX_AWG_PARAM_CHARS = 4096


def _awg_params(fields: list[str], fmt: str) -> AwgParams | None:
    names = AWG_PARAMS.get(fmt)
    if names is None:
        return None
    found: list[tuple[str, int | str]] = []
    for name, value in zip(names, fields[3 : 3 + len(names)], strict=True):
        if name in _NUMERIC_PARAMS:
            if value.isdigit() and len(value) <= 10:
                found.append((name, int(value)))
        elif value not in ("(null)", "") and len(value) <= MAX_AWG_PARAM_CHARS and value.isprintable():
            found.append((name, value))
    return tuple(found)


def _parse_interface_fields(fields: list[str], line_no: int) -> _Head:
    count = len(fields)
    if count < MIN_INTERFACE_FIELDS:
        raise DumpError(line_no, f"interface line has {count} fields, expected at least {MIN_INTERFACE_FIELDS}")
    private_key, public_key, port, fwmark = fields[0], fields[1], fields[2], fields[-1]
    if private_key != "(none)" and not _KEY_RE.fullmatch(private_key):
        raise DumpError(line_no, "interface private key is not a base64 key")
    if public_key != "(none)" and not _KEY_RE.fullmatch(public_key):
        raise DumpError(line_no, "interface public key is not a base64 key")
    if not _PORT_RE.fullmatch(port):
        raise DumpError(line_no, "listen port is not a port number")
    if not _FWMARK_RE.fullmatch(fwmark):
        raise DumpError(line_no, "fwmark is neither 'off' nor hexadecimal")
    fmt = FORMATS_BY_FIELD_COUNT.get(count, "unknown")
    return (
        None if public_key == "(none)" else public_key,
        int(port),
        None if fwmark == "off" else int(fwmark, 16),
        fmt,
        _awg_params(fields, fmt),
    )


def _parse_peer(text: str, line_no: int) -> Peer:
    match = _PEER_RE.fullmatch(text)
    if match is None:
        raise DumpError(line_no, _peer_fault(text.split("\t")))
    rx = int(match["rx"])
    tx = int(match["tx"])
    handshake = int(match["hs"])
    if rx > COUNTER_MAX or tx > COUNTER_MAX or handshake > COUNTER_MAX:
        raise DumpError(line_no, "counter exceeds 2**63 - 1")
    v6 = match["v6"]
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            raise DumpError(line_no, "endpoint is not a valid IPv6 address") from None
    endpoint = match["ep"]
    ips = match["ips"]
    keepalive = match["ka"]
    return Peer(
        public_key=match["pub"],
        endpoint=None if endpoint == "(none)" else endpoint,
        allowed_ips=() if ips == "(none)" else tuple(ips.split(",")),
        latest_handshake=handshake,
        rx_bytes=rx,
        tx_bytes=tx,
        keepalive=None if keepalive == "off" else _keepalive(keepalive, line_no),
    )


def _keepalive(text: str, line_no: int) -> tuple[int, int] | None:
    try:
        return keepalive_range(text)
    except ValueError:
        raise DumpError(line_no, "keepalive range is reversed") from None


def keepalive_range(text: str) -> tuple[int, int] | None:
    """ "N" or "N-M" (digits already checked) as (min, max); None for 0 (off)."""
    low, _, high = text.partition("-")
    first, last = int(low), int(high or low)
    if first > last:
        raise ValueError("keepalive range is reversed")
    return None if last == 0 else (first, last)


# Field checks in line order, used only to name the fault once the fast regex has failed.
_PEER_FIELD_CHECKS = (
    ("public key is not a base64 key", re.compile(_KEY, re.ASCII)),
    ("preshared key is neither a base64 key nor (none)", re.compile(rf"{_KEY}|\(none\)", re.ASCII)),
    ("endpoint is not ADDRESS:PORT or (none)", re.compile(rf"\(none\)|{_ENDPOINT}", re.ASCII)),
    ("allowed IPs are not a CIDR list or (none)", re.compile(rf"\(none\)|{_CIDR}(?:,{_CIDR})*", re.ASCII)),
    ("latest handshake is not a decimal number", re.compile(_U64, re.ASCII)),
    ("rx counter is not a decimal number", re.compile(_U64, re.ASCII)),
    ("tx counter is not a decimal number", re.compile(_U64, re.ASCII)),
    ("keepalive is not 'off', N or N-M", re.compile(_KEEPALIVE, re.ASCII)),
)


def _peer_fault(fields: list[str]) -> str:
    if len(fields) != PEER_FIELDS:
        return f"peer line has {len(fields)} fields, expected {PEER_FIELDS}"
    for (reason, pattern), text in zip(_PEER_FIELD_CHECKS, fields, strict=True):
        if not pattern.fullmatch(text):
            return reason
    return "malformed peer line"
