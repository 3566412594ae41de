"""Real WireGuard end to end: wireguard-go in namespaces, real pings, a real awgd.

Every figure is checked against what WireGuard itself counts: a session that starts with a
handshake and carries N pings shows rx = 148 + 128·N and tx = 92 + 128·N on the server
(wgbed.expected), and the client's own counters show the same bytes the other way round.
Run alone with `bash tests/run.sh -m wireguard`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wgbed
from booking import booked
from wgbed import PING_BYTES, TestBed, expected

pytestmark = [
    pytest.mark.wireguard,
    pytest.mark.skipif(wgbed.available() is not None, reason=str(wgbed.available())),
]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.fixture
def bed() -> Iterator[TestBed]:
    with TestBed(clients=3) as made:
        yield made


def start(daemons, bed: TestBed, **options):  # type: ignore[no-untyped-def]
    """awgd inside the server's namespace (with its private /run/wireguard)."""
    return daemons("auto", prefix=bed.server.argv(), **options).start()


def figures(daemon, client) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return daemon.result("traffic.get", public_key=client.tunnel.public_key)  # type: ignore[no-any-return]


def pair(usage: dict) -> tuple[int, int]:  # type: ignore[type-arg]
    return usage["rx_bytes"], usage["tx_bytes"]


def add(*pairs: tuple[int, int]) -> tuple[int, int]:
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def test_exact_accounting_for_three_clients(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    daemon = start(daemons, bed)  # its first sample is a baseline of zeros
    pings = {1: 3, 2: 5, 3: 8}
    for client in bed.peers:
        bed.ping(client, pings[client.index])
    daemon.result("traffic.sample")
    server = bed.servers[0]
    for client in bed.peers:
        want = expected(pings[client.index])
        peer = figures(daemon, client)
        assert peer["interface"] == server.ifname and peer["present"] and peer["online"]
        assert pair(peer["period"]) == want
        assert pair(peer["lifetime"]) == want
        assert pair(peer["session"]) == want
        client_rx, client_tx = client.tunnel.counters(server.public_key)
        assert (client_tx, client_rx) == want  # the server's rx is what the client sent
        assert peer["endpoint"] == f"10.200.{client.index}.2:" + peer["endpoint"].rsplit(":", 1)[1]
        day = daemon.result("traffic.history", public_key=client.tunnel.public_key, granularity="day", limit=1)
        assert pair(day["buckets"][0]) == want
    status = daemon.result("server.status")
    (iface,) = status["interfaces"]
    assert iface["name"] == server.ifname and iface["up"] and iface["peers"] == 3 and iface["peers_online"] == 3
    assert pair(iface["period"]) == add(*(expected(n) for n in pings.values()))
    assert status["healthy"] is True and status["tool"] == "wg"


def test_daemon_killed_between_samples(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client = bed.peers[0]
    daemon = start(daemons, bed)
    bed.ping(client, 3)
    daemon.result("traffic.sample")
    daemon.stop(signal.SIGKILL)
    bed.ping(client, 4)  # while awgd is down: same session, no handshake
    daemon.start()
    want = add(expected(3), (4 * PING_BYTES, 4 * PING_BYTES))
    assert pair(figures(daemon, client)["period"]) == want
    daemon.result("traffic.sample")
    assert pair(figures(daemon, client)["lifetime"]) == want


def test_server_wireguard_restarted(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client, server = bed.peers[0], bed.servers[0]
    daemon = start(daemons, bed)
    bed.ping(client, 3)
    daemon.result("traffic.sample")
    before = server.ifindex()
    bed.restart_server(server)
    assert server.ifindex() != before  # a new interface, counters from zero
    bed.restart_client(client)
    bed.ping(client, 2)
    daemon.result("traffic.sample")
    peer = figures(daemon, client)
    assert pair(peer["period"]) == add(expected(3), expected(2))
    assert pair(peer["session"]) == expected(2)


def test_peer_removed_and_readded(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client = bed.peers[0]
    daemon = start(daemons, bed)
    bed.ping(client, 3)
    daemon.result("traffic.sample")
    bed.remove_peer(client)
    daemon.result("traffic.sample")
    assert figures(daemon, client)["present"] is False
    bed.add_peer(client)
    bed.restart_client(client)
    bed.ping(client, 5)  # more than before: only the absence shows the counter restarted
    daemon.result("traffic.sample")
    peer = figures(daemon, client)
    assert peer["present"] is True
    assert pair(peer["period"]) == add(expected(3), expected(5))


def test_setconf_with_the_same_config(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    first, second = bed.peers[0], bed.peers[1]
    server = bed.servers[0]
    daemon = start(daemons, bed)
    bed.ping(first, 6)
    bed.ping(second, 4)
    daemon.result("traffic.sample")
    ifindex = server.ifindex()
    bed.setconf_same(server)  # every peer's counters back to zero, same ifindex
    assert server.ifindex() == ifindex
    bed.restart_client(first)
    bed.ping(first, 2)
    daemon.result("traffic.sample")
    assert pair(figures(daemon, first)["period"]) == add(expected(6), expected(2))
    assert pair(figures(daemon, second)["period"]) == expected(4)


def test_simulated_reboot_is_a_reset(daemons, bed: TestBed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = bed.peers[0]
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    daemon = start(daemons, bed, env={"AWGD_TEST_BOOT_ID_FILE": str(boot_id)})
    bed.ping(client, 2)
    daemon.result("traffic.sample")
    ifindex = bed.servers[0].ifindex()
    assert daemon.stop() == 0
    bed.reboot_server()
    assert bed.servers[0].ifindex() == ifindex  # so only the boot id tells
    boot_id.write_text("boot-2\n")
    bed.restart_client(client)
    bed.ping(client, 6)  # more than before the reboot
    daemon.start()
    assert pair(figures(daemon, client)["period"]) == add(expected(2), expected(6))


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs Debian's libfaketime")
def test_month_rollover_with_real_traffic(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client = bed.peers[0]
    clock = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "@2026-11-30 23:59:40", "TZ": "Europe/Moscow"}
    daemon = start(daemons, bed, env=clock)
    bed.ping(client, 2)
    daemon.result("traffic.sample")
    bed.ping(client, 3)  # before midnight, booked by the boundary sample
    deadline = time.monotonic() + 60
    while daemon.result("server.status")["period"]["start"] != "2026-12-01T00:00:00+03:00":
        assert time.monotonic() < deadline, "no rollover"
        time.sleep(0.2)
    bed.ping(client, 4)
    daemon.result("traffic.sample")
    peer = figures(daemon, client)
    december = pair(peer["period"])
    november = next(
        pair(b)
        for b in daemon.result("traffic.history", public_key=client.tunnel.public_key)["buckets"]
        if b["start"] == "2026-11-01T00:00:00+03:00"
    )
    before_midnight = add(expected(2), (3 * PING_BYTES, 3 * PING_BYTES))
    after_midnight = (4 * PING_BYTES, 4 * PING_BYTES)
    # The client may send one 32-byte keepalive 10 s after its last ping, on either side of 00:00.
    assert 0 <= november[0] - before_midnight[0] <= 32 and november[1] == before_midnight[1]
    assert 0 <= december[0] - after_midnight[0] <= 32 and december[1] == after_midnight[1]
    assert add(november, december) == pair(peer["session"])  # nothing lost, nothing doubled
    assert add(november, december) == pair(peer["lifetime"])


def test_exec_prefix_like_docker_exec(daemons, bed: TestBed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Stands in for `docker exec amnezia-awg`: the tool and `ip` run inside, awgd outside.
    wrapper = tmp_path / "inside"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in bed.server.argv()) + ' "$@"\n')
    wrapper.chmod(0o755)
    daemon = daemons("auto", wireguard={"exec_prefix": [str(wrapper)]}).start()
    client = bed.peers[2]
    bed.ping(client, 3)
    daemon.result("traffic.sample")
    peer = figures(daemon, client)
    assert pair(peer["period"]) == expected(3)
    status = daemon.result("server.status")
    assert status["tool"] == "wg"  # "auto" found no awg inside and fell back to wg
    assert status["interfaces"][0]["up"] is True


def test_sigterm_books_the_traffic_since_the_last_sample(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client = bed.peers[1]
    daemon = start(daemons, bed)
    bed.ping(client, 3)
    assert daemon.stop() == 0
    ((_, rx, tx),) = booked(daemon.ledger, client.tunnel.public_key)[bed.servers[0].ifname]
    assert (rx, tx) == expected(3)
