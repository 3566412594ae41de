"""Fleet plans as pure rules (docs/FLEET.md, "Fleet plans"): one quota over
a user's peers on several nodes, decided on each node from its own live figures and what the
central database last said the user's peers on the other nodes used. Plain data in, plain
data out; the books keep the state (awgd.books), the ledger stores it (awgd.ledger).

A node knows its own share exactly (its lifetime totals, at every sample) and the others'
only as of the centre's last answer (`FleetUser.others`, `as_of` on the centre's clock). It
blocks when its own share plus the others' reaches the limit, so that while the centre is
away a node still blocks no later than its own share alone reaches it. Three rules keep a
block right:

- **Older news never wins.** A sync whose `as_of` is older than the one the node holds is
  ignored as a whole (`accept`): data read before a decision cannot undo it.
- **Time only moves windows forward.** A share whose window is earlier than the plan's
  current one starts again (`rolled`), a later one is kept (a clock that jumped back).
- **The others' figure counts only in its own window**: at a window's start it counts
  nothing until the centre speaks for the new window, so the node lifts the block at that
  instant by itself, the centre reachable or not.

What a node's devices sent while they were blocked (for any reason) is booked and is not
usage, as for a node's plans (awgd.quota.Progress.blocked).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from awgd.plan_windows import Window, window_containing
from awgd.quota import THROTTLE, Plan

FLEET_QUOTA = "fleet_quota"
FLEET_EXPIRED = "fleet_expired"
FLEET_REASONS = frozenset({FLEET_QUOTA, FLEET_EXPIRED})
# "period" is each node's own billing period: nodes with other schedules would not share
# a window. The others are calendar windows on the plan's own time zone.
FLEET_RESETS = ("month", "week", "day", "none")
# A fleet user's id is the bot's (its user id, an order number): printable, short.
MAX_USER_CHARS = 128
# How far ahead of a node's clock the centre's may be and still order its words: clocks
# minutes apart are common; a day apart, one of them is wrong.
MAX_AS_OF_AHEAD_SECONDS = 86400
# More fleet users on one node than peers a node holds (bench: 50,000) would be a mistake.
MAX_FLEET_USERS = 100_000

PeerKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class FleetUser:
    """A fleet user as this node knows it: the plan, and the centre's last word on the
    others' usage."""

    user: str
    plan: Plan  # reset one of FLEET_RESETS
    zone: str  # IANA: the plan's windows are on it, the same on every node
    version: int  # the centre's: bumped by every change of the plan
    as_of: float  # Unix seconds on the centre's clock of the news that last changed it
    others_window: int  # Unix seconds: the window start `others` belongs to
    others: int  # bytes the user's peers on other nodes used in that window
    members: frozenset[PeerKey]  # its peers on this node

    def window(self, instant: datetime) -> Window:
        return window_containing(instant, self.plan.reset, self.plan.anchor, ZoneInfo(self.zone), "")


@dataclass(frozen=True, slots=True)
class Share:
    """One peer's part of its fleet user's window, on this node."""

    user: str
    window_start: int  # Unix seconds
    start_lifetime: int  # the peer's lifetime rx + tx when the window (or its membership) began
    blocked: int = 0  # booked in the window while the peer was blocked: not usage

    def used(self, lifetime: int) -> int:
        return max(0, lifetime - self.start_lifetime - self.blocked)


@dataclass(slots=True)
class FleetChanges:
    """What a judgement or a sync changed of the fleet state (None: it goes), as the ledger
    stores it with the rest of a sample or a sync (awgd.plans.Judged.fleet)."""

    users: dict[str, FleetUser | None] = field(default_factory=dict)
    shares: dict[PeerKey, Share | None] = field(default_factory=dict)
    as_of: float | None = None  # the centre's clock of the news a sync brought
    # Where each judged member is judged next (member_triggers); not stored: the books' alone.
    triggers: dict[PeerKey, int | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.users or self.shares or self.as_of is not None or self.triggers)


def accept(held: float | None, news: float, now: float) -> bool:
    """Whether the centre's word of `news` (its clock) replaces the one of `held`: never when
    it is older, unless the one held is more than a day ahead of this node's clock `now`
    (a database clock set wrong, then put right, would otherwise have every true word after
    it ignored; a node whose own clock is far behind takes every word)."""
    return held is None or news >= held or held > now + MAX_AS_OF_AHEAD_SECONDS


