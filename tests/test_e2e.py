"""Real WireGuard and AmneziaWG end to end: userspace daemons in namespaces, real pings, a
real awgd. Every scenario runs on each flavor of wgbed.FLAVORS: wireguard-go with wg, and
amneziawg-go with awg in its current 3.1 release and in the 2024 pair, with obfuscation on.

Every figure is checked against what the data plane itself counts: a session that starts with
a handshake and carries N pings shows on the server rx = 148 + 128·N and tx = 92 + S2 +
(128 + S4)·N (Flavor.expected: S2 and S4 are AmneziaWG's paddings, 0 on WireGuard), and the
client's own counters show the same session from its side. Run alone with
`bash tests/run.sh -m wireguard`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wgbed
from booking import booked
from wgbed import FLAVORS, TestBed

pytestmark = [pytest.mark.wireguard]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.fixture(params=FLAVORS, ids=[flavor.id for flavor in FLAVORS])
def bed(request: pytest.FixtureRequest) -> Iterator[TestBed]:
    problem = wgbed.available(request.param)
    if problem is not None:
        pytest.skip(problem)
    with TestBed(clients=3, flavor=request.param) as made:
        yield made


def start(daemons, bed: TestBed, **options):  # type: ignore[no-untyped-def]
    """awgd inside the server's namespace (with its private run directory), tool = "auto"."""
    env = {**bed.path_env(), **options.pop("env", {})}
    return daemons("auto", prefix=bed.server.argv(), env=env, **options).start()


def expected(bed: TestBed, pings: int, handshake: bool = True) -> tuple[int, int]:
    return bed.flavor.expected(pings, handshake)


def data(bed: TestBed, pings: int) -> tuple[int, int]:
    """Pings within a session already open: no handshake."""
    return bed.flavor.expected(pings, handshake=False)


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
        want = expected(bed, pings[client.index])
        peer = figures(daemon, client)
        assert peer["interface"] == server.ifname and peer["present"] and peer["online"]
        assert pair(peer["period"]) == want
        assert pair(peer["lifetime"]) == want
        assert pair(peer["session"]) == want
        client_rx, client_tx = client.tunnel.counters(server.public_key)
        rx_want, (tx_low, tx_high) = bed.flavor.client_expected(pings[client.index])
        assert client_rx == rx_want  # what the server sent, in plain WireGuard sizes
        assert tx_low <= client_tx <= tx_high  # what the server received, plus the client's junk
        assert peer["endpoint"] == f"10.200.{client.index}.2:" + peer["endpoint"].rsplit(":", 1)[1]
        day = daemon.result("traffic.history", public_key=client.tunnel.public_key, granularity="day", limit=1)
        assert pair(day["buckets"][0]) == want
    status = daemon.result("server.status")
    (iface,) = status["interfaces"]
    assert iface["name"] == server.ifname and iface["up"] and iface["peers"] == 3 and iface["peers_online"] == 3
    assert pair(iface["period"]) == add(*(expected(bed, n) for n in pings.values()))
    assert status["healthy"] is True and status["tool"] == bed.flavor.tool_name


