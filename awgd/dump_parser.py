"""Parse `awg|wg show all dump` and `show IFACE dump` output into plain immutable data.

Pure: text in, data out. The rules are those of shared/dumps/FORMAT.md section 7:
lines split on TAB only, the first line of each interface is its interface line
whatever its length, peer lines have exactly 9 fields (8 without the interface
name) and are validated strictly.

Secrets: the interface private key, the AmneziaWG header-protection key and every
peer's preshared key are read past and dropped here; no type below has a field
for them, and no error message quotes a line's content.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from itertools import compress, count
from operator import ne
from typing import NamedTuple

# WireGuard prints u64 counters, but SQLite integers are signed 64-bit; 2**63 bytes is
# 8 EiB, which no peer reaches, so a larger value is treated as garbage.
COUNTER_MAX = 2**63 - 1
# IFNAMSIZ is 16 bytes including the NUL terminator.
IFNAME_MAX = 15

# Interface-line field counts, without the interface-name field, by format (FORMAT.md §2).
# An unknown count is still accepted (first three fields from the left, fwmark from the
# right, FORMAT.md §7.4): newer AmneziaWG releases add fields.
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

_KEY = r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
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
_NAME_RE = re.compile(r"[^\x00-\x20\x7f/:]{1,15}")
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


def parse_dump(data: bytes | str, interface: str | None = None) -> tuple[Interface, ...]:
    """Parse `show all dump` output, or `show IFACE dump` output when `interface` is given.

    Interfaces come back in the tool's order; a repeated interface (FORMAT.md §7.11) is
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


class DumpParser:
    """parse_dump for consecutive `show all dump` outputs of one server. Same results.

    Between two samples most lines are unchanged, and a moving peer's line differs only in
    its handshake and counters. So the parser keeps the previous dump's layout (its lines,
    interface blocks and the Peer at each position), and when a new dump has as many lines
    under the same interface headers, it reads only the lines that differ, and of those
    only the fields that differ. Anything else (a peer added, removed or re-keyed, a header
    changed, a repeated interface or key, an error) takes the full path, which still reuses
    the Peer of every line it saw last time wherever it moved. Either way an unchanged line
    gives back the very same Peer object, so the accounting and the state can skip it by
    identity (awgd.peer_changes).

    Kept between samples: the peer lines, which carry preshared keys, in this object only,
    as the tool's output itself is. Header lines, which carry the private key, are not kept.
    """

    def __init__(self) -> None:
        self._last = _Layout((), [], None, [], True)

    def parse(self, data: bytes | str, interface: str | None = None) -> tuple[Interface, ...]:
        if interface is not None:
            return parse_dump(data, interface)
        text = _decode(data)
        lines = _lines(text)
        layout = _reread(lines, self._last, text.isascii())
        if layout is None:
            memo = dict(zip(self._last.lines, self._last.peer_at(), strict=True))
            layout = _parse_all(lines, memo)  # a failed parse raises and keeps the old layout
        self._last = layout
        return layout.interfaces


# What a header line is remembered as: no line of a dump split on newlines can equal it.
_HEADER = "\n"


class _Layout:
    """A parsed `show all dump`: its interfaces, and where each came from."""

    __slots__ = ("_at", "heads", "interfaces", "lines", "simple")

    def __init__(
        self,
        interfaces: tuple[Interface, ...],
        lines: list[str],
        at: list[Peer | None] | None,
        heads: list[int],
        simple: bool,
    ) -> None:
        self.interfaces = interfaces
        self.lines = lines  # header lines replaced by _HEADER
        self._at = at  # the Peer each line printed (None: a header); None when simple
        self.heads = heads  # index of each interface's header line, in interface order
        # Each interface printed once and no key repeated: interface k's peers are exactly
        # the lines between heads[k] and the next header, in order.
        self.simple = simple

    def peer_at(self) -> list[Peer | None]:
        """The Peer each line printed; None for headers."""
        if self._at is not None:
            return self._at
        at: list[Peer | None] = []
        for iface in self.interfaces:
            at.append(None)
            at.extend(iface.peers)
        return at


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
    if not _NAME_RE.fullmatch(name):
        raise DumpError(line_no, "invalid interface name")


class _FullPath(Exception):
    """The fast path cannot vouch for this dump."""


