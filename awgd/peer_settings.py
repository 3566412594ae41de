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
    # The same for its fleet user's throttle plan (awgd.fleet_plans): kept apart, so that the
    # node's plan and the fleet's each lift only their own.
    fleet_throttled: int | None = None

    @property
    def throttle(self) -> int | None:
        """The speed the plans hold it to (the lower of the two), kbit/s; None: not throttled."""
        if self.fleet_throttled is None:
            return self.throttled
        return self.fleet_throttled if self.throttled is None else min(self.throttled, self.fleet_throttled)


NO_SETTINGS = Settings()
