"""One call for a bot: a new device's keys, its peer, its config, its QR code and its key.

    from awgd_client import Client
    from awgd_client.new_device import new_device

    with Client() as awgd:
        device = new_device(awgd, "awg0", label="Ivan's phone")
    device.config_text      # the .conf, for awg-quick or the apps
    device.qr_png()         # its QR code, as a PNG
    device.link             # the AmneziaVPN app's vpn:// key

The keys are made here (awgd_client.device_keys): the daemon gets the public key and the
preshared key (`peer.add`), never the private key. A bot that keeps `device.private_key`
keeps a secret; one that does not can always give the user a new config (`rekey_device`).
Written sans I/O (`prepare`, then `finish` with the daemon's answer), with thin sync and
async callers.
"""

from __future__ import annotations

from dataclasses import dataclass

from awgd_client.amnezia_key import amnezia_document, encode_key
from awgd_client.async_client import AsyncClient
from awgd_client.device_config import DeviceConfig, DeviceConfigError, check_interface, device_config
from awgd_client.device_keys import KeyPair, generate_key_pair, generate_preshared_key
from awgd_client.models import AddedPeer, InterfaceStatus, PeerTraffic, ServerStatus
from awgd_client.qr_codes import key_qr_pngs, qr_png, qr_terminal
from awgd_client.sync_client import Client


@dataclass(frozen=True, slots=True, repr=False)
class NewDevice:
    peer: PeerTraffic  # the daemon's answer (AddedPeer from peer.add)
    keys: KeyPair
    preshared_key: str | None
    config: DeviceConfig
    interface: InterfaceStatus

    def __repr__(self) -> str:
        return f"NewDevice(public_key={self.public_key!r}, interface={self.interface.name!r})"

    @property
    def public_key(self) -> str:
        return self.keys.public_key

    @property
    def private_key(self) -> str:
        return self.keys.private_key

    @property
    def config_text(self) -> str:
        return self.config.text()

    @property
    def link(self) -> str:
        """The AmneziaVPN app's `vpn://` key."""
        description = self.peer.label or self.public_key[:8]
        document = amnezia_document(
            self.config, self.interface.awg, description=description, public_key=self.public_key
        )
        return encode_key(document)

    def qr_png(self) -> bytes:
        return qr_png(self.config_text)

    def qr_terminal(self) -> str:
        return qr_terminal(self.config_text)

    def link_qr_pngs(self) -> list[bytes]:
        return key_qr_pngs(self.link)


@dataclass(frozen=True, slots=True, repr=False)
class Prepared:
    """What is made before the daemon is asked: the interface, and the device's new keys."""

    interface: InterfaceStatus
    keys: KeyPair
    preshared_key: str | None


def prepare(status: ServerStatus, interface: str, *, preshared_key: bool = True) -> Prepared:
    """Check that a config can be made for `interface` (raises DeviceConfigError, e.g. when the
    operator set no endpoint: then nothing is asked of the daemon), and make the keys."""
    found = next((i for i in status.interfaces if i.name == interface), None)
    if found is None:
        raise DeviceConfigError(f"awgd does not know an interface {interface!r}")
    check_interface(found)
    return Prepared(found, generate_key_pair(), generate_preshared_key() if preshared_key else None)


def finish(prepared: Prepared, peer: PeerTraffic) -> NewDevice:
    config = device_config(prepared.interface, peer.allowed_ips, prepared.keys.private_key, prepared.preshared_key)
    return NewDevice(peer, prepared.keys, prepared.preshared_key, config, prepared.interface)


def new_device(
    client: Client,
    interface: str,
    *,
    label: str | None = None,
    allowed_ips: list[str] | None = None,
    preshared_key: bool = True,
) -> NewDevice:
    """Make keys, add the peer (the next free address unless `allowed_ips`), and build its
    config. Raises DeviceConfigError before adding anything when no config can be made."""
    prepared = prepare(client.server_status(), interface, preshared_key=preshared_key)
    added: AddedPeer = client.add_peer(
        interface,
        prepared.keys.public_key,
        allowed_ips=allowed_ips,
        preshared_key=prepared.preshared_key,
        label=label,
    )
    return finish(prepared, added)


async def new_device_async(
    client: AsyncClient,
    interface: str,
    *,
    label: str | None = None,
    allowed_ips: list[str] | None = None,
    preshared_key: bool = True,
) -> NewDevice:
    """new_device for asyncio (a bot)."""
    prepared = prepare(await client.server_status(), interface, preshared_key=preshared_key)
    added = await client.add_peer(
        interface,
        prepared.keys.public_key,
        allowed_ips=allowed_ips,
        preshared_key=prepared.preshared_key,
        label=label,
    )
    return finish(prepared, added)


def rekey_device(client: Client, interface: str, public_key: str, *, preshared_key: bool = True) -> NewDevice:
    """A user who lost their device: new keys for their peer (peer.rekey), and the config for
    the new device. The old device stops working; nothing else about the peer changes."""
    prepared = prepare(client.server_status(), interface, preshared_key=preshared_key)
    peer = client.rekey_peer(interface, public_key, prepared.keys.public_key, preshared_key=prepared.preshared_key)
    return finish(prepared, peer)


async def rekey_device_async(
    client: AsyncClient, interface: str, public_key: str, *, preshared_key: bool = True
) -> NewDevice:
    """rekey_device for asyncio (a bot)."""
    prepared = prepare(await client.server_status(), interface, preshared_key=preshared_key)
    peer = await client.rekey_peer(
        interface, public_key, prepared.keys.public_key, preshared_key=prepared.preshared_key
    )
    return finish(prepared, peer)