def _reread(lines: list[str], last: _Layout, ascii_text: bool) -> _Layout | None:
    """The fast path: `last` with only the differing lines re-read, or None to parse in full.

    This loop runs once per moving peer (50,000 times a sample on a busy server), so it is
    written for speed: no calls it can avoid, and validation by str methods that give
    exactly what the regular expressions of the full path accept (checked by
    tests/test_incremental.py against parse_dump over random histories).
    """
    if not last.simple or len(lines) != len(last.lines):
        return None
    old_lines, heads, interfaces = last.lines, last.heads, last.interfaces
    # Positions whose text differs; every header differs from its _HEADER placeholder.
    differing = compress(count(), map(ne, lines, old_lines))
    updated = list(interfaces)
    bounds = [*heads[1:], len(lines)]
    block, head, end = -1, -1, -1
    before: tuple[Peer, ...] = ()
    peers: list[Peer] = []
    new_peer = tuple.__new__
    try:
        for index in differing:
            if index >= end:  # the first differing line of a later interface
                if peers:
                    updated[block] = replace(interfaces[block], peers=tuple(peers))
                while index >= end:
                    block += 1
                    head, end = heads[block], bounds[block]
                before, peers = interfaces[block].peers, []
            line = lines[index]
            if index == head:
                iface = interfaces[block]
                name, _, rest = line.partition("\t")
                fields = _parse_interface_fields(rest.split("\t"), index + 1)
                if name != iface.name or fields != (iface.public_key, iface.listen_port, iface.fwmark, iface.format):
                    raise _FullPath
                continue
            offset = index - head - 1
            old = before[offset]
            # Unpacking raises ValueError unless there are 5 parts: at least 4 TABs.
            start, handshake, rx, tx, keepalive = line.rsplit("\t", 4)
            was_start, was_handshake, _, _, was_keepalive = old_lines[index].rsplit("\t", 4)
            if start == was_start and keepalive == was_keepalive:
                # Same name, key, endpoint, allowed IPs and keepalive: only handshake and
                # counters moved. They must be what _U64 accepts, 1 to 20 ASCII digits:
                # isdigit() alone also takes digits such as "²", and int() takes " 1",
                # "+1" and "1_0"; an empty field makes int() raise ValueError. Up to 18
                # digits cannot exceed COUNTER_MAX.
                if not (rx.isdigit() and tx.isdigit()) or (not ascii_text and not (rx + tx).isascii()):
                    raise _FullPath
                if handshake == was_handshake:  # often: WireGuard handshakes every two minutes
                    handshake_ = old[3]
                elif handshake.isdigit() and (ascii_text or handshake.isascii()):
                    handshake_ = int(handshake)
                else:
                    raise _FullPath
                rx_, tx_ = int(rx), int(tx)
                if len(rx) > 18 or len(tx) > 18 or len(handshake) > 18:
                    too_long = len(rx) > 20 or len(tx) > 20 or len(handshake) > 20
                    if too_long or max(rx_, tx_, handshake_) > COUNTER_MAX:
                        raise _FullPath
                peer = new_peer(Peer, (old[0], old[1], old[2], handshake_, rx_, tx_, old[6]))
            else:
                prefix = interfaces[block].name + "\t"
                if not line.startswith(prefix) or line.count("\t") != PEER_FIELDS:
                    raise _FullPath
                peer = _parse_peer(line[len(prefix) :], index + 1)
                if peer.public_key != old.public_key:
                    raise _FullPath  # the full path decides what a repeated key means
            if not peers:
                peers = list(before)
            peers[offset] = peer
    except (_FullPath, DumpError, ValueError):
        return None  # and the full path names the first bad line, if there is one
    if peers:
        updated[block] = replace(interfaces[block], peers=tuple(peers))
    for index in heads:
        lines[index] = _HEADER
    return _Layout(tuple(updated), lines, None, heads, True)


class _Block:
    __slots__ = ("head", "peers")

    def __init__(self, head: tuple[str | None, int, int | None, str]) -> None:
        self.head = head
        self.peers: dict[str, Peer] = {}


def _parse_all(lines: list[str], memo: dict[str, Peer | None]) -> _Layout:
    """The full path. `memo` maps lines of the last dump to their Peers (None: a header)."""
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
        peer = at[index] = _parse_peer(rest, line_no)
        block.peers.setdefault(peer.public_key, peer)
    interfaces = tuple(_interface(name, block) for name, block in blocks.items())
    # Simple unless an interface or a key was repeated (even on identical lines).
    simple = len(blocks) == len(heads) and sum(len(i.peers) for i in interfaces) == len(lines) - len(heads)
    return _Layout(interfaces, lines, None if simple else at, heads, simple)


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
    public_key, port, fwmark, fmt = block.head
    return Interface(name, public_key, port, fwmark, fmt, tuple(block.peers.values()))


def _parse_interface_fields(fields: list[str], line_no: int) -> tuple[str | None, int, int | None, str]:
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
    return (
        None if public_key == "(none)" else public_key,
        int(port),
        None if fwmark == "off" else int(fwmark, 16),
        FORMATS_BY_FIELD_COUNT.get(count, "unknown"),
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
    low, _, high = text.partition("-")
    first, last = int(low), int(high or low)
    if first > last:
        raise DumpError(line_no, "keepalive range is reversed")
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
    for (reason, pattern), field in zip(_PEER_FIELD_CHECKS, fields, strict=True):
        if not pattern.fullmatch(field):
            return reason
    return "malformed peer line"
