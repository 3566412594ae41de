"""Events: the changes a bot may want to tell a user about (docs/API.md, "Events").

Each is stored in the ledger with an id that only grows, in the same transaction as the
change it reports, and kept at least RETENTION_DAYS, so a client that was away misses
nothing: it asks `events.list` from the last id it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# docs/API.md ("events.list"): events are kept 30 days.
RETENTION_DAYS = 30
MAX_LIST_LIMIT = 1000
TYPES = (
    "peer.added",
    "peer.removed",
    "peer.rekeyed",
    "peer.blocked",
    "peer.unblocked",
    "peer.throttled",
    "peer.unthrottled",
    "quota.warning",
    "quota.exceeded",
    "plan.renewed",
    "plan.expired",
    "interface.down",
    "interface.up",
    "peer.stalled",
    "peer.recovered",
)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    at: int  # Unix seconds
    interface: str | None
    public_key: str | None
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # given by the ledger
