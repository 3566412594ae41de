"""The AmneziaVPN app's `vpn://` key and its chunked QR series. Pure, standard library.

A key is `vpn://` + base64url, unpadded, of Qt's qCompress of a JSON document: the
document's length as 4 bytes big-endian, then zlib. The document names the server, the DNS,
and one container whose `last_config` (a JSON *string*) carries the config file's text in
`config`, beside the same values one by one (docs/amnezia.md).

A key too long for one QR code goes as a series, as the app shows and scans it: each code is
the base64url, unpadded, of Qt's QDataStream of (the magic 1984 as int16, the number of
codes and this code's index as uint8, then a byte array: uint32 length and bytes) over
slices of the compressed document.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from collections.abc import Iterable
from typing import Any

from awgd_client.device_config import DeviceConfig, container_of

PREFIX = "vpn://"
QR_MAGIC = 1984  # the app's qrMagicCode
# The app's slice of the compressed document per QR code: at error correction L, the
# base64 of a frame of this size fits a code its camera reads reliably.
QR_CHUNK_BYTES = 850
MAX_QR_CHUNKS = 255  # the count is one byte
# A document is a few kilobytes; a key claiming more is refused before it is inflated.
MAX_DOCUMENT_BYTES = 1 << 20
_FRAME_HEAD = struct.Struct(">hBBI")


class AmneziaKeyError(ValueError):
    """Not a key (or a QR series) the AmneziaVPN app would accept."""


def amnezia_document(
    config: DeviceConfig,
    awg: dict[str, int | str] | None,
    *,
    description: str,
    public_key: str,
) -> dict[str, Any]:
    """The app's JSON for one device: `awg` is the interface's parameters as server.status
    gives them, `public_key` the device's own."""
    container = container_of(awg)
    protocol = "wireguard" if container == "amnezia-wireguard" else "awg"
    params = {name: value for name, value in config.awg}
    dns = list(config.dns)
    last_config: dict[str, Any] = {
        "config": config.text(),
        "hostName": config.host,
        "port": config.port,
        "client_ip": config.addresses[0].partition("/")[0],
        "client_priv_key": config.private_key,
        "client_pub_key": public_key,
        "server_pub_key": config.server_public_key,
        "psk_key": config.preshared_key or "",
        "allowed_ips": list(config.allowed_ips),
        "persistent_keep_alive": str(config.persistent_keepalive),
        **params,
    }
    if config.mtu is not None:
        last_config["mtu"] = str(config.mtu)
    settings: dict[str, Any] = {"port": str(config.port), "transport_proto": "udp", **params}
    settings["last_config"] = json.dumps(last_config, ensure_ascii=False, indent=4)
    document: dict[str, Any] = {
        "hostName": config.host,
        "description": description,
        "defaultContainer": container,
        "containers": [{"container": container, protocol: settings}],
    }
    if dns:
        document["dns1"] = dns[0]
    if len(dns) > 1:
        document["dns2"] = dns[1]
    return document


def encode_key(document: dict[str, Any]) -> str:
    return PREFIX + _b64(compress(json.dumps(document, ensure_ascii=False).encode("utf-8")))


def decode_key(key: str) -> dict[str, Any]:
    """The JSON document of a `vpn://` key; raises AmneziaKeyError."""
    text = key.strip()
    if text.startswith(PREFIX):
        text = text[len(PREFIX) :]
    try:
        document = json.loads(uncompress(_unb64(text)))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AmneziaKeyError("the key's document is not JSON") from None
    if not isinstance(document, dict):
        raise AmneziaKeyError("the key's document is not a JSON object")
    return document


def compress(data: bytes) -> bytes:
    """Qt's qCompress."""
    return struct.pack(">I", len(data)) + zlib.compress(data)


def uncompress(blob: bytes) -> bytes:
    """Qt's qUncompress, bounded: never inflates more than the length the blob claims."""
    if len(blob) < 5:
        raise AmneziaKeyError("too short to be a compressed document")
    (claimed,) = struct.unpack(">I", blob[:4])
    if claimed > MAX_DOCUMENT_BYTES:
        raise AmneziaKeyError(f"the document claims {claimed} bytes, more than {MAX_DOCUMENT_BYTES}")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(blob[4:], claimed + 1)
    except zlib.error as exc:
        raise AmneziaKeyError(f"not zlib data ({exc})") from None
    if len(data) != claimed or not inflater.eof:
        raise AmneziaKeyError("the document's length is not what the key claims")
    return data


def qr_chunks(key: str) -> list[str]:
    """The texts of the app's QR series for a `vpn://` key, in order."""
    text = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    blob = _unb64(text)
    slices = [blob[i : i + QR_CHUNK_BYTES] for i in range(0, len(blob), QR_CHUNK_BYTES)]
    if len(slices) > MAX_QR_CHUNKS:
        raise AmneziaKeyError(f"a key this long needs more than {MAX_QR_CHUNKS} QR codes; send the file")
    return [
        _b64(_FRAME_HEAD.pack(QR_MAGIC, len(slices), index, len(piece)) + piece) for index, piece in enumerate(slices)
    ]


def join_qr_chunks(chunks: Iterable[str]) -> str:
    """The `vpn://` key a complete QR series (in any order) carries; raises AmneziaKeyError."""
    pieces: dict[int, bytes] = {}
    count = None
    for chunk in chunks:
        frame = _unb64(chunk)
        if len(frame) < _FRAME_HEAD.size:
            raise AmneziaKeyError("a QR code of the series is too short")
        magic, total, index, length = _FRAME_HEAD.unpack_from(frame)
        piece = frame[_FRAME_HEAD.size :]
        if magic != QR_MAGIC or len(piece) != length:
            raise AmneziaKeyError("a QR code is not part of an AmneziaVPN series")
        if count is not None and total != count:
            raise AmneziaKeyError("the QR codes are of different series")
        count = total
        pieces[index] = piece
    if count is None or sorted(pieces) != list(range(count)):
        raise AmneziaKeyError("the QR series is incomplete")
    return PREFIX + _b64(b"".join(pieces[i] for i in range(count)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise AmneziaKeyError("not base64url") from None
