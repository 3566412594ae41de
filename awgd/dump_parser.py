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
from dataclasses import dataclass
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
    return _parse(data, interface, {}, None)


class DumpParser:
    """parse_dump that remembers the previous dump's peer lines.

    Between two samples most peers print the very same line (no traffic, no new
    handshake); such a line was fully validated last time, so its Peer is reused instead of
    being checked again. The memo holds only the last successful dump's lines.
    """

    def __init__(self) -> None:
        self._memo: dict[str, Peer] = {}

    def parse(self, data: bytes | str, interface: str | None = None) -> tuple[Interface, ...]:
        seen: dict[str, Peer] = {}
        interfaces = _parse(data, interface, self._memo, seen)
        self._memo = seen  # a failed parse raised above and keeps the old memo
        return interfaces


def _parse(
    data: bytes | str, interface: str | None, memo: dict[str, Peer], seen: dict[str, Peer] | None
) -> tuple[Interface, ...]:
    text = _decode(data)
    if not text:
        return ()
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if interface is not None:
        _check_name(interface, 0)
        return _parse_one(lines, interface, memo, seen)
    return _parse_all(lines, memo, seen)


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


class _Block:
    __slots__ = ("head", "peers")

    def __init__(self, head: tuple[str | None, int, int | None, str]) -> None:
        self.head = head
        self.peers: dict[str, Peer] = {}


def _parse_all(lines: list[str], memo: dict[str, Peer], seen: dict[str, Peer] | None) -> tuple[Interface, ...]:
    blocks: dict[str, _Block] = {}
    current: str | None = None
    block: _Block | None = None
    for index, line in enumerate(lines):
        name, sep, rest = line.partition("\t")
        if name == current:
            # Fast path: a peer line printed unchanged in the last dump (only valid peer lines
            # are remembered, so it needs no check at all).
            known = memo.get(rest)
            if known is not None:
                if seen is not None:
                    seen[rest] = known
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
            continue
        assert block is not None
        peer = _parse_peer(rest, line_no)
        if seen is not None:
            seen[rest] = peer
        block.peers.setdefault(peer.public_key, peer)
    return tuple(_interface(name, block) for name, block in blocks.items())


def _parse_one(
    lines: list[str], name: str, memo: dict[str, Peer], seen: dict[str, Peer] | None
) -> tuple[Interface, ...]:
    block = _Block(_parse_interface_fields(lines[0].split("\t"), 1))
    for index in range(1, len(lines)):
        line = lines[index]
        if line.count("\t") != PEER_FIELDS - 1:
            raise DumpError(index + 1, f"peer line has {line.count(chr(9)) + 1} fields, expected {PEER_FIELDS}")
        peer = memo.get(line) or _parse_peer(line, index + 1)
        if seen is not None:
            seen[line] = peer
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
