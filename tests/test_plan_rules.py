"""The plans' rules (awgd.plans) alone, over plain data, as h11 tests its state machine: what
a verdict decides about a peer's block reasons and events, whatever reasons it already
holds. The arithmetic of the verdict itself is awgd.quota's (tests/test_quota.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from awgd.peer_settings import Settings
from awgd.plans import Judged, PlanState, decide, lifetime, verdict, window_at
from awgd.quota import PLAN_REASONS, Plan, Progress, Verdict, moved, start

ZONE = UTC
MONTHLY = "0 0 1 * *"
AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


@dataclass(frozen=True)
class Peer:
    """A peer as the rules read it (awgd.plans.Planned): no books needed."""

    interface: str = "awg0"
    public_key: str = "K" * 42 + "A="
    allowed_ips: tuple[str, ...] = ("10.8.0.2/32",)
    lifetime_rx: int = 0
    lifetime_tx: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.interface, self.public_key)


reasons = st.sets(st.sampled_from(["admin", "quota", "expired", "abuse"]))


@given(held=reasons, found=st.sets(st.sampled_from(sorted(PLAN_REASONS))), own=st.booleans())
def test_a_verdict_sets_only_the_plans_reasons(held: set[str], found: set[str], own: bool) -> None:
    peer = Peer()
    settings = Settings(label="Dave", allowed_ips=peer.allowed_ips if own else (), blocked=tuple(sorted(held)))
    judged = Judged.nothing()
    after = decide(peer, settings, Verdict(Progress(0, 0), frozenset(found)), 100, judged)
    assert set(after.blocked) == (held - PLAN_REASONS) | found  # an admin's block is never lifted
    assert after.label == "Dave"  # what the verdict does not name stays
    kinds = [(event.type, event.data.get("reason")) for event in judged.events]
    added, lifted = found - held, (held & PLAN_REASONS) - found
    assert sorted(reason for kind, reason in kinds if kind == "peer.blocked") == sorted(added)
    unblocked = [reason for kind, reason in kinds if kind == "peer.unblocked"]
    assert len(unblocked) == (1 if lifted and not after.blocked else 0)
    if set(after.blocked) != held:
        assert judged.settled[peer.key] == after
        assert after.allowed_ips == peer.allowed_ips  # what unblocking restores is kept
    else:
        assert peer.key not in judged.settled  # nothing changed: nothing to store


@given(held=reasons, found=st.sets(st.sampled_from(sorted(PLAN_REASONS))), throttled=st.sampled_from([None, 500, 1000]))
def test_a_throttle_plan_slows_where_a_block_plan_cuts_off(
    held: set[str], found: set[str], throttled: int | None
) -> None:
    peer = Peer()
    plan = Plan(1000, "month", date(2026, 11, 1), over_quota="throttle", throttle_kbit=1000)
    settings = Settings(blocked=tuple(sorted(held)), plan=plan, throttled=throttled)
    judged = Judged.nothing()
    after = decide(peer, settings, Verdict(Progress(0, 0), frozenset(found)), 100, judged)
    assert "quota" not in set(after.blocked) - held  # a used-up quota never blocks a throttle plan
    assert set(after.blocked) == (held - PLAN_REASONS) | (found - {"quota"})
    assert after.throttled == (1000 if "quota" in found else None)
    kinds = [event.type for event in judged.events]
    assert kinds.count("peer.throttled") == (1 if after.throttled is not None and throttled != 1000 else 0)
    assert kinds.count("peer.unthrottled") == (1 if after.throttled is None and throttled is not None else 0)
    if after.throttled != throttled:
        assert judged.settled[peer.key].throttled == after.throttled
    block = decide(
        peer,
        replace(settings, plan=replace(plan, over_quota="block"), throttled=None),
        Verdict(Progress(0, 0), frozenset({"quota"})),
        1,
        Judged.nothing(),
    )
    assert "quota" in block.blocked and block.throttled is None


@given(used=st.integers(0, 3000), limit=st.integers(1, 2000), days=st.integers(0, 60))
def test_a_verdict_blocks_at_the_limit_and_a_new_window_lifts_it(used: int, limit: int, days: int) -> None:
    plan = Plan(limit, "month", date(2026, 11, 1))
    window = window_at(plan, AT, ZONE, MONTHLY)
    peer = Peer(lifetime_rx=used)
    state = PlanState(start(window, 0), window)
    instant = AT + timedelta(days=days)
    found, after = verdict(plan, state, lifetime(peer), instant, zone=ZONE, schedule=MONTHLY)
    if instant in window:
        assert ("quota" in found.reasons) == (used >= limit)
        assert after.window == window
    else:  # a new month: the window renewed, its usage starts from here
        assert "quota" not in found.reasons
        assert after.window == window_at(plan, instant, ZONE, MONTHLY) != window
        assert any(kind == "plan.renewed" for kind, _ in found.events)


counts = st.integers(0, 2**50)


@given(
    progress=st.builds(
        Progress, st.integers(0, 2**40), counts, counts, st.just(()), st.booleans(), st.booleans(), counts
    ),
    lifetime=counts,
    new_lifetime=counts,
    later=counts,
)
def test_a_rekey_carries_the_windows_usage_to_the_new_key(
    progress: Progress, lifetime: int, new_lifetime: int, later: int
) -> None:
    """peer.rekey never gives a quota back: the new key's window starts where the old key's
    stood, and every byte the new key moves later adds to it."""
    carried = moved(progress, lifetime, new_lifetime)
    assert carried.used(new_lifetime) == progress.used(lifetime)
    assert carried.used(new_lifetime + later) == progress.used(lifetime) + later
    assert (carried.window_start, carried.warned, carried.exceeded, carried.expired) == (
        progress.window_start,
        progress.warned,
        progress.exceeded,
        progress.expired,
    )
