"""Parse what a userspace WireGuard answers `get=1` on its control socket (the UAPI), into
the same Interface and Peer as the dump parser. Pure: text in, data out.

The format is WireGuard's cross-platform configuration protocol (docs/FORMAT.md, "The UAPI
reader"): `key=value` lines, the interface's first, then one group per peer, each starting
with its `public_key=`; keys in hex; `allowed_ip=` once per range. The reader
(awgd.uapi_reader) cuts the final `errno=N` line and the blank line after it.

Secrets: the interface's `private_key` is used once, to derive its public key, and the
AmneziaWG 3 `header_protection_key` and every `preshared_key` are checked and dropped; no
type below has a field for them, and no error message quotes a line's content. What is
kept between samples (`UapiParser`) is each peer's group of lines, with its preshared key,
in that object only (as awgd.dump_parser keeps the dump's peer lines), and a digest of the
interface's lines, never the lines themselves.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from itertools import compress, count
from operator import is_

from awgd.dump_parser import (
    AWG_PARAMS,
    COUNTER_MAX,
    MAX_AWG_PARAM_CHARS,
    Interface,
    Peer,
    Ranks,
    keepalive_range,
)
from awgd.dump_parser import CIDR_PATTERN as _CIDR
from awgd.dump_parser import ENDPOINT_PATTERN as _ENDPOINT
from awgd_client.names import interface_name_problem

# Which data plane the socket belongs to, from the directory it was found in: amneziawg-go
# prints no obfuscation line for a parameter left at zero, and the tool then prints 0, so an
# amneziawg-go interface reads as AmneziaWG (zeros filled in) even with none set.
AMNEZIAWG = "amneziawg"
WIREGUARD = "wireguard"
FLAVORS = (AMNEZIAWG, WIREGUARD)

_HEX_KEY = re.compile(r"[0-9a-f]{64}", re.ASCII)
_U64 = re.compile(r"[0-9]{1,20}", re.ASCII)
_ENDPOINT_RE = re.compile(_ENDPOINT, re.ASCII)
_CIDR_RE = re.compile(_CIDR, re.ASCII)
_KEEPALIVE_RE = re.compile(r"[0-9]{1,10}(?:-[0-9]{1,10})?", re.ASCII)
_NAME_RE = re.compile(r"[a-z0-9_]{1,64}", re.ASCII)
_NUMERIC = frozenset(("jc", "jmin", "jmax", "s1", "s2", "s3", "s4"))
_STRINGS = frozenset(("h1", "h2", "h3", "h4", "i1", "i2", "i3", "i4", "i5"))
# amneziawg-go 3.x prints these two on every interface; 0.2.x (the 2024 release) does not.
_AWG3_MARKS = ("random_trailers", "disable_cookies")
# The interface's own secret lines: checked for shape, then dropped.
_SECRET_HEAD_KEYS = frozenset(("private_key", "header_protection_key"))
_PEER_START = "public_key="
_PEER_SPLIT = "\n" + _PEER_START


class UapiError(ValueError):
    """An answer that cannot be trusted. Names the line and the fault, never the content."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


# An interface's public key, from its private key's 32 bytes (awgd.uapi_reader gives X25519).
Derive = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class _Head:
    public_key: str | None
    listen_port: int
    fwmark: int | None
    format: str
    awg: tuple[tuple[str, int | str], ...] | None


def parse_uapi(name: str, text: str, flavor: str, derive: Derive) -> Interface:
    """One interface's `get=1` answer, without its `errno=` line."""
    if interface_name_problem(name) is not None:
        raise UapiError(0, "invalid interface name")
    head_text, blocks, first_line = _split(text)
    head = _parse_head(head_text, flavor, derive)
    peers: dict[str, Peer] = {}
    for block, line in zip(blocks, _line_numbers(blocks, first_line), strict=True):
        peer = _parse_peer(block, line)
        peers.setdefault(peer[0], peer)
    return _interface(name, head, tuple(peers.values()))


