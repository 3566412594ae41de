"""The rows of traffic.changes (docs/API.md): each peer one line of PostgreSQL's COPY text
format, its fields in COLUMNS order, so that awgd-mirror streams a page into COPY as it
comes, with no work per peer, and a reader that wants dicts has `decode`.

The format (PostgreSQL's own, "text" COPY format): fields separated by one TAB; a null is
`\\N`; in text, a backslash, TAB, newline and carriage return are written `\\\\`, `\\t`,
`\\n`, `\\r`; booleans are `t` and `f`; integers in decimal. `blocked` is its reasons
joined by commas (none: empty); `plan` is the plan as JSON (docs/API.md), or null.
"""

from __future__ import annotations

import json
from typing import Any, Final

COLUMNS: Final = (
    "interface",
    "public_key",
    "label",
    "present",
    "latest_handshake",  # Unix seconds; null: never
    "first_seen",  # Unix seconds
    "lifetime_rx",
    "lifetime_tx",
    "period_rx",  # in the answer's `period`
    "period_tx",
    "day_rx",  # in the answer's `day`
    "day_tx",
    "blocked",
    "plan",
)
NULL: Final = "\\N"

_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPES: Final = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def text(value: str | None) -> str:
    """A text field."""
    return NULL if value is None else value.translate(_ESCAPES)


def plan_field(plan: dict[str, Any] | None) -> str:
    return NULL if plan is None else text(json.dumps(plan, separators=(",", ":"), sort_keys=True))


def _unescape(field: str) -> str | None:
    if field == NULL:
        return None
    if "\\" not in field:
        return field
    out, chars = [], iter(field)
    for char in chars:
        out.append(_UNESCAPES.get(next(chars, ""), "") if char == "\\" else char)
    return "".join(out)


def decode(row: str) -> dict[str, Any]:
    """One row as a dict by COLUMNS (ValueError if it is not one)."""
    fields = row.split("\t")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"a traffic.changes row has {len(COLUMNS)} fields, not {len(fields)}")
    found = dict(zip(COLUMNS, fields, strict=True))
    plan = _unescape(found["plan"])
    handshake = found["latest_handshake"]
    return {
        "interface": _unescape(found["interface"]),
        "public_key": _unescape(found["public_key"]),
        "label": _unescape(found["label"]),
        "present": found["present"] == "t",
        "latest_handshake": None if handshake == NULL else int(handshake),
        "first_seen": int(found["first_seen"]),
        **{name: int(found[name]) for name in COLUMNS[6:12]},
        "blocked": found["blocked"].split(",") if found["blocked"] else [],
        "plan": None if plan is None else json.loads(plan),
    }
