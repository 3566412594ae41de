"""The quota rule: what a peer's plan says about it now. Pure.

A plan (docs/API.md, "plan.set") has a limit, windows (awgd.plan_windows) and an expiry. Its
`Progress` is what awgd has found out and told about in the current window: where the
window began in the peer's lifetime total, what `traffic.reset` removed in it, which
thresholds were announced, whether the limit was reached, whether the plan expired.
`judge` compares a plan, its progress, the peer's lifetime total and an instant, and says
which block reasons hold, which events to emit, and the progress after. Emitting an event
and recording that it was emitted are one step (the ledger writes both in one transaction),
so every event is emitted exactly once.

Usage in a window is the peer's lifetime total now minus its lifetime total when the window
began (`start_lifetime`), minus what resets removed in it, minus what was booked while the
peer was blocked (`blocked`: its device keeps sending, WireGuard counts those packets before
it drops them, and they are no service): the lifetime total only grows and counts every
booked byte once, so the window's usage does too.

Time only moves windows forward: an instant in a window earlier than the progress's (the
clock jumped back) counts in the window already reached, so a jump never renews a window
twice, never announces anything twice and never lifts a block early. "expired" is lifted
only by a new plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from awgd.plan_windows import Window

QUOTA = "quota"
EXPIRED = "expired"
# What a used-up quota does (plan.set's over_quota): cut the peer off, or slow it down.
BLOCK, THROTTLE = "block", "throttle"
OVER_QUOTA = (BLOCK, THROTTLE)
PLAN_REASONS = frozenset({QUOTA, EXPIRED})
DEFAULT_WARN_AT = (0.8,)
# More thresholds than this would be a message per few percent of the quota: a mistake.
MAX_WARN_AT = 10


@dataclass(frozen=True, slots=True)
class Plan:
    limit_bytes: int | None  # None: no limit (an expiry only, or just the usage shown)
    reset: str  # awgd.plan_windows.RESETS
    anchor: date
    expires_at: int | None = None  # Unix seconds
    warn_at: tuple[float, ...] = DEFAULT_WARN_AT  # sorted fractions of the limit, 0 < f < 1
    over_quota: str = BLOCK  # OVER_QUOTA
    throttle_kbit: int | None = None  # both ways, while a THROTTLE plan's quota is used up

    def same_limits(self, other: Plan) -> bool:
        """Whether announcements made under `other` still hold under this plan."""
        return (self.limit_bytes, self.warn_at) == (other.limit_bytes, other.warn_at)


@dataclass(frozen=True, slots=True)
class Progress:
    window_start: int  # Unix seconds
    start_lifetime: int  # the peer's lifetime rx + tx when the window began
    removed: int = 0  # taken off this window's usage by traffic.reset
    warned: tuple[float, ...] = ()  # thresholds announced in this window
    exceeded: bool = False  # quota.exceeded announced in this window
    expired: bool = False  # plan.expired announced (for this plan, in any window)
    blocked: int = 0  # booked in this window while the peer was blocked: not usage

    def used(self, lifetime: int) -> int:
        return max(0, lifetime - self.start_lifetime - self.removed - self.blocked)

    def booked_blocked(self, amount: int) -> Progress:
        """`amount` more bytes booked while the peer was blocked."""
        return replace(self, blocked=self.blocked + amount)


@dataclass(frozen=True, slots=True)
class Verdict:
    progress: Progress
    reasons: frozenset[str]  # of PLAN_REASONS: those that hold now
    events: tuple[tuple[str, dict[str, Any]], ...] = field(default=())


def iso(unix: int, zone: tzinfo = UTC) -> str:
    return datetime.fromtimestamp(unix, zone).isoformat()


def start(window: Window, lifetime: int, booked: int = 0, removed: int = 0) -> Progress:
    """Progress for a window in which `booked` bytes were booked already (the ledger's day
    buckets, when a plan is set mid-window), of which resets removed `removed`."""
    return Progress(int(window.start.timestamp()), lifetime - booked, min(removed, booked))


def judge(
    plan: Plan, progress: Progress, window: Window, lifetime: int, instant: int, *, renews: bool, zone: tzinfo = UTC
) -> Verdict:
    """The plan's verdict at `instant`, `window` being the plan's window containing it and
    `lifetime` the peer's lifetime total then. `renews` says whether windows renew (every
    reset but "none"): a renewal is announced. Instants in events are written in `zone`."""
    events: list[tuple[str, dict[str, Any]]] = []
    window_start = int(window.start.timestamp())
    # The clock went back into an earlier window: the traffic still counts in the window
    # already reached, which is not renewed again when the clock comes forward.
    if window_start > progress.window_start:
        previous = progress.used(lifetime)
        lifted = QUOTA in _held(plan, progress, lifetime)
        progress = Progress(window_start, lifetime, expired=progress.expired)
        if renews:
            end = None if window.end is None else window.end.astimezone(zone).isoformat()
            renewed = {"start": window.start.astimezone(zone).isoformat(), "end": end, "previous_used_bytes": previous}
            events.append(("plan.renewed", {**renewed, "quota_lifted": lifted}))
    used = progress.used(lifetime)
    limit = plan.limit_bytes
    if limit is not None:
        crossed = tuple(f for f in plan.warn_at if f not in progress.warned and used >= f * limit)
        for threshold in crossed:
            events.append(("quota.warning", {"used_bytes": used, "limit_bytes": limit, "threshold": threshold}))
        if crossed:
            progress = replace(progress, warned=tuple(sorted({*progress.warned, *crossed})))
        if used >= limit and not progress.exceeded:
            events.append(("quota.exceeded", {"used_bytes": used, "limit_bytes": limit}))
            progress = replace(progress, exceeded=True)
    if plan.expires_at is not None and instant >= plan.expires_at and not progress.expired:
        events.append(("plan.expired", {"expires_at": iso(plan.expires_at, zone)}))
        progress = replace(progress, expired=True)
    return Verdict(progress, _held(plan, progress, lifetime), tuple(events))


def _held(plan: Plan, progress: Progress, lifetime: int) -> frozenset[str]:
    reasons = set()
    if plan.limit_bytes is not None and progress.used(lifetime) >= plan.limit_bytes:
        reasons.add(QUOTA)
    if progress.expired:
        reasons.add(EXPIRED)
    return frozenset(reasons)


def carried(old: Plan, new: Plan, progress: Progress) -> Progress:
    """The progress a plan replaced within the same window leaves to its successor: the
    window's usage stays; announcements made under other limits, or an expiry announced for
    another instant, are made again if they hold."""
    if not new.same_limits(old):
        progress = replace(progress, warned=(), exceeded=False)
    if new.expires_at != old.expires_at:
        progress = replace(progress, expired=False)
    return progress


def moved(progress: Progress, lifetime: int, new_lifetime: int) -> Progress:
    """The progress a rekeyed peer's plan carries to its new key, whose lifetime total is
    `new_lifetime`: the window's usage stays what it was (a rekey never gives a quota back),
    and what the announcements said stays said."""
    used = progress.used(lifetime)
    return replace(progress, start_lifetime=new_lifetime - used, removed=0, blocked=0)


def after_reset(progress: Progress, lifetime: int, removed: int) -> Progress:
    """`traffic.reset` removed `removed` bytes from the peer's current period. What it took
    from this window is the part of it the window had used: all of the window's usage when
    the window began inside the period, and all of `removed` when the period began inside
    the window (either way, the smaller of the two)."""
    taken = min(removed, progress.used(lifetime))
    return replace(progress, removed=progress.removed + taken)


def hot(plan: Plan, progress: Progress, lifetime: int) -> bool:
    """Above its last warning threshold and not yet at its limit: the next samples decide
    the cut-off, so they come more often (awgd.scheduler)."""
    limit = plan.limit_bytes
    if limit is None:
        return False
    used = progress.used(lifetime)
    last = plan.warn_at[-1] if plan.warn_at else 0.0
    return last * limit <= used < limit


def trigger(plan: Plan, progress: Progress, lifetime: int) -> int | None:
    """The lifetime total at which traffic alone next changes the verdict (a threshold, the
    limit); None when no amount of traffic does. A sample judges a peer only past it."""
    limit = plan.limit_bytes
    if limit is None:
        return None
    pending = [math.ceil(f * limit) for f in plan.warn_at if f not in progress.warned]
    if progress.used(lifetime) < limit:  # not blocked for it now (announced or not)
        pending.append(limit)
    return progress.start_lifetime + progress.removed + progress.blocked + min(pending) if pending else None


def next_instant(plan: Plan, progress: Progress, window: Window) -> int | None:
    """When the plan's verdict changes without traffic: its window's end, or its expiry."""
    instants = []
    if window.end is not None:
        instants.append(int(window.end.timestamp()))
    if plan.expires_at is not None and not progress.expired:
        instants.append(plan.expires_at)
    return min(instants) if instants else None
