"""What the API calls a public key, an interface name and a sort order: one rule each.

The daemon imports these (the client never imports the daemon), so the config file, the
dump parser, the RPC params and every client check names the same way.
"""

from __future__ import annotations

import re
from typing import Final

# Base64 of 32 bytes: 43 characters, the last of which carries only 4 bits, then one "=".
KEY_PATTERN: Final = r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="
_KEY_RE: Final = re.compile(KEY_PATTERN, re.ASCII)

# A key in base64: 32 bytes, padded.
KEY_CHARS: Final = 44

# The kernel's IFNAMSIZ is 16 bytes including the terminating NUL.
INTERFACE_NAME_MAX_BYTES: Final = 15
# What the kernel's dev_valid_name() refuses inside a name: '/', ':', and what its isspace()
# calls space, which includes 0xa0 (the kernel's ctype table is Latin-1). NUL ends a name.
_NOT_IN_A_NAME: Final = frozenset(b"/: \t\n\v\f\r\xa0\x00")

# traffic.list's orders; byte and handshake sorts are descending.
LIST_SORTS: Final = ("total", "rx", "tx", "handshake", "public_key", "rate")


def is_public_key(value: object) -> bool:
    return isinstance(value, str) and _KEY_RE.fullmatch(value) is not None


def key_problem(value: object) -> str:
    """Why `value` is not a key, in words that fit what was given (the daemon's params and
    awgctl say it alike)."""
    if not isinstance(value, str):
        return f"a key is a string, the base64 of 32 bytes ({KEY_CHARS} characters)"
    if len(value) != KEY_CHARS:
        return f"a key is the base64 of 32 bytes, {KEY_CHARS} characters (this has {len(value)})"
    return f"it has {KEY_CHARS} characters, but a key is the base64 of 32 bytes (A-Z a-z 0-9 + /, ending in =)"


def interface_name_problem(name: object) -> str | None:
    """Why `name` is not an interface name as the kernel defines it, or None when it is one."""
    if not isinstance(name, str):
        return "must be a string"
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        return "must not be empty"
    if len(raw) > INTERFACE_NAME_MAX_BYTES:
        return f"is longer than {INTERFACE_NAME_MAX_BYTES} bytes"
    if raw in (b".", b".."):
        return "must not be . or .."
    if not _NOT_IN_A_NAME.isdisjoint(raw):
        return "must not contain /, :, whitespace or NUL"
    return None


def is_interface_name(name: object) -> bool:
    return interface_name_problem(name) is None
