"""What Client and AsyncClient share: the socket to use, timeouts, which calls may be retried.

Each client method is one line over `call`; this module holds what they have in common, so
the blocking and the asyncio shells stay thin (as httpx keeps Client and AsyncClient thin).
"""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import Any

DEFAULT_SOCKET = "/run/awgd/awgd.sock"
SOCKET_ENV = "AWGD_SOCKET"
DEFAULT_TIMEOUT = 5.0
# Methods that may be sent again after a lost connection: they change nothing.
IDEMPOTENT = frozenset(
    {"server.status", "traffic.get", "traffic.list", "traffic.history", "traffic.sample", "events.list", "rpc.discover"}
)
# A change to the server's peers takes a sample before and after, and the tool and a file
# write in between (through `docker exec` on Amnezia's servers): more than a read.
CHANGE_TIMEOUT = 30.0
# AsyncClient.subscribe waits this long before reconnecting, doubling up to the most while
# awgd stays away (a restart takes a few seconds; an outage should not cost a busy loop).
RESUBSCRIBE_FIRST_DELAY = 0.5
RESUBSCRIBE_MAX_DELAY = 10.0
# ... but a socket that stays missing or refusing this long is not a restart: subscribe()
# raises, so the caller (the notifier) says so instead of waiting in silence. A permission
# refusal raises at once: group membership does not change under a running process.
RESUBSCRIBE_GIVE_UP_SECONDS = 120.0


class Unset:
    """A param not given (for peer.update, where null means "remove the label")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


def socket_path(explicit: str | None) -> str:
    return explicit or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def params(**values: Any) -> dict[str, Any]:
    """Only the params that were given: the daemon applies its own defaults."""
    return {name: value for name, value in values.items() if value is not None}


def update_params(
    public_key: str,
    interface: str,
    label: Any,
    allowed_ips: list[str] | None,
    persistent_keepalive: int | None,
    *,
    outside_subnets: bool = False,
) -> dict[str, Any]:
    given = params(public_key=public_key, interface=interface, allowed_ips=allowed_ips)
    if outside_subnets:
        given["outside_subnets"] = True
    if persistent_keepalive is not None:
        given["persistent_keepalive"] = persistent_keepalive
    if not isinstance(label, Unset):
        given["label"] = label
    return given


def plan_params(
    interface: str,
    public_key: str,
    *,
    limit_bytes: int | None,
    reset: str | None,
    anchor: date | str | None,
    expires_at: datetime | str | None,
    warn_at: list[float] | None,
    over_quota: str | None = None,
    throttle_kbit: int | None = None,
) -> dict[str, Any]:
    """plan.set's params; limit_bytes None = no limit (the daemon's default too)."""
    return params(
        over_quota=over_quota,
        throttle_kbit=throttle_kbit,
        interface=interface,
        public_key=public_key,
        limit_bytes=limit_bytes,
        reset=reset,
        anchor=anchor.isoformat() if isinstance(anchor, date) else anchor,
        expires_at=expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at,
        warn_at=warn_at,
    )


def limit_params(interface: str, public_key: str, down_kbit: int | None, up_kbit: int | None) -> dict[str, Any]:
    """peer.limit's params: None each way is sent as null (no limit that way)."""
    return {"interface": interface, "public_key": public_key, "down_kbit": down_kbit, "up_kbit": up_kbit}


def rekey_params(interface: str, public_key: str, new_public_key: str, preshared_key: str | None) -> dict[str, Any]:
    return params(
        interface=interface, public_key=public_key, new_public_key=new_public_key, preshared_key=preshared_key
    )


def add_params(
    interface: str,
    public_key: str,
    *,
    allowed_ips: list[str] | None,
    preshared_key: str | None,
    persistent_keepalive: int | None,
    label: str | None,
    outside_subnets: bool = False,
) -> dict[str, Any]:
    return params(
        interface=interface,
        public_key=public_key,
        allowed_ips=allowed_ips,
        preshared_key=preshared_key,
        persistent_keepalive=persistent_keepalive,
        label=label,
        outside_subnets=outside_subnets or None,
    )