class UapiParser:
    """parse_uapi for consecutive answers of the same interfaces, re-reading only the peers
    whose lines changed, with `Interface.changed` filled in as awgd.dump_parser does.

    amneziawg-go and wireguard-go list peers in Go's map order, new on every answer: each
    peer's group of lines is looked up by its text among the last answer's, and an unchanged
    group gives back the very same Peer. While the keys stay those of the last answer, the
    peers keep the last answer's order, and only the groups that changed are read; when keys
    come or go, the peers are put in the order of the parser's owner (`ranks`, as for
    DumpParser), unknown keys after, by key."""

    def __init__(self, derive: Derive, ranks: Ranks | None = None) -> None:
        self._derive = derive
        self._ranks: Ranks = ranks or (lambda interface: {})
        self._last: dict[str, _Last] = {}

    def forget(self) -> None:
        """Drop what is kept: the next answers are read afresh (another reader read between)."""
        self._last.clear()

    def parse(self, name: str, text: str, flavor: str) -> Interface:
        if interface_name_problem(name) is not None:
            raise UapiError(0, "invalid interface name")
        last = self._last.get(name)
        head_text, blocks, first_line = _split(text)
        digest = hashlib.blake2b(f"{flavor}\n{head_text}".encode(), digest_size=16).digest()
        same_head = last is not None and last.digest == digest
        head = last.head if same_head and last is not None else _parse_head(head_text, flavor, self._derive)
        memo = last.memo if last is not None else {}
        found = list(map(memo.get, blocks))
        fresh = list(compress(count(), map(is_, found, [None] * len(found))))
        # Read first, so that a bad answer raises before anything is kept.
        line_of = _line_numbers(blocks, first_line) if fresh else []
        for at in fresh:
            found[at] = _parse_peer(blocks[at], line_of[at])
        peers: list[Peer] = found  # type: ignore[assignment]
        new_memo = dict(zip(blocks, peers, strict=True))
        iface = None
        if last is not None and len(blocks) == len(last.iface.peers) == len(last.memo) == len(new_memo):
            iface = _same_keys(last, peers, fresh, new_memo)
        if iface is None:
            by_key: dict[str, Peer] = {}
            for peer in peers:
                by_key.setdefault(peer[0], peer)
            rank = self._ranks(name)
            unranked = len(rank)
            ordered = sorted(by_key.values(), key=lambda p: (rank.get(p[0], unranked), p[0]))
            iface = _interface(name, head, tuple(ordered))
        elif last is not None and head is not last.head:
            iface = replace(_interface(name, head, iface.peers), changed=iface.changed)
        # The keys' indexes stay while their order does (the fast path keeps it).
        same_order = last is not None and iface.changed is not None
        positions = last.positions if same_order and last is not None else None
        self._last[name] = _Last(iface, head, digest, new_memo, positions)
        return iface


class _Last:
    __slots__ = ("_positions", "digest", "head", "iface", "memo")

    def __init__(
        self,
        iface: Interface,
        head: _Head,
        digest: bytes,
        memo: dict[str, Peer],
        positions: dict[str, int] | None,
    ) -> None:
        self.iface = iface
        self.head = head
        self.digest = digest
        self.memo = memo  # each peer's lines -> its Peer
        self._positions = positions

    @property
    def positions(self) -> dict[str, int]:
        """Each key's index in iface.peers (made when first needed, kept while they stay)."""
        if self._positions is None:
            self._positions = {peer[0]: at for at, peer in enumerate(self.iface.peers)}
        return self._positions


def _same_keys(last: _Last, peers: list[Peer], fresh: list[int], memo: Mapping[str, Peer]) -> Interface | None:
    """The last interface with the peers read afresh put where their keys stood, or None when
    this answer's keys are not the last one's.

    Both answers have as many groups of lines, each distinct, and the last one had each key
    once. A group found unchanged is its key's group of then, so the keys are the same when
    the keys read afresh are exactly those whose group of then is not in this answer."""
    if not fresh:
        return replace(last.iface, changed=())
    positions = last.positions
    changed = [peers[at] for at in fresh]
    keys = {peer[0] for peer in changed}
    if len(keys) != len(changed) or not keys <= positions.keys():
        return None
    gone = last.memo.keys() - memo.keys()
    if keys != {last.memo[text][0] for text in gone}:
        return None
    updated = list(last.iface.peers)
    for peer in changed:
        updated[positions[peer[0]]] = peer
    return replace(last.iface, peers=tuple(updated), changed=tuple(changed))


def _split(text: str) -> tuple[str, list[str], int]:
    """(the interface's lines, each peer's lines without its `public_key=`, the line number
    of the first peer's)."""
    if text.startswith(_PEER_START):
        head, rest = "", text[len(_PEER_START) :]
    else:
        head, sep, rest = text.partition(_PEER_SPLIT)
        if not sep:
            return head.rstrip("\n"), [], 0
    rest = rest.removesuffix("\n")
    if not rest:
        raise UapiError(head.count("\n") + 2, "peer without a public key")
    return head, rest.split(_PEER_SPLIT), head.count("\n") + 2 if head else 1


def _line_numbers(blocks: list[str], first: int) -> list[int]:
    numbers = []
    line = first
    for block in blocks:
        numbers.append(line)
        line += block.count("\n") + 1
    return numbers


def _pairs(text: str, first_line: int) -> list[tuple[int, str, str]]:
    found = []
    for offset, line in enumerate(text.split("\n") if text else []):
        key, sep, value = line.partition("=")
        if not sep or not _NAME_RE.fullmatch(key):
            raise UapiError(first_line + offset, "not a key=value line")
        found.append((first_line + offset, key, value))
    return found


