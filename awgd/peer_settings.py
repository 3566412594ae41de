"""A peer's settings: what an admin decided about it (awgd.peer_admin), which the ledger
keeps and the plans' rules read (awgd.plans)."""

from __future__ import annotations

from dataclasses import dataclass

from awgd.quota import Plan
from awgd.shaping import RateLimit


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What an admin decided about a peer (awgd.peer_admin); the ledger keeps it."""

    label: str | None = None
    allowed_ips: tuple[str, ...] = ()  # its own: what unblocking restores
    blocked: tuple[str, ...] = ()  # the reasons it is blocked, sorted; () = not blocked
    plan: Plan | None = None  # awgd.quota
    rate_limit: RateLimit | None = None  # its own speed limit (peer.limit; awgd.shaping)
    throttled: int | None = None  # kbit/s both ways while a throttle plan's quota is used up


NO_SETTINGS = Settings()
