"""The config file of a user's device, built from the live interface. Pure, standard library.

The server's side comes from `server.status` (its public key, its AmneziaWG parameters, the
operator's `[clients]` settings), the device's own from its peer (allowed IPs) and its keys.
Every AmneziaWG parameter the interface has goes in exactly as the server has it (H1-H4 also
as ranges); what it does not have stays out, and plain WireGuard gets none. The file is what
`awg-quick` (or `wg-quick`) brings up, and what the apps import or scan.

Every value is checked again as it is written (a second wall behind the daemon's checks):
nothing that could end a line, start a comment or a section, or add a key gets in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from awgd_client.models import DeviceDefaults, InterfaceStatus
from awgd_client.names import is_public_key

# The client-side names of the interface's parameters, in the order AmneziaWG's own files
# list them. AmneziaWG 3's header protection key and timers are the server's alone: the
# daemon does not report them, and they are not here.
AWG_KEYS = (
    ("jc", "Jc"),
    ("jmin", "Jmin"),
    ("jmax", "Jmax"),
    ("s1", "S1"),
    ("s2", "S2"),
    ("s3", "S3"),
    ("s4", "S4"),
    ("h1", "H1"),
    ("h2", "H2"),
    ("h3", "H3"),
    ("h4", "H4"),
    ("i1", "I1"),
    ("i2", "I2"),
    ("i3", "I3"),
    ("i4", "I4"),
    ("i5", "I5"),
)
# The parameters of AmneziaWG 2 and later: a server with any of them, or with a header
# range, is what the AmneziaVPN app calls `amnezia-awg2`.
AWG2_KEYS = frozenset(("s3", "s4", "i1", "i2", "i3", "i4", "i5"))
_ENDPOINT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}", re.ASCII)
_NETWORK = re.compile(r"[0-9A-Fa-f:.]+/[0-9]{1,3}", re.ASCII)
_ADDRESS = re.compile(r"[0-9A-Fa-f:.]+", re.ASCII)
_HEADER = re.compile(r"[0-9]{1,10}(?:-[0-9]{1,10})?", re.ASCII)
# Unsafe anywhere in a value: what ends a line or starts a comment, a section or a key.
_UNSAFE = frozenset("\n\r\x00#[]=")


class DeviceConfigError(ValueError):
    """A config cannot be written: a setting is missing, or a value would change its meaning."""


@dataclass(frozen=True, slots=True, repr=False)
class DeviceConfig:
    private_key: str
    addresses: tuple[str, ...]
    dns: tuple[str, ...]
    mtu: int | None
    awg: tuple[tuple[str, str], ...]  # (client-side name, value), as written
    server_public_key: str
    preshared_key: str | None
    endpoint: str
    allowed_ips: tuple[str, ...]
    persistent_keepalive: int  # 0: off

    def __repr__(self) -> str:  # never the private or preshared key
        return f"DeviceConfig(addresses={self.addresses!r}, endpoint={self.endpoint!r})"

    @property
    def host(self) -> str:
        host = self.endpoint.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host

    @property
    def port(self) -> int:
        return int(self.endpoint.rpartition(":")[2])

    @property
    def amneziawg(self) -> bool:
        return bool(self.awg)

    def text(self) -> str:
        """The file's text, as `awg-quick` reads it and the apps scan it."""
        lines = ["[Interface]", f"PrivateKey = {self.private_key}", f"Address = {', '.join(self.addresses)}"]
        if self.dns:
            lines.append(f"DNS = {', '.join(self.dns)}")
        if self.mtu is not None:
            lines.append(f"MTU = {self.mtu}")
        lines += [f"{name} = {value}" for name, value in self.awg]
        lines += ["", "[Peer]", f"PublicKey = {self.server_public_key}"]
        if self.preshared_key is not None:
            lines.append(f"PresharedKey = {self.preshared_key}")
        lines += [f"Endpoint = {self.endpoint}", f"AllowedIPs = {', '.join(self.allowed_ips)}"]
        if self.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {self.persistent_keepalive}")
        return "\n".join(lines) + "\n"


