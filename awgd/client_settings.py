"""What a user's device is told to use: the operator's `[clients]` settings. Pure.

`[clients]` gives the defaults for every interface and `[clients.NAME]` overrides them for
one (docs/config.md). None of it is a secret; `server.status` shows each interface's values,
and the client library writes them into the device's config (awgd_client.device_config).
Every value is checked here, at start, so that a config file built from them means what it
says: the writer of that file refuses the same things again (a second wall).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from awgd_client.names import interface_name_problem

# What an operator who writes nothing gets: Cloudflare's resolvers (as the Amnezia app
# offers), every address through the tunnel, and a keepalive that holds a NAT mapping open.
DEFAULT_DNS = ("1.1.1.1", "1.0.0.1")
DEFAULT_ALLOWED_IPS = ("0.0.0.0/0", "::/0")
DEFAULT_KEEPALIVE = 25
# IPv6 needs 1280 on every link; above a jumbo frame nothing carries it.
MIN_MTU, MAX_MTU = 1280, 9000
MAX_DNS = 4  # the Amnezia app takes two; resolv.conf reads three
MAX_ALLOWED_IPS = 64
# Every key of [clients] and [clients.IFACE] (docs/config.md).
CLIENT_KEYS = ("endpoint", "dns", "mtu", "allowed_ips", "persistent_keepalive")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MAX_HOST = 253


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    endpoint_host: str | None = None  # a DNS name, an IPv4 address or a bare IPv6 address
    endpoint_port: int | None = None  # None: the interface's listen port
    dns: tuple[str, ...] = DEFAULT_DNS
    mtu: int | None = None
    allowed_ips: tuple[str, ...] = DEFAULT_ALLOWED_IPS
    persistent_keepalive: int = DEFAULT_KEEPALIVE  # 0: off

    def endpoint(self, listen_port: int) -> str | None:
        """host:port as a device's config writes it ([v6]:port), or None when unknown."""
        port = self.endpoint_port or listen_port
        if self.endpoint_host is None or not port:
            return None
        host = f"[{self.endpoint_host}]" if ":" in self.endpoint_host else self.endpoint_host
        return f"{host}:{port}"

    def written(self) -> dict[str, Any]:
        """As the config file would say it (TOML has no null: what is unset is left out)."""
        shown: dict[str, Any] = {}
        if self.endpoint_host is not None:
            host = f"[{self.endpoint_host}]" if ":" in self.endpoint_host else self.endpoint_host
            shown["endpoint"] = host if self.endpoint_port is None else f"{host}:{self.endpoint_port}"
        shown["dns"] = list(self.dns)
        if self.mtu is not None:
            shown["mtu"] = self.mtu
        shown["allowed_ips"] = list(self.allowed_ips)
        shown["persistent_keepalive"] = self.persistent_keepalive
        return shown

    def shown(self, listen_port: int) -> dict[str, Any]:
        """`server.status`'s `client` object for an interface listening on `listen_port`."""
        return {
            "endpoint": self.endpoint(listen_port),
            "dns": list(self.dns),
            "mtu": self.mtu,
            "allowed_ips": list(self.allowed_ips),
            "persistent_keepalive": self.persistent_keepalive,
        }


@dataclass(frozen=True, slots=True)
class Clients:
    """The defaults and each interface's own settings."""

    defaults: ClientSettings = field(default_factory=ClientSettings)
    interfaces: Mapping[str, ClientSettings] = field(default_factory=dict)

    def of(self, interface: str) -> ClientSettings:
        return self.interfaces.get(interface, self.defaults)

    def effective(self) -> dict[str, dict[str, Any]]:
        """As TOML sections, defaults filled in (for --check-config)."""
        sections = {"clients": self.defaults.written()}
        for name, settings in sorted(self.interfaces.items()):
            sections[f"clients.{name}"] = settings.written()
        return sections


class ClientSettingError(ValueError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def parse_clients(table: Mapping[str, Any]) -> Clients:
    """The `[clients]` table as tomllib reads it (subtables are interfaces); raises
    ClientSettingError naming the first bad key."""
    own = {key: value for key, value in table.items() if not isinstance(value, dict)}
    defaults = _settings(ClientSettings(), own, "clients")
    interfaces = {}
    for name, sub in table.items():
        if not isinstance(sub, dict):
            continue
        problem = interface_name_problem(name)
        if problem is not None:
            raise ClientSettingError(f"clients.{name}", f"not an interface name ({problem})")
        interfaces[name] = _settings(defaults, sub, f"clients.{name}")
    return Clients(defaults, interfaces)


def _settings(base: ClientSettings, table: Mapping[str, Any], section: str) -> ClientSettings:
    changes: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{section}.{key}"
        if key == "endpoint":
            changes["endpoint_host"], changes["endpoint_port"] = parse_endpoint(value, where)
        elif key == "dns":
            changes["dns"] = _list(value, where, MAX_DNS, _dns_server)
        elif key == "mtu":
            changes["mtu"] = _integer(value, where, MIN_MTU, MAX_MTU)
        elif key == "allowed_ips":
            changes["allowed_ips"] = _list(value, where, MAX_ALLOWED_IPS, _network)
            if not changes["allowed_ips"]:
                raise ClientSettingError(where, "must name at least one network")
        elif key == "persistent_keepalive":
            changes["persistent_keepalive"] = _integer(value, where, 0, 65535)
        else:
            raise ClientSettingError(where, "unknown key")
    return replace(base, **changes)


def parse_endpoint(value: Any, where: str = "endpoint") -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address: (host, port or None)."""
    if not isinstance(value, str) or not value:
        raise ClientSettingError(where, "must be a host name or address, optionally with :port")
    port: int | None = None
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ClientSettingError(where, "an IPv6 address in brackets is [address] or [address]:port")
        port = _port(rest[1:], where) if rest else None
        return _ipv6(host, where), port
    if value.count(":") > 1:
        return _ipv6(value, where), None
    host, colon, rest = value.partition(":")
    if colon:
        port = _port(rest, where)
    try:
        return str(ipaddress.IPv4Address(host)), port
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > _MAX_HOST or not all(_HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ClientSettingError(where, f"{host!r} is neither a host name nor an IP address")
    return host.lower(), port


def _ipv6(text: str, where: str) -> str:
    if "%" in text:  # a scope id names a link of this host, not one a device can reach
        raise ClientSettingError(where, f"{text!r} is not an IPv6 address a device can reach (no scope ids)")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ClientSettingError(where, f"{text!r} is not an IPv6 address (no scope ids)") from None


def _port(text: str, where: str) -> int:
    if not (text.isdigit() and text.isascii()) or not 1 <= int(text) <= 65535:
        raise ClientSettingError(where, "the port must be 1..65535")
    return int(text)


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ClientSettingError(where, f"must be an integer {low}..{high}")
    return value


def _list(value: Any, where: str, most: int, item: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > most:
        raise ClientSettingError(where, f"must be a list of at most {most} items")
    found = []
    for entry in value:
        if not isinstance(entry, str):
            raise ClientSettingError(where, "items must be strings")
        checked = item(entry)
        if checked is None:
            raise ClientSettingError(where, f"{entry!r} is not valid here")
        found.append(checked)
    return tuple(found)


def _dns_server(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _network(text: str) -> str | None:
    if "%" in text:
        return None
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None
