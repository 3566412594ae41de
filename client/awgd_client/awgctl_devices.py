"""`awgctl peer new` and `awgctl peer rekey`: a user's device's keys and config (API v3 §1).

The keys are made here, in awgctl's process; the daemon gets the public key and the
preshared key, never the private key, which goes only into the file `--config-out` names
(mode 0600). The files are opened before the daemon is asked, so a path that cannot be
written stops everything before a peer exists without its config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from awgd_client.device_config import DeviceConfigError
from awgd_client.device_keys import MissingExtra
from awgd_client.models import AddedPeer, PeerTraffic, ServerStatus
from awgd_client.new_device import NewDevice, Prepared, finish, prepare
from awgd_client.sync_client import Client

SECRET_FILE_MODE = 0o600  # the config holds the device's private key


class DeviceUsageError(Exception):
    """A device command cannot run as given (exit 2, nothing changed)."""


def cmd_new(client: Client, args: argparse.Namespace, as_json: bool) -> int:
    if args.interface is None:
        raise DeviceUsageError("awgctl peer new: --interface is required")
    if args.config_out is None:
        raise DeviceUsageError("awgctl peer new: --config-out FILE is required (the device's config)")
    prepared = _prepare(client, args)
    allowed = [part.strip() for part in args.allowed_ips.split(",")] if args.allowed_ips else None
    with _outputs(args) as (config_file, qr_file):
        raw = client.change(
            "peer.add",
            {
                "interface": args.interface,
                "public_key": prepared.keys.public_key,
                **({"allowed_ips": allowed} if allowed else {}),
                **({"preshared_key": prepared.preshared_key} if prepared.preshared_key else {}),
                **({"label": args.label} if args.label is not None else {}),
            },
        )
        device = finish(prepared, AddedPeer.from_json(raw))
        _write(device, config_file, qr_file)
    return _report(device, args, as_json)


def cmd_rekey(client: Client, args: argparse.Namespace, as_json: bool, key: str, interface: str) -> int:
    if args.config_out is None:
        raise DeviceUsageError("awgctl peer rekey: --config-out FILE is required (the device's new config)")
    args.interface = interface
    prepared = _prepare(client, args)
    with _outputs(args) as (config_file, qr_file):
        raw = client.change(
            "peer.rekey",
            {
                "interface": interface,
                "public_key": key,
                "new_public_key": prepared.keys.public_key,
                **({"preshared_key": prepared.preshared_key} if prepared.preshared_key else {}),
            },
        )
        device = finish(prepared, PeerTraffic.from_json(raw))
        _write(device, config_file, qr_file)
    return _report(device, args, as_json)


def _prepare(client: Client, args: argparse.Namespace) -> Prepared:
    status = ServerStatus.from_json(client.call("server.status"))
    try:
        return prepare(status, args.interface, preshared_key=not args.no_preshared_key)
    except (DeviceConfigError, MissingExtra) as exc:
        raise DeviceUsageError(str(exc)) from None


@contextlib.contextmanager
def _outputs(args: argparse.Namespace) -> Iterator[tuple[IO[str], IO[bytes] | None]]:
    """The output files, made (empty, 0600) before anything changes; removed again when the
    change fails."""
    made: list[str] = []
    handles: list[IO[Any]] = []
    try:
        config_file = _create(args.config_out, made, binary=False)
        handles.append(config_file)
        qr_file = _create(args.qr_out, made, binary=True) if args.qr_out else None
        if qr_file is not None:
            handles.append(qr_file)
        yield config_file, qr_file
    except BaseException:
        for handle in handles:
            handle.close()
        for path in made:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    for handle in handles:
        handle.close()


def _create(path: str, made: list[str], *, binary: bool) -> IO[Any]:
    try:
        # O_EXCL: never over a file that is there (a link an attacker left, or a user's config).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SECRET_FILE_MODE)
    except FileExistsError:
        raise DeviceUsageError(f"{path} exists: awgctl does not overwrite a file") from None
    except OSError as exc:
        raise DeviceUsageError(f"cannot write {path}: {exc.strerror}") from None
    made.append(path)
    return os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8")


def _write(device: NewDevice, config_file: IO[str], qr_file: IO[bytes] | None) -> None:
    config_file.write(device.config_text)
    if qr_file is not None:
        qr_file.write(device.qr_png())


def _report(device: NewDevice, args: argparse.Namespace, as_json: bool) -> int:
    link = device.link if args.link else None
    if as_json:
        print(
            json.dumps({"public_key": device.public_key, "config_path": os.path.abspath(args.config_out), "link": link})
        )
        return 0
    out = sys.stdout
    print(device.public_key, file=out)
    print(
        f"{device.interface.name}: {', '.join(device.peer.allowed_ips)}; config written to {args.config_out}", file=out
    )
    if args.qr_out:
        print(f"QR code written to {args.qr_out}", file=out)
    if link is not None:
        print(link, file=out)
    if args.qr:
        print(device.qr_terminal(), file=out, end="")
    return 0