def rolled(share: Share, window_start: int, lifetime: int) -> Share:
    """The share in the window starting at `window_start`: a new one from `lifetime` when
    that window is later than the share's."""
    if window_start > share.window_start:
        return Share(share.user, window_start, lifetime)
    return share


def joined(user: str, window_start: int, lifetime: int, booked: int) -> Share:
    """A peer's share when it joins its user mid-window, `booked` bytes of the window being
    booked already (they count, as a node's plan counts a window's earlier days)."""
    return Share(user, window_start, lifetime - max(0, min(booked, lifetime)))


def others_in(user: FleetUser, window_start: int) -> int:
    """The others' usage in the window starting at `window_start`: their figure only if it
    belongs to that window."""
    return user.others if user.others_window == window_start else 0


def used(user: FleetUser, window_start: int, own: Iterable[tuple[Share, int]]) -> int:
    """The user's usage in the window: the others' plus this node's shares of it (each with
    the peer's lifetime total), shares of other windows counting nothing."""
    mine = sum(share.used(total) for share, total in own if share.window_start == window_start)
    return others_in(user, window_start) + mine


def held(plan: Plan, usage: int, at: int) -> frozenset[str]:
    """The fleet reasons that hold: the limit reached (for a block plan), the plan expired."""
    reasons = set()
    if plan.limit_bytes is not None and usage >= plan.limit_bytes and plan.over_quota != THROTTLE:
        reasons.add(FLEET_QUOTA)
    if plan.expires_at is not None and at >= plan.expires_at:
        reasons.add(FLEET_EXPIRED)
    return frozenset(reasons)


def hot(plan: Plan, usage: int) -> bool:
    """Past its last warning threshold and below its limit: the next samples decide the
    cut-off, so they come more often (as awgd.quota.hot for a node's plan)."""
    limit = plan.limit_bytes
    if limit is None:
        return False
    last = plan.warn_at[-1] if plan.warn_at else 0.0
    return last * limit <= usage < limit


def margin(plan: Plan, usage: int) -> int | None:
    """Bytes of usage until traffic alone changes the verdict (the limit, or the last warning
    threshold where samples come faster); None when no amount of traffic does."""
    limit = plan.limit_bytes
    if limit is None or usage >= limit:
        return None
    last = math.ceil(plan.warn_at[-1] * limit) if plan.warn_at else 0
    return (last if usage < last else limit) - usage


def member_triggers(room: int | None, totals: list[int]) -> list[int | None]:
    """Each member's lifetime total at which its user is judged again, `room` being the
    user's margin and `totals` its members' lifetime totals now: each member gets an equal
    part, so that while every member stays below its trigger the sum stays below the margin
    (a sample looks at one number per moving member, as for a node's plan's trigger)."""
    if room is None:
        return [None] * len(totals)
    part = max(1, room // max(1, len(totals)))
    return [total + part for total in totals]


def throttle(plan: Plan, usage: int) -> int | None:
    """The speed a throttle plan holds its user's peers to once the limit is reached."""
    if plan.over_quota == THROTTLE and plan.limit_bytes is not None and usage >= plan.limit_bytes:
        return plan.throttle_kbit
    return None


def reasons_after(blocked: tuple[str, ...], fleet: frozenset[str]) -> tuple[str, ...]:
    """A peer's block reasons with the fleet's replaced by `fleet`; the others stay."""
    return tuple(sorted((set(blocked) - FLEET_REASONS) | fleet))


def next_instant(user: FleetUser, window: Window, at: int) -> int | None:
    """When the user's verdict changes without traffic, after `at`: its window's end, or
    its expiry."""
    instants = [int(window.end.timestamp())] if window.end is not None else []
    if user.plan.expires_at is not None and user.plan.expires_at > at:
        instants.append(user.plan.expires_at)
    return min(instants) if instants else None


def booked_blocked(share: Share, amount: int) -> Share:
    return replace(share, blocked=share.blocked + amount)


def unix(instant: datetime) -> int:
    return int(instant.astimezone(UTC).timestamp())