def device_params(awg: Mapping[str, int | str] | None) -> tuple[tuple[str, str], ...]:
    """The interface's AmneziaWG parameters as a device's file names them, the unset ones
    (0, and a header of 0, which the tools print for "not sent") left out."""
    if not awg:
        return ()
    found = []
    for name, key in AWG_KEYS:
        value = awg.get(name)
        if value is None or value in {0, "0"}:
            continue
        text = str(value)
        if name.startswith("h") and not _HEADER.fullmatch(text):
            raise DeviceConfigError(f"the interface's {key} is not a number or a range: {text!r}")
        found.append((key, _safe(key, text)))
    return tuple(found)


def container_of(awg: Mapping[str, int | str] | None) -> str:
    """The AmneziaVPN app's container for a server with these parameters."""
    if not device_params(awg):
        return "amnezia-wireguard"
    names = {name for name, value in (awg or {}).items() if value not in (0, "0")}
    ranges = any("-" in str((awg or {}).get(h, "")) for h in ("h1", "h2", "h3", "h4"))
    return "amnezia-awg2" if names & AWG2_KEYS or ranges else "amnezia-awg"


def check_interface(interface: InterfaceStatus) -> DeviceDefaults:
    """What the interface tells devices, when a config can be made for it; raises
    DeviceConfigError naming what is missing (the operator's endpoint, most often)."""
    client = interface.client
    if client is None:
        raise DeviceConfigError("this awgd is too old to say what a device should use (it has no [clients])")
    if client.endpoint is None:
        raise DeviceConfigError(
            f"no endpoint for {interface.name}: set [clients] endpoint (or [clients.{interface.name}] endpoint)"
            " in /etc/awgd/awgd.toml to the address users' devices connect to"
        )
    if not _ENDPOINT.fullmatch(client.endpoint):
        raise DeviceConfigError(f"the endpoint {client.endpoint!r} is not host:port")
    if interface.public_key is None or not is_public_key(interface.public_key):
        raise DeviceConfigError(f"{interface.name} has no public key (is it configured?)")
    device_params(interface.awg)
    return client


def device_config(
    interface: InterfaceStatus,
    addresses: Sequence[str],
    private_key: str,
    preshared_key: str | None,
) -> DeviceConfig:
    """The config of the device whose peer on `interface` holds `addresses` (its allowed IPs).
    Raises DeviceConfigError when the operator set no endpoint, or a value is unsafe."""
    client = check_interface(interface)
    endpoint, server_key = client.endpoint, interface.public_key
    assert endpoint is not None and server_key is not None  # check_interface saw both
    for key, what in ((private_key, "private key"), (preshared_key, "preshared key")):
        if key is not None and not is_public_key(key):
            raise DeviceConfigError(f"the {what} is not 44 characters of base64")
    if not addresses:
        raise DeviceConfigError("the peer has no allowed IPs to give the device as its address")
    return DeviceConfig(
        private_key=private_key,
        addresses=tuple(_checked(a, _NETWORK, "address") for a in addresses),
        dns=tuple(_checked(d, _ADDRESS, "DNS server") for d in client.dns),
        mtu=client.mtu,
        awg=device_params(interface.awg),
        server_public_key=server_key,
        preshared_key=preshared_key,
        endpoint=endpoint,
        allowed_ips=tuple(_checked(n, _NETWORK, "allowed IP") for n in client.allowed_ips),
        persistent_keepalive=client.persistent_keepalive,
    )


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise DeviceConfigError(f"the {what} {value!r} cannot go into a config file")
    return value


def _safe(key: str, value: str) -> str:
    if not value or not value.isprintable() or _UNSAFE.intersection(value):
        raise DeviceConfigError(f"the interface's {key} cannot go into a config file: {value!r}")
    return value
