"""peer.limit on real amneziawg-go 3.1 in namespaces, measured with iperf3 through the tunnel:
a limited peer gets its limit each way, an unlimited one beside it keeps full speed, a
re-created interface gets the limit back at the next sample, and lifting it restores full
speed (API v3, section 3)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

import pytest
from conftest import key as key_of
from test_awgctl import awgctl
from test_daemon_rollover import fake_clock, needs_faketime
from test_peers import Server, bed, pings  # noqa: F401 - the fixture: three clients on real amneziawg-go
from test_plans import Subscription
from wgbed import Client, TestBed

pytestmark = [pytest.mark.wireguard]

DOWN_KBIT, UP_KBIT = 2000, 1000
SECONDS = 4  # per measurement: long enough for TCP to settle on the limit


@pytest.fixture
def iperf_server() -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")


def mbit(testbed: TestBed, client: Client, *, download: bool) -> float:
    """What iperf3 moved through the tunnel, Mbit/s: to the client (download) or from it."""
    # A server for this one measurement: back-to-back tests on one server now and then have
    # the next one's control connection reset while the last one winds down.
    server = subprocess.Popen(
        testbed.server.argv("iperf3", "-s", "-1", "--forceflush"), stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    for line in server.stdout:  # listening: an event, not a sleep
        if "listening" in line.lower():
            break
    argv = ["iperf3", "-c", testbed.server_of(client).address, "-t", str(SECONDS), "-J", *(["-R"] if download else [])]
    done = subprocess.run(client.host.argv(*argv), capture_output=True, text=True, timeout=60, check=False)
    server.wait(timeout=30)
    assert done.returncode == 0, done.stdout[-500:] + done.stderr
    result = json.loads(done.stdout)
    assert "sum_received" in result.get("end", {}), result.get("error") or done.stdout[-800:]
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6


def test_a_limit_holds_each_way_comes_back_and_goes(daemons, bed: TestBed, iperf_server: None) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    server = Server(daemons, bed, on_server=(1, 2))
    limited, free = bed.peers[0], bed.peers[1]
    key = limited.tunnel.public_key
    answer = server.result("peer.limit", public_key=key, down_kbit=DOWN_KBIT, up_kbit=UP_KBIT)
    assert answer["rate_limit"] == {"down_kbit": DOWN_KBIT, "up_kbit": UP_KBIT}
    down, up = mbit(bed, limited, download=True), mbit(bed, limited, download=False)
    assert 1.2 <= down <= 2.3 and 0.3 <= up <= 1.2, (down, up)
    free_down, free_up = mbit(bed, free, download=True), mbit(bed, free, download=False)
    assert free_down > 4 * DOWN_KBIT / 1000 and free_up > 4 * UP_KBIT / 1000, (free_down, free_up)
    # The interface re-created from its file has no qdisc; the next sample puts the limit back.
    server.restart_from_file()
    server.daemon.result("traffic.sample")
    assert 1.2 <= mbit(bed, limited, download=True) <= 2.3
    shown = awgctl("--socket", server.daemon.socket, "peer", key).stdout
    assert "speed      down 2Mbit/s, up 1Mbit/s" in shown
    # Lifted: full speed again, and nothing of it left on the interface.
    lifted = server.result("peer.limit", public_key=key, down_kbit=None, up_kbit=None)
    assert lifted["rate_limit"] is None
    assert mbit(bed, limited, download=True) > 4 * DOWN_KBIT / 1000
    assert "class htb" not in bed.server.run("tc", "class", "show", "dev", server.ifname)


def test_peer_limit_is_checked_and_kept(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    server = Server(daemons, bed, on_server=(1,))
    key = bed.peers[0].tunnel.public_key
    for bad in (
        {"down_kbit": 7},
        {"up_kbit": 10_000_001},
        {"down_kbit": "10M"},
        {"down_kbit": True},
        {"up_kbit": "1000\n[x]"},
    ):
        error = server.call("peer.limit", public_key=key, **bad)["error"]
        assert error["code"] == -32602 and "kbit/s" in error["message"], error
    done = awgctl("--socket", server.daemon.socket, "peer", "limit", key, "-i", server.ifname, "--down", "10M")
    assert done.returncode == 0 and "down 10Mbit/s, up no limit" in done.stdout, done.stderr
    done = awgctl("--socket", server.daemon.socket, "peer", "limit", key, "-i", server.ifname, "--up", "500k")
    assert server.result("traffic.get", public_key=key)["rate_limit"] == {"down_kbit": 10000, "up_kbit": 500}
    assert "10M/500k" in awgctl("--socket", server.daemon.socket, "peers").stdout
    # Taken away behind awgd's back, with the same ifindex (as a container restarted in a new
    # namespace may have it): the next sample sees the root qdisc is not its own, and sets it up.
    bed.server.run("tc", "qdisc", "del", "dev", server.ifname, "root")
    server.daemon.result("traffic.sample")  # reads the links without awgd's qdisc, and sets it up
    assert "rate 10Mbit" in bed.server.run("tc", "class", "show", "dev", server.ifname)
    # Kept in the ledger: a restarted awgd applies it to the interface again.
    server.daemon.stop()
    bed.server.run("tc", "qdisc", "del", "dev", server.ifname, "root")
    server.daemon.start()
    assert server.result("traffic.get", public_key=key)["rate_limit"] == {"down_kbit": 10000, "up_kbit": 500}
    assert "rate 10Mbit" in bed.server.run("tc", "class", "show", "dev", server.ifname)


@needs_faketime
def test_a_throttle_plan_slows_instead_of_cutting_off(daemons, bed: TestBed, iperf_server: None) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # awgd's clock starts 60 s before midnight in Moscow; the plan's window is a day.
    server = Server(daemons, bed, on_server=(1, 2), env=fake_clock("2026-11-30 23:59:00"))
    user = bed.peers[0]
    key = user.tunnel.public_key
    bed.ping(user, 2)
    server.daemon.result("traffic.sample")
    used = server.result("traffic.get", public_key=key)["period"]["total_bytes"]
    plan = {"public_key": key, "reset": "day", "over_quota": "throttle", "throttle_kbit": 1000}
    feed = Subscription(server.daemon.socket, types=["peer.throttled", "peer.unthrottled", "plan.renewed"])
    feed.sock.settimeout(120)
    server.result("plan.set", limit_bytes=used + 1000, **plan)
    bed.ping(user, 10)  # past the limit: slowed, not cut off
    server.daemon.result("traffic.sample")
    assert feed.event()["type"] == "peer.throttled"
    now = server.result("traffic.get", public_key=key)
    assert now["blocked"] == [] and now["rate_limit"] == {"down_kbit": 1000, "up_kbit": 1000}
    assert pings(bed, user)
    assert 0.5 <= mbit(bed, user, download=True) <= 1.2
    # A top-up lifts it at once.
    server.result("plan.set", limit_bytes=used + 10**10, **plan)
    assert feed.event()["type"] == "peer.unthrottled"
    assert server.result("traffic.get", public_key=key)["rate_limit"] is None
    assert mbit(bed, user, download=True) > 4
    # Used up again; the next window (00:00 on awgd's clock) lifts it at that instant.
    total = server.result("traffic.get", public_key=key)["plan"]["used_bytes"]
    server.result("plan.set", limit_bytes=total, **plan)
    assert feed.event()["type"] == "peer.throttled"
    kinds = [feed.event()["type"], feed.event()["type"]]  # the renewal, and the throttle lifted with it
    assert sorted(kinds) == ["peer.unthrottled", "plan.renewed"], kinds
    feed.close()
    assert server.result("traffic.get", public_key=key)["rate_limit"] is None
    assert mbit(bed, user, download=True) > 4


def test_admin_changes_to_a_peer_with_a_plan_a_block_and_a_limit(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Every admin method on one peer that has all three: each keeps the others, and the
    interface's filters follow its addresses and its key."""
    server = Server(daemons, bed, on_server=(1, 2))
    key = bed.peers[0].tunnel.public_key
    server.result("plan.set", public_key=key, limit_bytes=10**12, reset="month")
    server.result("peer.block", public_key=key)
    server.result("peer.limit", public_key=key, down_kbit=2000, up_kbit=1000)

    def kept(peer: dict[str, object]) -> None:
        assert peer["blocked"] == ["admin"] and peer["rate_limit"] == {"down_kbit": 2000, "up_kbit": 1000}
        assert isinstance(peer["plan"], dict) and peer["plan"]["limit_bytes"] == 10**12

    def filtered(address: str) -> bool:
        shown = bed.server.run("tc", "filter", "show", "dev", server.ifname)
        return ipaddress.ip_address(address).packed.hex() in shown

    kept(server.result("peer.update", public_key=key, label="Dave"))
    old = server.result("traffic.get", public_key=key)["allowed_ips"][0].split("/")[0]
    assert filtered(old)
    moved = str(ipaddress.ip_address(old) + 100)
    kept(server.result("peer.update", public_key=key, allowed_ips=[f"{moved}/32"]))
    assert filtered(moved) and not filtered(old)
    new_key = key_of("N")
    rekeyed = server.result("peer.rekey", public_key=key, new_public_key=new_key)
    kept(rekeyed)
    assert rekeyed["label"] == "Dave" and rekeyed["allowed_ips"] == [f"{moved}/32"] and filtered(moved)
    assert bed.server.run("tc", "class", "show", "dev", server.ifname).count("class htb") == 1  # the old key's went
    server.result("peer.unblock", public_key=new_key)
    assert server.result("traffic.get", public_key=new_key)["rate_limit"] == {"down_kbit": 2000, "up_kbit": 1000}
    server.result("peer.remove", public_key=new_key)
    assert "class htb" not in bed.server.run("tc", "class", "show", "dev", server.ifname)
    assert not filtered(moved)  # its address may go to someone else now