def _parse_head(text: str, flavor: str, derive: Derive) -> _Head:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}")
    public_key: str | None = None
    port, fwmark = 0, None
    numeric: dict[str, int] = {}
    strings: dict[str, str] = {}
    awg3 = False
    for line, key, value in _pairs(text, 1):
        if key in _SECRET_HEAD_KEYS:
            if not _HEX_KEY.fullmatch(value):
                raise UapiError(line, f"{key.replace('_', ' ')} is not a hex key")
            if key == "private_key":
                public_key = base64.b64encode(derive(bytes.fromhex(value))).decode("ascii")
        elif key == "listen_port":
            if not (value.isdigit() and value.isascii() and len(value) <= 5 and int(value) <= 65535):
                raise UapiError(line, "listen port is not a port number")
            port = int(value)
        elif key == "fwmark":
            if not (value.isdigit() and value.isascii() and len(value) <= 10 and int(value) < 2**32):
                raise UapiError(line, "fwmark is not a 32-bit number")
            fwmark = int(value) or None
        elif key in _NUMERIC:
            if not (value.isdigit() and value.isascii() and len(value) <= 10):
                raise UapiError(line, f"{key} is not a number")
            numeric[key] = int(value)
        elif key in _STRINGS:
            # As the dump parser: an unprintable or overlong value is not shown.
            if value and len(value) <= MAX_AWG_PARAM_CHARS and value.isprintable():
                strings[key] = value
        elif key in _AWG3_MARKS:
            awg3 = True
        elif key in ("public_key", "errno"):
            raise UapiError(line, f"{key} line out of place")
    amnezia = flavor == AMNEZIAWG or bool(numeric) or bool(strings) or awg3
    if not amnezia:
        return _Head(public_key, port, fwmark, "wg", None)
    fmt = _awg_format(numeric, strings, awg3)
    awg: list[tuple[str, int | str]] = []
    for param in AWG_PARAMS[fmt]:
        if param in _NUMERIC:
            awg.append((param, numeric.get(param, 0)))  # the tool prints an unset one as 0
        elif param in strings:
            awg.append((param, strings[param]))
        elif param in ("h1", "h2", "h3", "h4") and not awg3:
            awg.append((param, "0"))  # the 2024 tool prints an unset header as 0
    return _Head(public_key, port, fwmark, fmt, tuple(awg))


def _awg_format(numeric: Mapping[str, int], strings: Mapping[str, str], awg3: bool) -> str:
    """The dump format whose parameters the device has (docs/FORMAT.md)."""
    if awg3:
        return "awg3.1"
    if "s3" in numeric or "s4" in numeric:
        return "awg2"
    if any(name.startswith("i") for name in strings):
        return "awg1.5"
    return "awg1"


def _parse_peer(block: str, first_line: int) -> Peer:
    """One peer's lines, its `public_key=` already cut."""
    hex_key, _, rest = block.partition("\n")
    if not _HEX_KEY.fullmatch(hex_key):
        raise UapiError(first_line, "public key is not a hex key")
    endpoint: str | None = None
    ips: list[str] = []
    handshake = rx = tx = 0
    keepalive: tuple[int, int] | None = None
    seen: set[str] = set()
    for line, key, value in _pairs(rest, first_line + 1):
        if key == "allowed_ip":
            if not _CIDR_RE.fullmatch(value):
                raise UapiError(line, "allowed IP is not a CIDR range")
            ips.append(value)
            continue
        if key in seen:
            raise UapiError(line, f"{key} given twice")
        seen.add(key)
        if key == "preshared_key":
            if not _HEX_KEY.fullmatch(value):
                raise UapiError(line, "preshared key is not a hex key")
        elif key == "endpoint":
            match = _ENDPOINT_RE.fullmatch(value)
            if match is None:
                raise UapiError(line, "endpoint is not ADDRESS:PORT")
            if match["v6"] is not None:
                try:
                    ipaddress.IPv6Address(match["v6"])
                except ValueError:
                    raise UapiError(line, "endpoint is not a valid IPv6 address") from None
            endpoint = value
        elif key in ("last_handshake_time_sec", "rx_bytes", "tx_bytes", "last_handshake_time_nsec"):
            if not _U64.fullmatch(value) or int(value) > COUNTER_MAX:
                raise UapiError(line, f"{key.replace('_', ' ')} is not a counter")
            number = int(value)
            if key == "rx_bytes":
                rx = number
            elif key == "tx_bytes":
                tx = number
            elif key == "last_handshake_time_sec":
                handshake = number
        elif key == "persistent_keepalive_interval":
            if not _KEEPALIVE_RE.fullmatch(value):
                raise UapiError(line, "keepalive is not N or N-M")
            try:
                keepalive = keepalive_range(value)
            except ValueError:
                raise UapiError(line, "keepalive range is reversed") from None
        elif key in ("public_key", "private_key", "errno", "listen_port"):
            raise UapiError(line, f"{key} line out of place")
        # Anything else (protocol_version, lines newer releases add) carries nothing awgd keeps.
    public_key = base64.b64encode(bytes.fromhex(hex_key)).decode("ascii")
    return Peer(public_key, endpoint, tuple(ips), handshake, rx, tx, keepalive)


def _interface(name: str, head: _Head, peers: tuple[Peer, ...]) -> Interface:
    return Interface(name, head.public_key, head.listen_port, head.fwmark, head.format, peers, awg=head.awg)
