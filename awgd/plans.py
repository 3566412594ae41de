"""Plans as pure rules: where a planned peer stands in its window, and what a sample or an
admin's change decides about it (the arithmetic itself is awgd.quota's). Plain data in,
decisions (`Judged`) out; the books apply them (awgd.books.Books.judge, Books.apply) and
this module never sees the books.

A sample judges a planned peer only when its booking carries it past its trigger (the
next threshold or the limit, awgd.quota.trigger) or when an instant at which some verdict
changes by itself has passed (a window's start, an expiry: `Books.plan_due`, which the
scheduler also wakes for). Everything else costs one attribute read per moving peer.

What a judgement decides (new block reasons, progress, events) goes into the sample's
entry, so the ledger writes it in the sample's own transaction; the books apply it once
the ledger has it (Books.commit). The live interface follows at the enforcement after the
sample (awgd.peer_admin).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from awgd.events import Event
from awgd.fleet_plans import FleetChanges
from awgd.peer_settings import Settings
from awgd.plan_windows import RESETS, Window, window_containing
from awgd.quota import (
    BLOCK,
    MAX_WARN_AT,
    OVER_QUOTA,
    PLAN_REASONS,
    QUOTA,
    THROTTLE,
    Plan,
    Progress,
    Verdict,
    iso,
    judge,
    next_instant,
)
from awgd.shaping import MAX_KBIT, MIN_KBIT, is_kbit


class Planned(Protocol):
    """What the rules read of a peer (awgd.books.PeerBook has it)."""

    @property
    def interface(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def key(self) -> tuple[str, str]: ...
    @property
    def allowed_ips(self) -> tuple[str, ...]: ...
    @property
    def lifetime_rx(self) -> int: ...
    @property
    def lifetime_tx(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PlanState:
    progress: Progress
    window: Window  # the window progress.window_start begins


@dataclass(slots=True)
class Judged:
    """What judgements decided, as the ledger stores it: settings and progress by peer
    (None: the progress row goes), and events."""

    settled: dict[tuple[str, str], Settings]
    states: dict[tuple[str, str], PlanState | None]
    events: list[Event]
    fleet: FleetChanges = field(default_factory=FleetChanges)  # fleet plans' state (awgd.fleet_plans)

    @classmethod
    def nothing(cls) -> Judged:
        return cls({}, {}, [])

    def __bool__(self) -> bool:
        return bool(self.settled or self.states or self.events or self.fleet)


def lifetime(book: Planned) -> int:
    return book.lifetime_rx + book.lifetime_tx


def window_at(plan: Plan, instant: datetime, zone: ZoneInfo, schedule: str) -> Window:
    return window_containing(instant, plan.reset, plan.anchor, zone, schedule)


def verdict(
    plan: Plan, state: PlanState, total: int, instant: datetime, *, zone: ZoneInfo, schedule: str
) -> tuple[Verdict, PlanState]:
    """The plan's verdict on the peer at `instant`, its lifetime total being `total`."""
    window = state.window if instant in state.window else window_at(plan, instant, zone, schedule)
    found = judge(plan, state.progress, window, total, int(instant.timestamp()), renews=plan.reset != "none", zone=zone)
    moved_on = found.progress.window_start != state.progress.window_start
    return found, PlanState(found.progress, window if moved_on else state.window)


def decide(book: Planned, settings: Settings, found: Verdict, at: int, judged: Judged) -> Settings:
    """Record a verdict: the block reasons it holds, its events, and the block events of
    the reasons it adds or lifts; for a throttle plan, a used-up quota slows the peer
    (`throttled`) instead of blocking it. Returns the settings after."""
    events = [Event(kind, at, book.interface, book.public_key, data) for kind, data in found.events]
    held, throttle = found.reasons, None
    plan = settings.plan
    if plan is not None and plan.over_quota == THROTTLE and QUOTA in held:
        held, throttle = held - {QUOTA}, plan.throttle_kbit
    if throttle != settings.throttled:
        events.append(throttle_event(book, throttle, at))
        settings = replace(settings, throttled=throttle)
        judged.settled[book.key] = settings
    reasons = tuple(sorted((set(settings.blocked) - PLAN_REASONS) | held))
    if reasons != settings.blocked:
        settings = judged.settled[book.key] = reblocked(book, settings, reasons, at, events)
    judged.events.extend(events)
    return settings


def throttle_event(book: Planned, kbit: int | None, at: int) -> Event:
    """peer.throttled to `kbit`, or peer.unthrottled (None)."""
    if kbit is not None:
        return Event("peer.throttled", at, book.interface, book.public_key, {"kbit": kbit})
    return Event("peer.unthrottled", at, book.interface, book.public_key, {})


def reblocked(book: Planned, settings: Settings, reasons: tuple[str, ...], at: int, events: list[Event]) -> Settings:
    """The settings with the block reasons `reasons` (sorted), keeping the peer's own allowed
    IPs (what unblocking restores); the block events of each reason added, and of the last
    one lifted, go to `events`. A node plan's rules and the fleet's both block through it."""
    added = sorted(set(reasons) - set(settings.blocked))
    lifted = sorted(set(settings.blocked) - set(reasons))
    for reason in added:
        data = {"reason": reason, "reasons": list(reasons)}
        events.append(Event("peer.blocked", at, book.interface, book.public_key, data))
    if not reasons and lifted:
        events.append(Event("peer.unblocked", at, book.interface, book.public_key, {"reason": lifted[-1]}))
    own = settings.allowed_ips or book.allowed_ips
    return replace(settings, allowed_ips=own, blocked=reasons)


