"""Admin changes on a peer with a plan, through a real awgd on real amneziawg-go 3.1 in
namespaces: every admin method keeps the plan (in the answer, the books and the ledger,
across a restart), also while samples run back to back, and a quota block outlives an
admin's pause and resume."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import test_plans
from test_peers import Server, pings
from wgbed import TestBed

pytestmark = [pytest.mark.wireguard]

LIMIT = 10 * 2**30
# Enough changes beside running samples that a write racing a sample's would show (the
# review saw 46 of 150 come back wrong).
CHANGES_BESIDE_SAMPLES = 60


bed = test_plans.bed  # two clients on real amneziawg-go 3.1


def plan_of(answer: dict[str, Any]) -> tuple[object, ...] | None:
    plan = answer["plan"]
    return None if plan is None else (plan["limit_bytes"], plan["reset"], tuple(plan["warn_at"]))


def test_every_admin_method_keeps_the_plan(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user, other = bed.peers[0], bed.peers[1]
    key = user.tunnel.public_key
    planned = plan_of(server.result("plan.set", public_key=key, limit_bytes=LIMIT, warn_at=[0.5]))
    assert planned == (LIMIT, "period", (0.5,))
    own = f"{user.tunnel.address}/32"
    changes: list[tuple[str, dict[str, Any]]] = [
        ("peer.block", {}),
        ("peer.update", {"label": "Dave's phone"}),  # while blocked: only the ledger and the file
        ("peer.unblock", {}),
        ("peer.update", {"label": "Dave"}),
        ("peer.update", {"persistent_keepalive": 25}),
        ("peer.update", {"allowed_ips": [own]}),
        ("peer.block", {}),
        ("peer.unblock", {}),
    ]
    for method, params in changes:
        answer = server.result(method, public_key=key, **params)
        assert plan_of(answer) == planned, (method, params, answer["plan"])
        assert plan_of(server.result("traffic.get", public_key=key)) == planned, (method, params)
    assert pings(bed, user) and pings(bed, other)
    server.daemon.stop()  # the ledger has it too
    server.daemon.start()
    after = server.result("traffic.get", public_key=key)
    assert plan_of(after) == planned and after["label"] == "Dave" and after["blocked"] == []


def test_a_quota_block_outlives_a_pause_and_a_resume(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user = bed.peers[0]
    key = user.tunnel.public_key
    assert server.result("plan.set", public_key=key, limit_bytes=0)["blocked"] == ["quota"]
    assert server.result("peer.block", public_key=key)["blocked"] == ["admin", "quota"]
    resumed = server.result("peer.unblock", public_key=key)
    assert resumed["blocked"] == ["quota"] and plan_of(resumed) == (0, "period", (0.8,))
    assert server.live_ips(user) == "(none)" and not pings(bed, user)
    # The plan is still there to lift its own reason: a top-up gives the VPN back.
    assert server.result("plan.set", public_key=key, limit_bytes=LIMIT)["blocked"] == []
    assert pings(bed, user)


def test_admin_changes_beside_back_to_back_samples_keep_plans_and_blocks(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user, other = bed.peers[0], bed.peers[1]
    key, quota_key = user.tunnel.public_key, other.tunnel.public_key
    planned = plan_of(server.result("plan.set", public_key=key, limit_bytes=LIMIT))
    # A peer held by its quota beside it: no admin change of the other peer may lift that.
    assert server.result("plan.set", public_key=quota_key, limit_bytes=0)["blocked"] == ["quota"]
    stop = threading.Event()
    samples = [0]

    def sampling() -> None:
        while not stop.is_set():
            assert "result" in server.daemon.call("traffic.sample")
            samples[0] += 1

    sampler = threading.Thread(target=sampling, daemon=True)
    sampler.start()
    wrong: list[str] = []
    try:
        for n in range(CHANGES_BESIDE_SAMPLES):
            method, params = [
                ("peer.block", {}),
                ("peer.update", {"label": f"user {n}"}),
                ("peer.unblock", {}),
            ][n % 3]
            answer = server.result(method, public_key=key, **params)
            if plan_of(answer) != planned:
                wrong.append(f"{n} {method}: plan {answer['plan']}")
            expected = ["admin"] if method != "peer.unblock" else []
            if answer["blocked"] != expected:
                wrong.append(f"{n} {method}: blocked {answer['blocked']}")
    finally:
        stop.set()
        sampler.join(60)
    assert not wrong, wrong
    assert samples[0] > 0
    held = server.result("traffic.get", public_key=quota_key)
    assert held["blocked"] == ["quota"] and plan_of(held) == (0, "period", (0.8,))
    server.daemon.stop()
    server.daemon.start()
    assert plan_of(server.result("traffic.get", public_key=key)) == planned


def usage_of(server: Server, key: str) -> tuple[int, int, int]:
    """(period total, of it booked while blocked, the plan's used bytes), after a sample."""
    server.daemon.result("traffic.sample")
    peer = server.result("traffic.get", public_key=key)
    return peer["period"]["total_bytes"], peer["period"]["blocked_bytes"], peer["plan"]["used_bytes"]


def test_what_a_blocked_device_sends_is_booked_but_never_billed(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    """Issue 26, item 2 (API v3, section 2): the ledger still equals the wire, a plan's usage
    leaves out what was booked while blocked, and a top-up to used + N gives exactly N."""
    server = Server(daemons, bed, on_server=(1, 2))
    user = bed.peers[0]
    key = user.tunnel.public_key
    bed.ping(user, 2)
    server.daemon.result("traffic.sample")
    server.result("plan.set", public_key=key, limit_bytes=LIMIT)
    total, blocked, used = usage_of(server, key)
    assert blocked == 0 and used == total > 0
    # Paused by an admin: the device keeps sending; WireGuard counts it, then drops it.
    server.result("peer.block", public_key=key)
    assert not pings(bed, user, 10)
    paused_total, paused_blocked, paused_used = usage_of(server, key)
    assert paused_total - total >= 10 * 128, "the server's rx counts what a blocked device sends"
    assert paused_blocked == paused_total - total and paused_used == used
    # Resumed: usage again.
    server.result("peer.unblock", public_key=key)
    bed.ping(user, 4)
    resumed_total, resumed_blocked, resumed_used = usage_of(server, key)
    assert resumed_blocked == paused_blocked and resumed_used - used == resumed_total - paused_total > 0
    # Over the quota: cut off at the sample that sees it; what the device sends afterwards
    # is not usage either, so "used of limit" stays where the block put it.
    server.result("plan.set", public_key=key, limit_bytes=resumed_used + 600)
    bed.ping(user, 10)
    server.daemon.result("traffic.sample")
    cut = server.result("traffic.get", public_key=key)
    assert cut["blocked"] == ["quota"]
    at_block = cut["plan"]["used_bytes"]
    assert not pings(bed, user, 10)
    total_now, blocked_now, used_now = usage_of(server, key)
    assert used_now == at_block and blocked_now - resumed_blocked == total_now - cut["period"]["total_bytes"] > 0
    # A top-up to used + N gives exactly N, across a restart too.
    topped = server.result("plan.set", public_key=key, limit_bytes=used_now + 5000)
    assert topped["blocked"] == [] and topped["plan"]["remaining_bytes"] == 5000
    server.daemon.stop()
    server.daemon.start()
    kept = server.result("traffic.get", public_key=key)
    assert kept["period"]["blocked_bytes"] == blocked_now and kept["plan"]["used_bytes"] == used_now
    assert pings(bed, user)
