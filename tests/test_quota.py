"""The quota rule (awgd.quota), against a model: random histories of traffic (also traffic
booked while blocked, which is not usage), time passing,
clock jumps back, resets, restarts (the progress stored and read back) and the limit changed
by a new plan within the window, day windows."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from awgd.plan_windows import window_containing
from awgd.quota import EXPIRED, QUOTA, Plan, Progress, after_reset, carried, judge, start, trigger

UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("traffic"), st.integers(0, 600)),
        st.tuples(st.just("blocked traffic"), st.integers(0, 600)),
        st.tuples(st.just("advance"), st.integers(1, 40 * 3600)),
        st.tuples(st.just("back"), st.integers(1, 30 * 3600)),
        st.tuples(st.just("reset"), st.integers(0, 2000)),
        st.tuples(st.just("restart"), st.just(0)),
        st.tuples(st.just("replan"), st.integers(0, 3000)),
    ),
    max_size=40,
)


def window_of(instant: datetime, plan: Plan):  # type: ignore[no-untyped-def]
    return window_containing(instant, plan.reset, plan.anchor, UTC_ZONE, "0 0 1 * *")


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(0, 3000),
    warn_at=st.lists(st.sampled_from([0.25, 0.5, 0.8, 0.9]), max_size=3, unique=True),
    expires_in=st.none() | st.integers(0, 5 * 86400),
    history=steps,
)
def test_the_block_state_and_every_event_follow_the_rules(
    limit: int, warn_at: list[float], expires_in: int | None, history: list[tuple[str, int]]
) -> None:
    expires_at = None if expires_in is None else int(T0.timestamp()) + expires_in
    plan = Plan(limit, "day", date(2026, 11, 1), expires_at, tuple(sorted(warn_at)))
    clock, lifetime = T0, 0
    progress = start(window_of(clock, plan), lifetime)
    set_verdict = judge(plan, progress, window_of(clock, plan), lifetime, int(clock.timestamp()), renews=True)
    progress = set_verdict.progress  # plan.set judges at once
    # The model: usage per window (the latest window the clock has reached), what was announced.
    reached = int(window_of(clock, plan).start.timestamp())
    usage = {reached: 0}
    expired_announced = sum(1 for event, _ in set_verdict.events if event == "plan.expired")
    # Announcements hold per window and per limits ("epoch": a new plan with other limits
    # announces again what its usage already reached).
    epoch = 0
    announced: dict[tuple[int, int, str, float | None], int] = {}
    for event, data in set_verdict.events:
        if event != "plan.expired":
            announced[(reached, epoch, event, data.get("threshold"))] = 1
    renewals = 0
    peak = {(reached, epoch): 0}
    latest = clock
    for kind, amount in history:
        if kind == "traffic":
            lifetime += amount
            usage[reached] += amount
        elif kind == "blocked traffic":  # booked while blocked: on the wire, not usage
            lifetime += amount
            progress = progress.booked_blocked(amount)
        elif kind == "advance":
            clock += timedelta(seconds=amount)
        elif kind == "back":
            clock -= timedelta(seconds=amount)
        elif kind == "reset":
            progress = after_reset(progress, lifetime, amount)
            usage[reached] -= min(amount, usage[reached])
        elif kind == "replan":
            # plan.set within the window the clock is in (another window starts the progress
            # from the ledger's bookings: awgd.peer_admin, tested on the real daemon).
            if int(window_of(clock, plan).start.timestamp()) == reached:
                new = replace(plan, limit_bytes=amount)
                if not new.same_limits(plan):
                    epoch += 1
                    peak[(reached, epoch)] = usage[reached]
                progress = carried(plan, new, progress)
                plan, limit = new, amount
        else:  # restart: what the ledger stores, read back
            stored = json.loads(json.dumps(asdict(progress)))
            progress = Progress(**{**stored, "warned": tuple(stored["warned"])})
        window = window_of(clock, plan)
        start_now = int(window.start.timestamp())
        lifted = None  # whether the window that ends now had used its limit
        if start_now > reached:
            lifted = usage[reached] >= limit
            reached = start_now
            usage[reached] = 0
            peak[(reached, epoch)] = 0
        verdict = judge(plan, progress, window, lifetime, int(clock.timestamp()), renews=True)
        progress = verdict.progress
        for event, data in verdict.events:
            if event == "plan.renewed":
                renewals += 1
                assert data["quota_lifted"] is lifted
            elif event == "plan.expired":
                expired_announced += 1
            else:
                slot = (progress.window_start, epoch, event, data.get("threshold"))
                announced[slot] = announced.get(slot, 0) + 1
                assert data["used_bytes"] == usage[reached]
        used = usage[reached]
        term = (reached, epoch)
        peak[term] = max(peak.get(term, 0), used)
        latest = max(latest, clock)
        assert progress.window_start == reached
        assert progress.used(lifetime) == used
        assert (QUOTA in verdict.reasons) == (used >= limit)
        expired = expires_at is not None and latest.timestamp() >= expires_at
        assert (EXPIRED in verdict.reasons) == expired
        assert expired_announced == int(expired)
        # Each threshold and the limit are announced once per window, once usage reached it.
        for threshold in warn_at:
            expected = int(peak[term] >= threshold * limit)
            assert announced.get((*term, "quota.warning", threshold), 0) == expected
        assert announced.get((*term, "quota.exceeded", None), 0) == int(peak[term] >= limit)
        # Traffic short of the trigger changes nothing; reaching it does.
        aim = trigger(plan, progress, lifetime)
        if aim is not None:
            assert aim > lifetime
            short = judge(plan, progress, window, aim - 1, int(clock.timestamp()), renews=True)
            assert short.events == () and short.reasons == verdict.reasons
            reached_it = judge(plan, progress, window, aim, int(clock.timestamp()), renews=True)
            assert reached_it.events != () or reached_it.reasons != short.reasons
    assert expired_announced <= 1
    assert renewals == len(usage) - 1