def next_due(planned: Iterable[tuple[Plan, PlanState]]) -> int | None:
    """The earliest instant at which some plan's verdict changes by itself."""
    found = [
        instant for plan, state in planned if (instant := next_instant(plan, state.progress, state.window)) is not None
    ]
    return min(found) if found else None


# ---- plan.set params --------------------------------------------------------------------


class BadPlan(ValueError):
    """A plan.set param that is not valid; the message names it."""


def parse_plan(params: dict[str, Any], today: date) -> Plan:
    """A Plan from plan.set's params (docs/API.md); raises BadPlan."""
    limit = params.get("limit_bytes")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise BadPlan("limit_bytes must be an integer >= 0 or null")
    if limit is not None and limit > MAX_LIMIT_BYTES:
        raise BadPlan(f"limit_bytes must be at most {MAX_LIMIT_BYTES}")
    reset = params.get("reset", "period")
    if reset not in RESETS:
        raise BadPlan(f"reset must be one of {', '.join(RESETS)}")
    anchor_text = params.get("anchor")
    if anchor_text is None:
        anchor = today
    else:
        if not isinstance(anchor_text, str):
            raise BadPlan("anchor must be a date YYYY-MM-DD")
        try:
            anchor = date.fromisoformat(anchor_text)
        except ValueError:
            raise BadPlan("anchor must be a date YYYY-MM-DD") from None
        if len(anchor_text) != 10:
            raise BadPlan("anchor must be a date YYYY-MM-DD")
        if not EARLIEST_ANCHOR <= anchor <= LATEST_ANCHOR:
            raise BadPlan(f"anchor must be from {EARLIEST_ANCHOR} to {LATEST_ANCHOR}")
    expires = params.get("expires_at")
    expires_at = None
    if expires is not None:
        if not isinstance(expires, str):
            raise BadPlan("expires_at must be an ISO 8601 time with an offset, or null")
        try:
            when = datetime.fromisoformat(expires)
        except ValueError:
            raise BadPlan("expires_at must be an ISO 8601 time with an offset, or null") from None
        if when.tzinfo is None:
            raise BadPlan("expires_at must have an offset (e.g. +03:00 or Z)")
        try:
            expires_at = int(when.astimezone(UTC).timestamp())
        except (OverflowError, ValueError):
            expires_at = LATEST_INSTANT + 1
        if not 0 <= expires_at <= LATEST_INSTANT:
            raise BadPlan(f"expires_at must be from 1970 to {datetime.fromtimestamp(LATEST_INSTANT, UTC).date()}")
    warn = params.get("warn_at", [0.8])
    if not isinstance(warn, list) or len(warn) > MAX_WARN_AT:
        raise BadPlan(f"warn_at must be a list of at most {MAX_WARN_AT} fractions")
    for fraction in warn:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
            raise BadPlan("warn_at must hold fractions f with 0 < f < 1")
    over_quota = params.get("over_quota", BLOCK)
    if over_quota not in OVER_QUOTA:
        raise BadPlan(f"over_quota must be one of {', '.join(OVER_QUOTA)}")
    throttle = params.get("throttle_kbit")
    if over_quota == THROTTLE:
        if not is_kbit(throttle):
            raise BadPlan(f"throttle_kbit must be an integer from {MIN_KBIT} to {MAX_KBIT} with over_quota throttle")
    elif throttle is not None:
        raise BadPlan("throttle_kbit is only for over_quota throttle")
    warned = tuple(sorted({float(f) for f in warn}))
    return Plan(limit, reset, anchor, expires_at, warned, over_quota, throttle)


def plan_json(plan: Plan) -> dict[str, Any]:
    """How the ledger and the API write a plan's own fields."""
    return {
        "limit_bytes": plan.limit_bytes,
        "reset": plan.reset,
        "anchor": plan.anchor.isoformat(),
        "expires_at": None if plan.expires_at is None else iso(plan.expires_at),
        "warn_at": list(plan.warn_at),
        "over_quota": plan.over_quota,
        "throttle_kbit": plan.throttle_kbit,
    }


def plan_from_json(data: dict[str, Any]) -> Plan:
    expires = data.get("expires_at")
    return Plan(
        data["limit_bytes"],
        data["reset"],
        date.fromisoformat(data["anchor"]),
        # A ledger written before instants were bounded may hold one no zone can show.
        None if expires is None else min(int(datetime.fromisoformat(expires).timestamp()), LATEST_INSTANT),
        tuple(data["warn_at"]),
        data.get("over_quota", BLOCK),  # plans stored before throttles were: block
        data.get("throttle_kbit"),
    )


# 2**60 bytes (an exbibyte): beyond anything a peer moves, and far inside SQLite's integers.
MAX_LIMIT_BYTES = 2**60
# Instants and dates a plan may name. Every one must be shown in any zone and its windows
# reckoned: "9999-12-31T23:59:59Z" east of UTC is in year 10000, which datetime cannot hold,
# and was stored, after which every traffic.list broke off mid-line (the review's D13).
LATEST_INSTANT = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp())
EARLIEST_ANCHOR = date(1970, 1, 2)
LATEST_ANCHOR = date(2199, 12, 31)
