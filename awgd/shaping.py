"""Per-peer speed limits as `tc` commands: what an interface must have, and the fewest
commands that get it there from what it has. Pure: awgd.shaper runs them.

The user's download (server to user) is shaped on the tunnel interface's egress; the upload
(user to server) arrives on its ingress, where it is redirected to an IFB device and shaped on
that device's egress. Both sides are the same structure, only the address matched differs
(the destination going out, the source coming in):

- an HTB root qdisc `1:` without a default class: a packet no filter claims (an unlimited
  peer's) is sent at once, untouched;
- one HTB class `1:<slot>` per limited peer and direction, rate = ceil = its limit;
- u32 filters, all at one priority: a peer's host addresses (/32, /128) sit in one of two
  256-bucket hash tables (`2:` IPv4, `3:` IPv6) keyed by the address's last byte, so a packet
  is compared with the few peers in its bucket, not with every limited peer; its other
  prefixes (a routed subnet) are tried in the root table first.

Why u32 and IFB (measured on the kernels awgd runs on): `flower` and the `police` action are
not in every kernel (the test machines' kernels have neither), while u32, HTB, `mirred` and
IFB are in all of them; and shaping an upload queues it where a policer would drop it, which
TCP takes far better.

Every word of every command is made here from checked values (names, numbers, networks):
nothing else reaches tc.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeGuard

from awgd.ip_link import Link

# peer.limit's bounds, kbit/s: below 8 a class cannot pass one full packet a second;
# above 10 Gbit/s no tunnel goes.
MIN_KBIT = 8
MAX_KBIT = 10_000_000
# HTB class minors are 16 bits; 1 is the first slot (0 is the qdisc itself).
MAX_SLOTS = 0xFFFE
# u32 node ids are 12 bits; a bucket holds this many filters.
MAX_NODES = 0xFFF
# The root table's rules for prefixes come first (orders below this); then the two rules that
# send host addresses to their hash tables.
LINK_ORDER = 0xF00
HASH_V4, HASH_V6 = 2, 3
ROOT_TABLE = 0x800
# Where the address is in a packet's network header: (IPv4, IPv6) offsets of destination and
# source, and of the 32-bit word that ends with the last byte (the hash key).
_OFFSETS = {"dst": (16, 24), "src": (12, 8)}
_HASH_WORD = {"dst": (16, 36), "src": (12, 20)}
_DEVICE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def is_kbit(value: object) -> TypeGuard[int]:
    """Whether `value` is a speed limit awgd takes, kbit/s: an integer MIN_KBIT..MAX_KBIT."""
    return isinstance(value, int) and not isinstance(value, bool) and MIN_KBIT <= value <= MAX_KBIT


class ShapingError(ValueError):
    """A value that must not reach tc (a second wall behind the RPC's checks)."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A peer's limit in kbit/s each way; None = not limited that way."""

    down_kbit: int | None = None
    up_kbit: int | None = None

    def __post_init__(self) -> None:
        for value in (self.down_kbit, self.up_kbit):
            if value is not None and not is_kbit(value):
                raise ShapingError(f"a rate limit is {MIN_KBIT} to {MAX_KBIT} kbit/s, not {value!r}")

    @property
    def empty(self) -> bool:
        return self.down_kbit is None and self.up_kbit is None

    def lower(self, other: RateLimit | None) -> RateLimit:
        """The lower limit each way: a throttle and a peer's own limit together."""
        if other is None:
            return self

        def low(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return RateLimit(low(self.down_kbit, other.down_kbit), low(self.up_kbit, other.up_kbit))


def effective(own: RateLimit | None, throttled: int | None) -> RateLimit | None:
    """The limit that applies to a peer: its own, lowered by a throttle plan's (kbit/s both
    ways while its quota is used up); None: not limited."""
    limit = own if throttled is None else RateLimit(throttled, throttled).lower(own)
    return None if limit is None or limit.empty else limit


@dataclass(frozen=True, slots=True)
class Wanted:
    """What one peer must have: its limit, on its own addresses."""

    limit: RateLimit
    networks: tuple[str, ...]  # CIDRs


@dataclass(frozen=True, slots=True)
class Rule:
    """One u32 filter as applied: where it is, so that it can be deleted alone."""

    table: int  # ROOT_TABLE, HASH_V4 or HASH_V6
    bucket: int
    node: int


@dataclass(frozen=True, slots=True)
class Applied:
    slot: int
    wanted: Wanted
    down: tuple[Rule, ...]  # on the interface
    up: tuple[Rule, ...]  # on its IFB


@dataclass(slots=True)
class Side:
    """One device's HTB tree as applied: is it set up, and which nodes each bucket uses."""

    ready: bool = False
    used: dict[tuple[int, int], set[int]] = field(default_factory=dict)

    def take(self, table: int, bucket: int) -> int:
        nodes = self.used.setdefault((table, bucket), set())
        node = next((n for n in range(1, MAX_NODES + 1) if n not in nodes), None)
        if node is None:
            raise ShapingError(f"more than {MAX_NODES} limited addresses in one bucket")
        nodes.add(node)
        return node

    def give(self, rule: Rule) -> None:
        self.used.get((rule.table, rule.bucket), set()).discard(rule.node)


@dataclass(slots=True)
class InterfaceShaping:
    """What awgd applied to one interface. `ifindex` says which incarnation of it: a
    re-created interface has lost everything, and is set up again."""

    device: str
    ifb: str
    ifindex: int | None = None
    peers: dict[str, Applied] = field(default_factory=dict)
    egress: Side = field(default_factory=Side)
    ingress: Side = field(default_factory=Side)
    redirected: bool = False  # the interface's ingress goes to the IFB
    lost: bool = False  # what was applied may be gone or half there: start from nothing

    def gone(self, links: Mapping[str, Link]) -> bool:
        """Whether `ip`'s view of the links says what was applied is gone: the interface's
        root qdisc is no longer HTB (re-created, a container restart in a new namespace with
        the same ifindex), or the IFB is missing or bare."""
        if self.egress.ready:
            link = links.get(self.device)
            if link is None or link.qdisc != "htb":
                return True
        if self.redirected:
            ifb = links.get(self.ifb)
            if ifb is None or (self.ingress.ready and ifb.qdisc != "htb"):
                return True
        return False


def ifb_name(device: str) -> str:
    """The IFB device that shapes `device`'s uploads: a name of at most 15 bytes."""
    return f"ifb{device}"[:15]


def check_device(name: str) -> str:
    if not _DEVICE.fullmatch(name):
        raise ShapingError(f"not a device name tc may be given: {name!r}")
    return name


def network_of(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ShapingError(f"not a network: {text!r}") from None


@dataclass(slots=True)
class Steps:
    """What to run, in this order: `reset` and `ip_before`'s failures are expected (nothing
    to delete, a device left by an earlier run) and ignored; `tc` must succeed whole."""

    reset: list[list[str]] = field(default_factory=list)  # tc commands
    reset_ip: list[list[str]] = field(default_factory=list)  # the IFB left by the old incarnation
    ip_before: list[list[str]] = field(default_factory=list)
    tc: list[list[str]] = field(default_factory=list)
    ip_after: list[list[str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.reset or self.reset_ip or self.ip_before or self.tc or self.ip_after)


def plan(state: InterfaceShaping, ifindex: int | None, wanted: Mapping[str, Wanted]) -> Steps:
    """The commands that make the interface have `wanted` (public key -> limit), and update
    `state` to what they make. A new ifindex (or the first plan after awgd starts) starts
    from nothing: whatever qdiscs the interface and its IFB have are removed first."""
    device, ifb = check_device(state.device), check_device(state.ifb)
    steps = Steps()
    wanted = {key: w for key, w in wanted.items() if not w.limit.empty and w.networks}
    if ifindex != state.ifindex or state.lost:
        if wanted or state.peers or state.lost:
            steps.reset = [
                ["qdisc", "del", "dev", device, "root"],
                ["qdisc", "del", "dev", device, "ingress"],
                ["qdisc", "del", "dev", ifb, "root"],
            ]
            steps.reset_ip = [["link", "delete", ifb]]  # spelled out: busybox's ip takes it too
        fresh = without(state)
        state.ifindex, state.peers, state.lost = ifindex, fresh.peers, False
        state.egress, state.ingress, state.redirected = fresh.egress, fresh.ingress, False
    for key in [k for k, applied in state.peers.items() if wanted.get(k) != applied.wanted]:
        steps.tc += _remove(state, state.peers.pop(key))
    for key, want in wanted.items():
        if key not in state.peers:
            add, applied = _add(state, want)
            steps.tc += add
            state.peers[key] = applied
    needs_up = any(a.wanted.limit.up_kbit is not None for a in state.peers.values())
    if needs_up and not state.redirected:
        steps.ip_before = [["link", "add", ifb, "type", "ifb"], ["link", "set", ifb, "up"]]
        steps.tc[:0] = [["qdisc", "add", "dev", device, "handle", "ffff:", "ingress"], _redirect(device, ifb)]
        state.redirected = True
    elif not needs_up and state.redirected:
        steps.tc += [["qdisc", "del", "dev", device, "ingress"], ["qdisc", "del", "dev", ifb, "root"]]
        steps.ip_after = [["link", "delete", ifb]]
        state.redirected, state.ingress = False, Side()
    return steps


def _redirect(device: str, ifb: str) -> list[str]:
    return [
        "filter", "add", "dev", device, "parent", "ffff:", "prio", "1", "protocol", "all",
        "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb,
    ]  # fmt: skip


def _setup(device: str, side: Side, direction: str) -> list[list[str]]:
    if side.ready:
        return []
    side.ready = True
    v4_word, v6_word = _HASH_WORD[direction]
    base = ["filter", "add", "dev", device, "parent", "1:", "prio", "1"]
    return [
        ["qdisc", "add", "dev", device, "root", "handle", "1:", "htb"],
        [*base, "handle", f"{HASH_V4:x}:", "protocol", "all", "u32", "divisor", "256"],
        [*base, "handle", f"{HASH_V6:x}:", "protocol", "all", "u32", "divisor", "256"],
        [*base, "handle", f"{ROOT_TABLE:x}::{LINK_ORDER:x}", "protocol", "all", "u32", "ht", f"{ROOT_TABLE:x}::",
         "order", str(LINK_ORDER), "match", "u8", "0x40", "0xf0", "at", "0",
         "hashkey", "mask", "0x000000ff", "at", str(v4_word), "link", f"{HASH_V4:x}:"],
        [*base, "handle", f"{ROOT_TABLE:x}::{LINK_ORDER + 1:x}", "protocol", "all", "u32", "ht", f"{ROOT_TABLE:x}::",
         "order", str(LINK_ORDER + 1), "match", "u8", "0x60", "0xf0", "at", "0",
         "hashkey", "mask", "0x000000ff", "at", str(v6_word), "link", f"{HASH_V6:x}:"],
    ]  # fmt: skip


def _slot(state: InterfaceShaping) -> int:
    used = {a.slot for a in state.peers.values()}
    slot = next((s for s in range(1, MAX_SLOTS + 1) if s not in used), None)
    if slot is None:
        raise ShapingError(f"more than {MAX_SLOTS} limited peers on {state.device}")
    return slot


def _add(state: InterfaceShaping, want: Wanted) -> tuple[list[list[str]], Applied]:
    slot = _slot(state)
    lines: list[list[str]] = []
    down: tuple[Rule, ...] = ()
    up: tuple[Rule, ...] = ()
    if want.limit.down_kbit is not None:
        lines += _setup(state.device, state.egress, "dst")
        rules, add = _filters(state.device, state.egress, "dst", slot, want)
        lines += [_class(state.device, slot, want.limit.down_kbit), *add]
        down = rules
    if want.limit.up_kbit is not None:
        lines += _setup(state.ifb, state.ingress, "src")
        rules, add = _filters(state.ifb, state.ingress, "src", slot, want)
        lines += [_class(state.ifb, slot, want.limit.up_kbit), *add]
        up = rules
    return lines, Applied(slot, want, down, up)


def _class(device: str, slot: int, kbit: int) -> list[str]:
    rate = f"{kbit}kbit"
    return ["class", "add", "dev", device, "parent", "1:", "classid", f"1:{slot:x}", "htb", "rate", rate, "ceil", rate]


def _filters(
    device: str, side: Side, direction: str, slot: int, want: Wanted
) -> tuple[tuple[Rule, ...], list[list[str]]]:
    rules, lines = [], []
    for text in want.networks:
        network = network_of(text)
        v6 = network.version == 6
        host = network.prefixlen == network.max_prefixlen
        if host:
            table, bucket = (HASH_V6 if v6 else HASH_V4), int(network.network_address.packed[-1])
        else:
            table, bucket = ROOT_TABLE, 0
        node = side.take(table, bucket)
        if table == ROOT_TABLE and node >= LINK_ORDER:
            raise ShapingError(f"more than {LINK_ORDER - 1} limited prefixes on {device}")
        rule = Rule(table, bucket, node)
        rules.append(rule)
        match = ["match", "ip6" if v6 else "ip", direction, str(network)]
        version = ["match", "u8", "0x60" if v6 else "0x40", "0xf0", "at", "0"]
        where = ["ht", f"{table:x}:{bucket:x}:"]
        order = ["order", str(node)] if table == ROOT_TABLE else []
        lines.append(
            ["filter", "add", "dev", device, "parent", "1:", "prio", "1", "handle", _handle(rule),
             "protocol", "all", "u32", *where, *order, *version, *match, "flowid", f"1:{slot:x}"]
        )  # fmt: skip
    return tuple(rules), lines


def _handle(rule: Rule) -> str:
    return f"{rule.table:x}:{rule.bucket:x}:{rule.node:x}"


def _remove(state: InterfaceShaping, applied: Applied) -> list[list[str]]:
    lines = []
    for device, side, rules in ((state.device, state.egress, applied.down), (state.ifb, state.ingress, applied.up)):
        for rule in rules:
            lines.append(["filter", "del", "dev", device, "parent", "1:", "prio", "1", "handle", _handle(rule),
                          "protocol", "all", "u32"])  # fmt: skip
            side.give(rule)
        if rules:
            lines.append(["class", "del", "dev", device, "classid", f"1:{applied.slot:x}"])
    return lines


def batch(lines: list[list[str]]) -> str:
    """`tc -batch -` input: one command a line. Every word was made above; this checks again
    that none can break out of its line or its word."""
    for line in lines:
        for word in line:
            if not word or any(c.isspace() or c in "\"'\\#;" for c in word):
                raise ShapingError(f"refused to give tc the word {word!r}")
    return "".join(" ".join(line) + "\n" for line in lines)


def without(state: InterfaceShaping) -> InterfaceShaping:
    """A copy that has forgotten what it applied, and will clear the interface before it
    applies anything again (its interface is gone, or a tc run failed halfway)."""
    return replace(state, ifindex=None, peers={}, egress=Side(), ingress=Side(), redirected=False, lost=True)
