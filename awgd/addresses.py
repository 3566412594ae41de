"""Peers' addresses: the interface's own, the allowed IPs peers hold, and the next free one. Pure.

`peer.add` without `allowed_ips` gives the new peer the lowest free address of each subnet the
interface has: a /32 of its IPv4 subnet, and a /128 of its IPv6 subnet if it has one. Free
means: not the interface's own address, not the subnet's network or broadcast address, and
inside no allowed IP of any peer of the interface (present, blocked, or added and not yet seen).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# An IPv6 subnet is huge; the search for a free /128 looks at this many addresses from the
# start of the subnet, far more than an interface can have peers (each peer takes one).
MAX_V6_CANDIDATES = 1 << 20
# Allowed IPs a peer may be given in one call: WireGuard has no limit, a real client has a few.
MAX_ALLOWED_IPS = 64


# What a CIDR is written with. Python's ipaddress also takes an IPv6 scope id ("fe80::1%eth0"),
# whose text is anything at all (newlines and config sections included), and surrounding
# blanks; a peer's allowed IP is neither, and its text goes into the interface's config file.
_CIDR_CHARS = frozenset("0123456789abcdefABCDEF.:/")


class AddressError(ValueError):
    """A CIDR that cannot be used; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Taken:
    """What the peers of an interface hold: single addresses, and wider networks."""

    hosts: frozenset[int]  # /32 and /128 as integers (v4 and v6 apart by the family's size)
    wide: tuple[Network, ...]

    def holds(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if _host_number(address) in self.hosts:
            return True
        return any(address in network for network in self.wide if network.version == address.version)


def parse_ip_addr(text: str, interface: str) -> tuple[Address, ...]:
    """The interface's own addresses from `ip -o addr show` (iproute2's or busybox's),
    link-local IPv6 left out (never a peer's subnet)."""
    found: list[Address] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[1].rstrip(":") != interface:
            continue
        for index, word in enumerate(fields[:-1]):
            if word in ("inet", "inet6"):
                try:
                    address = ipaddress.ip_interface(fields[index + 1])
                except ValueError:
                    continue
                if not (address.version == 6 and address.ip.is_link_local):
                    found.append(address)
                break
    return tuple(found)


def normalize_cidrs(values: Iterable[str]) -> tuple[str, ...]:
    """CIDR strings as WireGuard prints them (network address, prefix), in the order given,
    without repeats; an address without a prefix is a /32 or /128. Raises AddressError."""
    seen: dict[str, None] = {}
    for value in values:
        if not isinstance(value, str) or not value or len(value) > 64 or not value.isascii():
            raise AddressError("an allowed IP must be a CIDR string such as 10.8.0.7/32 or fd00::7/128")
        if not _CIDR_CHARS.issuperset(value):
            shown = value if value.isprintable() else "(unprintable)"
            raise AddressError(f"{shown!r} is not a CIDR (digits, '.', ':' and one '/' only; no scope id)")
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            shown = value if value.isprintable() else "(unprintable)"
            raise AddressError(f"{shown!r} is not a CIDR") from None
        seen[str(network)] = None
    if len(seen) > MAX_ALLOWED_IPS:
        raise AddressError(f"at most {MAX_ALLOWED_IPS} allowed IPs")
    return tuple(seen)


def outside(own: Iterable[Address], allowed_ips: Iterable[str]) -> list[str]:
    """The allowed IPs a peer should not hold on an interface with addresses `own`: any that
    is not inside one of its subnets, or that holds one of its own addresses. awg-quick adds
    a route for every allowed IP, so 0.0.0.0/0 on a server's peer sends the server's own
    traffic to that client. Nothing is outside an interface without addresses (nothing to
    compare with)."""
    own = tuple(own)
    if not own:
        return []
    found = []
    for cidr in allowed_ips:
        network = ipaddress.ip_network(cidr, strict=False)
        inside = any(
            network.version == address.version and network.subnet_of(address.network)  # type: ignore[arg-type]
            for address in own
        )
        if not inside or any(address.ip in network for address in own if address.version == network.version):
            found.append(cidr)
    return found


def taken_by(allowed_ips: Iterable[Iterable[str]]) -> Taken:
    """What the peers hold, from each peer's allowed IPs."""
    hosts: set[int] = set()
    wide: list[Network] = []
    for cidrs in allowed_ips:
        for cidr in cidrs:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            if network.num_addresses == 1:
                hosts.add(_host_number(network.network_address))
            else:
                wide.append(network)
    return Taken(frozenset(hosts), tuple(wide))


def owners(allowed_ips: Iterable[tuple[str, Iterable[str]]]) -> dict[str, str]:
    """Normalised CIDR -> the public key that holds it exactly (a conflict for peer.add)."""
    held: dict[str, str] = {}
    for key, cidrs in allowed_ips:
        for cidr in cidrs:
            try:
                held.setdefault(str(ipaddress.ip_network(cidr, strict=False)), key)
            except ValueError:
                continue
    return held


def next_free(own: Iterable[Address], taken: Taken) -> tuple[str, ...] | None:
    """The lowest free /32 of the first IPv4 subnet, plus the lowest free /128 of the first
    IPv6 subnet if there is one; None when a subnet the interface has is full, or when it has
    no subnet with room for peers at all."""
    own = tuple(own)
    ours = {_host_number(address.ip) for address in own}
    chosen: list[str] = []
    for version in (4, 6):
        subnets = [a.network for a in own if a.version == version and a.network.num_addresses > 2]
        if not subnets:
            continue
        subnet = subnets[0]
        address = _first_free(subnet, ours, taken)
        if address is None:
            return None
        chosen.append(f"{address}/{address.max_prefixlen}")
    return tuple(chosen) or None


def _first_free(subnet: Network, ours: set[int], taken: Taken) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    first = int(subnet.network_address) + 1  # the network address is never a peer's
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    if subnet.version == 6:
        last = min(last, first + MAX_V6_CANDIDATES - 1)
    make = ipaddress.IPv4Address if subnet.version == 4 else ipaddress.IPv6Address
    wide = [network for network in taken.wide if network.version == subnet.version and network.overlaps(subnet)]
    number = first
    while number <= last:
        address = make(number)
        host = _host_number(address)
        if host in ours or host in taken.hosts:
            number += 1
            continue
        covering = next((network for network in wide if address in network), None)
        if covering is None:
            return address
        number = int(covering.broadcast_address) + 1  # skip the whole network at once
    return None


def _host_number(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """One integer space for both families: IPv6 addresses above every IPv4 one."""
    return int(address) + (1 << 32 if address.version == 6 else 0)
