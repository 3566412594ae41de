"""Plans through a real awgd on real amneziawg-go 3.1 in namespaces (plan.set, plan.clear,
quotas, expiry, events.subscribe): a peer over its limit stops passing traffic at the
sample that sees it, and gets it back when the limit is raised or the plan cleared."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import wgbed
from conftest import key
from test_awgctl import awgctl
from test_daemon_rollover import fake_clock, needs_faketime
from test_peers import Server, pings
from wgbed import AMNEZIAWG, TestBed

from awgd_client import AsyncClient, Event
from awgd_client import Client as RpcClient

pytestmark = [pytest.mark.wireguard]


@pytest.fixture
def bed() -> Iterator[TestBed]:
    problem = wgbed.available(AMNEZIAWG)
    if problem is not None:
        pytest.skip(problem)
    with TestBed(clients=2, flavor=AMNEZIAWG) as made:
        yield made


class Subscription:
    """A raw connection subscribed with events.subscribe: notifications and answers."""

    def __init__(self, path: str, **params: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(30)
        self.buffer = b""
        self.pending: list[dict[str, Any]] = []
        self.last_id = self.ask("events.subscribe", 1, **params)["result"]["last_id"]

    def _line(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the daemon closed the subscription"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, method: str, request_id: int, **params: Any) -> dict[str, Any]:
        """A request on the subscribed connection; notifications meanwhile are kept."""
        self.sock.sendall(
            json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode() + b"\n"
        )
        while True:
            message = self._line()
            if message.get("id") == request_id:
                return message
            self.pending.append(message)

    def event(self) -> dict[str, Any]:
        message = self.pending.pop(0) if self.pending else self._line()
        assert message["method"] == "event" and "id" not in message, message
        return message["params"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


def test_a_peer_over_its_quota_is_cut_off_and_given_back(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user, other = bed.peers[0], bed.peers[1]
    key = user.tunnel.public_key
    feed = Subscription(server.daemon.socket)
    bed.ping(user, 2)
    server.daemon.result("traffic.sample")
    before = server.result("traffic.get", public_key=key)["period"]["total_bytes"]
    assert before > 0
    # The usage this period counts: a limit half as much again, warned at half of it.
    limit = before * 3 // 2
    planned = server.result("plan.set", public_key=key, limit_bytes=limit, warn_at=[0.5])
    plan = planned["plan"]
    assert planned["blocked"] == [] and plan["used_bytes"] == before and plan["remaining_bytes"] == limit - before
    assert (plan["reset"], plan["limit_bytes"], plan["warn_at"], plan["expires_at"]) == ("period", limit, [0.5], None)
    assert plan["start"] == planned["period"]["start"] and plan["end"] == planned["period"]["end"]
    assert [e["type"] for e in server.daemon.result("events.list")["events"]] == ["quota.warning"]
    warning = feed.event()  # before >= half the limit: announced at once
    assert (warning["type"], warning["public_key"], warning["data"]["threshold"]) == ("quota.warning", key, 0.5)
    bed.ping(user, 20)
    answer = feed.ask("traffic.sample", 2)  # the subscribed connection still answers requests
    assert "result" in answer
    exceeded, blocked = feed.event(), feed.event()
    assert exceeded["type"] == "quota.exceeded" and exceeded["data"]["limit_bytes"] == limit
    assert exceeded["data"]["used_bytes"] >= limit
    assert blocked["type"] == "peer.blocked" and blocked["data"] == {"reason": "quota", "reasons": ["quota"]}
    peer = server.result("traffic.get", public_key=key)
    assert peer["blocked"] == ["quota"] and peer["plan"]["remaining_bytes"] == 0
    assert server.live_ips(user) == "(none)"
    assert not pings(bed, user)
    assert pings(bed, other)
    # Restarted, awgd keeps the block and announces nothing again.
    server.daemon.stop()
    server.daemon.start()
    assert server.result("traffic.get", public_key=key)["blocked"] == ["quota"]
    assert not pings(bed, user)
    # Raising the limit above the usage lifts it at once.
    raised = server.result("plan.set", public_key=key, limit_bytes=limit * 100, warn_at=[0.5])
    assert raised["blocked"] == [] and server.live_ips(user) == f"{user.tunnel.address}/32"
    assert pings(bed, user)
    kinds = [e["type"] for e in server.daemon.result("events.list")["events"]]
    assert kinds == ["quota.warning", "quota.exceeded", "peer.blocked", "peer.unblocked"]
    # A limit of 0 blocks at once; plan.clear lifts it.
    assert server.result("plan.set", public_key=key, limit_bytes=0)["blocked"] == ["quota"]
    assert not pings(bed, user)
    cleared = server.result("plan.clear", public_key=key)
    assert cleared["plan"] is None and cleared["blocked"] == []
    assert pings(bed, user)
    feed.close()


def test_expiry_blocks_at_its_instant_without_a_scheduled_sample(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user = bed.peers[0]
    key = user.tunnel.public_key
    feed = Subscription(server.daemon.socket, types=["plan.expired", "peer.blocked"])
    expires = datetime.now(UTC) + timedelta(seconds=3)
    planned = server.result("plan.set", public_key=key, limit_bytes=None, expires_at=expires.isoformat())
    assert planned["blocked"] == [] and planned["plan"]["remaining_bytes"] is None
    # The daemon samples only "0 0 1 1 *": the expiry instant itself wakes it.
    expired = feed.event()
    assert expired["type"] == "plan.expired" and time.time() >= expires.timestamp()
    assert feed.event()["data"] == {"reason": "expired", "reasons": ["expired"]}
    assert server.live_ips(user) == "(none)"
    # A new plan without the expiry lifts it.
    assert server.result("plan.set", public_key=key, limit_bytes=None)["blocked"] == []
    assert server.live_ips(user) == f"{user.tunnel.address}/32"
    feed.close()


def test_a_subscriber_resumes_with_since_and_gets_each_event_once(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    key = bed.peers[0].tunnel.public_key
    server.result("peer.block", public_key=key)
    server.result("peer.unblock", public_key=key)
    stored = server.daemon.result("events.list")["events"]
    assert [e["type"] for e in stored] == ["peer.blocked", "peer.unblocked"]
    # From the first id: the second stored event, then the live ones, in id order, once each.
    feed = Subscription(server.daemon.socket, since=stored[0]["id"])
    assert feed.last_id == stored[-1]["id"]
    assert feed.event() == stored[1]
    server.result("peer.block", public_key=key)
    live = feed.event()
    assert live["type"] == "peer.blocked" and live["id"] == stored[-1]["id"] + 1
    feed.close()


def test_plan_params_are_validated(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user = bed.peers[0].tunnel.public_key
    for bad in (
        {"limit_bytes": -1},
        {"limit_bytes": "10GiB"},
        {"limit_bytes": True},
        {"reset": "year"},
        {"anchor": "2026-02-30"},
        {"anchor": "17"},
        {"expires_at": "2026-12-01T00:00:00"},  # no offset
        {"expires_at": 5},
        {"warn_at": [1.0]},
        {"warn_at": [0]},
        {"warn_at": 0.8},
        {"warn_at": [0.1] * 11},
    ):
        error = server.call("plan.set", public_key=user, **bad)["error"]
        assert error["code"] == -32602, bad
    assert server.call("plan.set", public_key=key("q"), limit_bytes=1)["error"]["code"] == -32001
    assert server.result("traffic.get", public_key=user)["plan"] is None


def test_the_client_library_and_awgctl_set_plans_and_follow_events(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    key = bed.peers[0].tunnel.public_key
    sock = ["--socket", server.daemon.socket]
    # The iterator, from the first event on (stored ones first, then live), across a restart.
    seen: list[Event] = []
    got_two = threading.Event()

    async def following() -> None:
        async with AsyncClient(server.daemon.socket) as client:
            async for event in client.subscribe(0, types=["peer.blocked", "peer.unblocked"]):
                seen.append(event)
                if len(seen) == 2:
                    got_two.set()
                if len(seen) == 4:
                    return

    follower = threading.Thread(target=lambda: asyncio.run(following()), daemon=True)
    follower.start()
    with RpcClient(server.daemon.socket) as client:
        planned = client.plan_set(server.ifname, key, limit_bytes=0, reset="month", anchor="2026-01-31")
        assert planned.blocked == ("quota",) and planned.plan is not None
        assert planned.plan.limit_bytes == 0 and planned.plan.reset == "month" and planned.plan.anchor == "2026-01-31"
        assert planned.plan.start.day in (27, 28, 29, 30, 31) and planned.plan.remaining_bytes == 0
        assert client.plan_clear(server.ifname, key).plan is None
        assert got_two.wait(30)
        server.daemon.stop()  # the iterator reconnects by itself and resumes after its last id
        server.daemon.start()
    with RpcClient(server.daemon.socket) as client:
        client.plan_set(server.ifname, key, limit_bytes=0)
        client.plan_clear(server.ifname, key)
    follower.join(60)
    assert not follower.is_alive()
    assert [e.type for e in seen] == ["peer.blocked", "peer.unblocked"] * 2
    assert len({e.id for e in seen}) == 4 and [e.id for e in seen] == sorted(e.id for e in seen)
    # awgctl: sizes as people write them, the usage in `peers`, the events.
    out = awgctl(*sock, "plan", "set", key, "-i", server.ifname, "--limit", "10GiB", "--warn", "0.5,0.9")
    assert out.returncode == 0, out.stderr
    assert "/ 10.0 GiB" in out.stdout
    shown = server.result("traffic.get", public_key=key)["plan"]
    assert shown["limit_bytes"] == 10 * 2**30 and shown["warn_at"] == [0.5, 0.9]
    assert awgctl(*sock, "plan", "set", key, "--limit", "500MB").returncode == 0
    assert server.result("traffic.get", public_key=key)["plan"]["limit_bytes"] == 500 * 10**6
    peers = awgctl(*sock, "peers")
    assert "PLAN" in peers.stdout and "/ 476.8 MiB" in peers.stdout
    bad = awgctl(*sock, "plan", "set", key, "--limit", "ten gigs")
    assert bad.returncode == 2 and "not a size" in bad.stderr
    listed = awgctl(*sock, "events", "--types", "peer.blocked")
    assert listed.returncode == 0 and listed.stdout.count("peer.blocked") == 2
    assert awgctl(*sock, "plan", "clear", key).returncode == 0
    assert server.result("traffic.get", public_key=key)["plan"] is None


@needs_faketime
def test_a_month_plan_anchored_on_the_31st_renews_on_the_last_day_of_february(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    # awgd's clock starts 20 s before 2027-02-28 00:00 (Moscow): the window begun on 31 January
    # ends there, February having no 31st, and the next one runs to 31 March.
    server = Server(daemons, bed, on_server=(1, 2), env=fake_clock("2027-02-27 23:59:40"))
    user = bed.peers[0]
    key = user.tunnel.public_key
    feed = Subscription(server.daemon.socket, types=["quota.exceeded", "plan.renewed", "peer.unblocked"])
    feed.sock.settimeout(60)  # the renewal comes at the fake midnight, up to 20 s away
    bed.ping(user, 2)
    server.daemon.result("traffic.sample")
    used = server.result("traffic.get", public_key=key)["period"]["total_bytes"]
    planned = server.result("plan.set", public_key=key, limit_bytes=used + 1, reset="month", anchor="2026-10-31")
    assert (planned["plan"]["start"], planned["plan"]["end"]) == (
        "2027-01-31T00:00:00+03:00",
        "2027-02-28T00:00:00+03:00",
    )
    bed.ping(user, 2)
    server.daemon.result("traffic.sample")
    assert feed.event()["type"] == "quota.exceeded"
    assert server.result("traffic.get", public_key=key)["blocked"] == ["quota"] and not pings(bed, user)
    renewed, unblocked = feed.event(), feed.event()  # at the fake midnight, with no sample asked for
    assert renewed["type"] == "plan.renewed" and renewed["at"].startswith("2027-02-28T00:00:0")
    assert renewed["data"]["start"] == "2027-02-28T00:00:00+03:00"
    assert renewed["data"]["end"] == "2027-03-31T00:00:00+03:00"
    assert renewed["data"]["quota_lifted"] is True and renewed["data"]["previous_used_bytes"] > used
    assert unblocked["type"] == "peer.unblocked" and unblocked["data"] == {"reason": "quota"}
    assert pings(bed, user)
    server.daemon.result("traffic.sample")
    plan = server.result("traffic.get", public_key=key)["plan"]
    assert plan["start"] == "2027-02-28T00:00:00+03:00"
    assert 0 < plan["used_bytes"] < renewed["data"]["previous_used_bytes"]  # the new window counts anew
    feed.close()


@needs_faketime
def test_a_window_that_started_while_awgd_was_down_lifts_its_block_at_start_up(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2), env=fake_clock("2027-02-27 22:00:00"))
    user = bed.peers[0]
    key = user.tunnel.public_key
    bed.ping(user, 2)
    server.daemon.result("traffic.sample")
    used = server.result("traffic.get", public_key=key)["period"]["total_bytes"]
    server.result("plan.set", public_key=key, limit_bytes=used + 1, reset="month", anchor="2026-10-31")
    bed.ping(user, 2)
    server.daemon.result("traffic.sample")
    assert server.result("traffic.get", public_key=key)["blocked"] == ["quota"] and not pings(bed, user)
    server.daemon.stop()
    # Down across 2027-02-28 00:00, when the window anchored on the 31st ends; back at 00:10.
    server.daemon.env.update(fake_clock("2027-02-28 00:10:00"))
    server.daemon.start()
    peer = server.result("traffic.get", public_key=key)
    assert peer["blocked"] == [] and peer["plan"]["start"] == "2027-02-28T00:00:00+03:00"
    assert pings(bed, user)
    kinds = [e["type"] for e in server.daemon.result("events.list", types=["plan.renewed", "peer.unblocked"])["events"]]
    assert kinds == ["plan.renewed", "peer.unblocked"]
