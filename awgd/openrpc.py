"""rpc.discover's answer: the API as an OpenRPC 1.2 document, made from the daemon's own method
table (awgd.api.METHODS), so a client generated from it, the docs and the daemon cannot drift.

Each param has one schema, whatever method takes it (a name means one thing across the API);
a method's own bounds beyond that (a `limit`'s maximum) are docs/API.md's. Results are
described by name only: their fields are docs/API.md's and the client library's models.
Pure: the table in, a JSON-ready dict out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from awgd.shaping import MAX_KBIT, MIN_KBIT
from awgd_client.names import KEY_PATTERN, LIST_SORTS

OPENRPC_VERSION = "1.2.6"

_KEY = {"type": "string", "pattern": f"^{KEY_PATTERN}$"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_KBIT = {"type": ["integer", "null"], "minimum": MIN_KBIT, "maximum": MAX_KBIT}

PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "public_key": {**_KEY, "description": "the peer's public key (base64, 44 characters)"},
    "new_public_key": {**_KEY, "description": "the key that replaces the peer's (peer.rekey)"},
    "interface": {"type": "string", "maxLength": 15, "description": "an interface name, e.g. awg0"},
    "fresh": {"type": "boolean", "description": "take a sample first (at most one per 5 s)"},
    "sort": {"enum": list(LIST_SORTS)},
    "limit": {"type": "integer", "minimum": 1},
    "offset": {"type": "integer", "minimum": 0},
    "present_only": {"type": "boolean"},
    "cursor": {"type": "string", "description": "as a previous traffic.changes answer gave it"},
    "after": {"type": "string", "description": "where a page of the same cursor left off"},
    "granularity": {"enum": ["period", "day", "hour"]},
    "allowed_ips": {"type": "array", "items": {"type": "string"}, "description": "CIDRs"},
    "preshared_key": {**_KEY, "description": "sent to the tool on its standard input, never stored"},
    "persistent_keepalive": {"type": "integer", "minimum": 0, "maximum": 65535},
    "label": {**_TEXT_OR_NULL, "description": "null removes it"},
    "outside_subnets": {"type": "boolean", "description": "allow allowed IPs outside the interface's subnets"},
    "since": {"type": "integer", "minimum": 0, "description": "an event id"},
    "types": {"type": "array", "items": {"type": "string"}},
    "limit_bytes": {"type": ["integer", "null"], "minimum": 0, "description": "null: no limit"},
    "reset": {"enum": ["period", "month", "week", "day", "none"]},
    "anchor": {"type": "string", "format": "date"},
    "expires_at": {**_TEXT_OR_NULL, "format": "date-time"},
    "down_kbit": {**_KBIT, "description": "kbit/s to the peer (the user's download); null: no limit"},
    "up_kbit": {**_KBIT, "description": "kbit/s from the peer (the user's upload); null: no limit"},
    "over_quota": {"enum": ["block", "throttle"], "description": "what a used-up quota does (default block)"},
    "throttle_kbit": {**_KBIT, "type": "integer", "description": "required with over_quota throttle"},
    "warn_at": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
    "users": {"type": "array", "items": {"type": "object"}, "description": "fleet users (docs/API.md, fleet.sync)"},
    "as_of": {"type": "string", "format": "date-time", "description": "the central database's clock"},
    "more": {"type": "boolean", "description": "another page of the same as_of follows"},
}


class Described(Protocol):
    """What the document reads of a method (awgd.api.Method has it)."""

    @property
    def params(self) -> tuple[str, ...]: ...
    @property
    def required(self) -> tuple[str, ...]: ...
    @property
    def admin(self) -> bool: ...
    @property
    def fleet(self) -> bool: ...
    @property
    def summary(self) -> str: ...


def document(methods: Mapping[str, Described], version: str) -> dict[str, Any]:
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "awgd",
            "version": version,
            "description": "Traffic accounting, quotas and control of AmneziaWG and WireGuard peers, "
            "over a Unix socket (docs/API.md). Methods marked x-admin need root or an admin group, "
            "x-fleet root or a fleet group.",
        },
        "methods": [
            {
                "name": name,
                "summary": method.summary,
                "paramStructure": "by-name",
                "params": [
                    {"name": param, "required": param in method.required, "schema": PARAM_SCHEMAS[param]}
                    for param in method.params
                ],
                "result": {"name": f"{name} result", "schema": {"type": "object"}},
                "x-admin": method.admin,
                **({"x-fleet": True} if method.fleet else {}),
            }
            for name, method in methods.items()
        ],
    }
