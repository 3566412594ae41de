"""A user's device's keys, born here and never sent to awgd (docs/security.md).

X25519 by `cryptography` (Debian: python3-cryptography), the `config` extra:
`pip install './client[config]'`. What it makes is what `awg genkey | awg pubkey` makes: a
clamped private key and its Curve25519 public key, each as 44 characters of base64.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from awgd_client.names import is_public_key

KEY_BYTES = 32  # WireGuard's keys and preshared keys alike


class MissingExtra(ImportError):
    """A part of the library that needs an optional package, without it."""


@dataclass(frozen=True, slots=True, repr=False)
class KeyPair:
    private_key: str
    public_key: str

    def __repr__(self) -> str:  # a traceback or a log line never shows the private key
        return f"KeyPair(public_key={self.public_key!r})"


def generate_key_pair() -> KeyPair:
    return KeyPair(*_pair(secrets.token_bytes(KEY_BYTES)))


def public_key_of(private_key: str) -> str:
    """The public key of a base64 private key (what `awg pubkey` prints)."""
    raw = _decoded(private_key, "private key")
    return _pair(raw)[1]


def generate_preshared_key() -> str:
    """32 random bytes in base64, as `awg genpsk` prints them."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _pair(raw: bytes) -> tuple[str, str]:
    try:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    except ImportError:
        raise MissingExtra(
            "making keys needs the 'cryptography' package: pip install 'awgd-client[config]' "
            "(Debian: apt install python3-cryptography)"
        ) from None
    # Clamped as WireGuard clamps a generated key (RFC 7748): X25519 clamps when it uses the
    # key anyway, but `awg genkey` prints the clamped bytes, and so does this.
    clamped = bytearray(raw)
    clamped[0] &= 248
    clamped[31] = (clamped[31] & 127) | 64
    public = X25519PrivateKey.from_private_bytes(bytes(clamped)).public_key()
    public_raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(bytes(clamped)).decode("ascii"), base64.b64encode(public_raw).decode("ascii")


def _decoded(key: str, what: str) -> bytes:
    if not is_public_key(key):  # the same shape for every WireGuard key
        raise ValueError(f"the {what} is not 44 characters of base64 of 32 bytes")
    return base64.b64decode(key)
