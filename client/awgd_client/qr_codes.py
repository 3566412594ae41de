"""QR codes of a device's config and of its AmneziaVPN key, by `segno` (Debian:
python3-segno), the `config` extra.

The config's code holds exactly the file's text (the AmneziaWG and WireGuard apps scan it);
the key's series holds the app's chunks (awgd_client.amnezia_key.qr_chunks).
"""

from __future__ import annotations

import io
from typing import Any

from awgd_client.amnezia_key import qr_chunks
from awgd_client.device_keys import MissingExtra

# A phone's camera reads a code of 8 pixels per module at arm's length from a screen.
PNG_SCALE = 8
# The quiet zone the QR standard asks for, in modules.
BORDER = 4


def qr_png(text: str, *, scale: int = PNG_SCALE) -> bytes:
    """A PNG of one QR code holding `text` byte for byte (UTF-8, error correction L as the
    apps make theirs, version as small as fits). Raises ValueError when it does not fit."""
    out = io.BytesIO()
    _code(text).save(out, kind="png", scale=scale, border=BORDER)
    return out.getvalue()


def qr_terminal(text: str) -> str:
    """The code for a terminal: two rows per line, in block characters."""
    out = io.StringIO()
    _code(text).terminal(out=out, compact=True, border=BORDER)
    return out.getvalue()


def key_qr_pngs(key: str, *, scale: int = PNG_SCALE) -> list[bytes]:
    """The AmneziaVPN app's series of QR codes for a `vpn://` key, as PNGs in order."""
    return [qr_png(chunk, scale=scale) for chunk in qr_chunks(key)]


def _code(text: str) -> Any:
    try:
        import segno
    except ImportError:
        raise MissingExtra(
            "QR codes need the 'segno' package: pip install 'awgd-client[config]' (Debian: apt install python3-segno)"
        ) from None
    try:
        # Byte mode in UTF-8 with no ECI header: what the apps' scanners read as the text.
        return segno.make(text, error="L", mode="byte", encoding="utf-8", micro=False, boost_error=False)
    except segno.DataOverflowError:
        raise ValueError(
            f"{len(text.encode())} bytes do not fit one QR code; send the file or the key's QR series"
        ) from None