def test_daemon_killed_between_samples(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client = bed.peers[0]
    daemon = start(daemons, bed)
    bed.ping(client, 3)
    daemon.result("traffic.sample")
    daemon.stop(signal.SIGKILL)
    bed.ping(client, 4)  # while awgd is down: same session, no handshake
    daemon.start()
    want = add(expected(bed, 3), data(bed, 4))
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
    assert pair(peer["period"]) == add(expected(bed, 3), expected(bed, 2))
    assert pair(peer["session"]) == expected(bed, 2)


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
    assert pair(peer["period"]) == add(expected(bed, 3), expected(bed, 5))


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
    assert pair(figures(daemon, first)["period"]) == add(expected(bed, 6), expected(bed, 2))
    assert pair(figures(daemon, second)["period"]) == expected(bed, 4)


def test_syncconf_with_the_same_config_keeps_the_counters(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client, server = bed.peers[0], bed.servers[0]
    daemon = start(daemons, bed)
    bed.ping(client, 3)
    daemon.result("traffic.sample")
    bed.syncconf_same(server)  # the counters go on from where they were
    assert server.counters(client.tunnel.public_key) == expected(bed, 3)
    bed.ping(client, 2)  # the same session
    daemon.result("traffic.sample")
    peer = figures(daemon, client)
    assert pair(peer["period"]) == add(expected(bed, 3), data(bed, 2)) == pair(peer["session"])


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
    assert pair(figures(daemon, client)["period"]) == add(expected(bed, 2), expected(bed, 6))


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs Debian's libfaketime")
def test_month_rollover_with_real_traffic(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client, server = bed.peers[0], bed.servers[0]
    clock = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "@2026-11-30 23:59:40", "TZ": "Europe/Moscow"}
    daemon = start(daemons, bed, env=clock)
    bed.ping(client, 2)
    daemon.result("traffic.sample")
    first_handshake = handshake_of(server, client)
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
    before_midnight = add(expected(bed, 2), data(bed, 3))
    after_midnight = data(bed, 4)
    # Between the pings the session carries only its own upkeep, on either side of 00:00:
    # the client's keepalives, and, when it renewed the session (a slow run can make the
    # client start a new handshake), one more handshake. Pings booked to the wrong side would
    # be 128 bytes each, which no upkeep adds up to.
    renewed = handshake_of(server, client) != first_handshake
    own = client.tunnel.counters(server.public_key)
    seen = f"november {november}, december {december}, renewed {renewed}, the client's own counters {own}"
    assert upkeep(bed, november, before_midnight, renewed), seen
    assert upkeep(bed, december, after_midnight, renewed), seen
    assert add(november, december) == pair(peer["session"]), seen  # nothing lost, nothing doubled
    assert add(november, december) == pair(peer["lifetime"]), seen


def handshake_of(server: wgbed.Tunnel, client: wgbed.Client) -> int:
    """The server's latest handshake with `client`, from its own tool."""
    for line in server.wg("show", server.ifname, "latest-handshakes").splitlines():
        key, at = line.split("\t")
        if key == client.tunnel.public_key:
            return int(at)
    raise KeyError(client.tunnel.public_key)


def upkeep(bed: TestBed, booked: tuple[int, int], pings: tuple[int, int], renewed: bool) -> bool:
    """Whether `booked` is `pings` plus keepalives (at most 3) and, if the session was renewed,
    at most one handshake (initiation and confirming keepalive received, response sent)."""
    handshakes = (0, 1) if renewed else (0,)
    rx = {pings[0] + 32 * k + wgbed.HANDSHAKE_INITIATION * h for k in range(4) for h in handshakes}
    tx = {pings[1] + h * (expected(bed, 0)[1]) for h in handshakes}
    return booked[0] in rx and booked[1] in tx


def test_exec_prefix_like_docker_exec(daemons, bed: TestBed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Stands in for `docker exec amnezia-awg`: the tool and `ip` run inside, awgd outside.
    wrapper = tmp_path / "inside"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in bed.server.argv()) + ' "$@"\n')
    wrapper.chmod(0o755)
    daemon = daemons("auto", wireguard={"exec_prefix": [str(wrapper)]}, env=bed.path_env()).start()
    client = bed.peers[2]
    bed.ping(client, 3)
    daemon.result("traffic.sample")
    peer = figures(daemon, client)
    assert pair(peer["period"]) == expected(bed, 3)
    status = daemon.result("server.status")
    # "auto" runs awg through the prefix, and falls back to wg where there is no awg.
    assert status["tool"] == bed.flavor.tool_name
    assert status["interfaces"][0]["up"] is True


def test_sigterm_books_the_traffic_since_the_last_sample(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    client = bed.peers[1]
    daemon = start(daemons, bed)
    bed.ping(client, 3)
    assert daemon.stop() == 0
    ((_, rx, tx),) = booked(daemon.ledger, client.tunnel.public_key)[bed.servers[0].ifname]
    assert (rx, tx) == expected(bed, 3)
