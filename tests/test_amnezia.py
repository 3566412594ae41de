"""awgd on the host, the server in Amnezia's container: `exec_prefix = ["docker", "exec",
"amnezia-awg"]` and `tool = "auto"`, against a real Docker engine (tests/helpers/amnezia.py),
AmneziaWG's obfuscation on, a client container pinging the server. Both image layouts: the
tool as `awg` (amneziawg-go 3.1) and only as `wg` (the 2024 pair)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import amnezia
import pytest
import wgbed
from amnezia import SERVER_NAME, AmneziaServer, DockerEngine, build_image
from test_awgctl import awgctl
from wgbed import AMNEZIAWG, AMNEZIAWG_2024

pytestmark = [pytest.mark.wireguard, pytest.mark.docker]

LAYOUTS = [(AMNEZIAWG, "awg"), (AMNEZIAWG_2024, "wg")]
PREFIX = ["docker", "exec", SERVER_NAME]


def missing() -> str | None:
    return amnezia.available() or wgbed.available(AMNEZIAWG) or wgbed.available(AMNEZIAWG_2024)


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    problem = missing()
    if problem:
        pytest.skip(problem)
    before = firewall(), links()
    made = DockerEngine().start()
    try:
        yield made
    finally:
        made.remove()
        assert firewall() == before[0], "the Docker engine changed the firewall"
        assert links() == before[1], "the Docker engine left links behind"


def firewall() -> str:
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in rules.splitlines() if not line.startswith("#"))


def links() -> set[str]:
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in shown.splitlines()}


@pytest.fixture(scope="module")
def images(engine: DockerEngine) -> dict[str, str]:
    return {tool: build_image(engine, flavor, tool) for flavor, tool in LAYOUTS}


@pytest.fixture(params=LAYOUTS, ids=[f"{flavor.id}-as-{tool}" for flavor, tool in LAYOUTS])
def server(request: pytest.FixtureRequest, engine: DockerEngine, images: dict[str, str]) -> Iterator[AmneziaServer]:
    flavor, tool = request.param
    made = AmneziaServer(engine, images[tool], flavor).up()
    try:
        yield made
    finally:
        made.down()


def start(daemons, engine: DockerEngine, **wireguard):  # type: ignore[no-untyped-def]
    """awgd on the host, reaching into the container as the README's config has it."""
    options = {"exec_prefix": PREFIX, "tool_timeout": 5, **wireguard}
    return daemons("auto", wireguard=options, env=engine.env).start()


def pair(usage: dict) -> tuple[int, int]:  # type: ignore[type-arg]
    return usage["rx_bytes"], usage["tx_bytes"]


def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


def figures(daemon, peer) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return daemon.result("traffic.get", public_key=peer.public_key)  # type: ignore[no-any-return]


def test_exact_accounting_names_and_a_container_restart(daemons, engine: DockerEngine, server: AmneziaServer) -> None:  # type: ignore[no-untyped-def]
    daemon = start(daemons, engine)
    first, second = server.peers
    server.ping(first, 4)
    server.ping(second, 2)
    daemon.result("traffic.sample")
    expect = server.flavor.expected
    for peer, pings in ((first, 4), (second, 2)):
        got = figures(daemon, peer)
        assert got["interface"] == "wg0" and got["present"] and got["online"]
        assert pair(got["period"]) == expect(pings) == pair(got["session"])
    status = daemon.result("server.status")
    # "auto" took awg where the image has it, and wg in the older layout.
    assert status["healthy"] is True and status["tool"] == ("awg" if server.flavor is AMNEZIAWG else "wg")
    (iface,) = status["interfaces"]
    assert iface["name"] == "wg0" and iface["up"] and iface["listen_port"] == 51820 and iface["peers"] == 2
    # Read from amneziawg-go's socket through the container's root, not by docker exec.
    assert iface["reader"] == "uapi" and status["reader"]["problem"] is None
    # Names as the Amnezia app keeps them: clientsTable, and a comment in wg0.conf.
    assert figures(daemon, first)["label"] == "Client 1"
    assert figures(daemon, second)["label"] == "Client 2"
    listing = daemon.result("traffic.list")
    assert {p["label"] for p in listing["peers"]} == {"Client 1", "Client 2"}

    # docker restart: amneziawg-go starts again, every counter from zero.
    server.restart(SERVER_NAME)
    server.restart(first.name)  # a fresh session, so it handshakes at once
    server.ping(first, 1)  # fewer bytes than before: the counter went down (rule 4)
    daemon.result("traffic.sample")
    got = figures(daemon, first)
    assert pair(got["session"]) == expect(1)
    assert pair(got["period"]) == add(expect(4), expect(1)) == pair(got["lifetime"])
    assert pair(figures(daemon, second)["period"]) == expect(2)
    # The container's new process was found again (another pid): still its socket.
    assert [i["reader"] for i in daemon.result("server.status")["interfaces"]] == ["uapi"]

    # The same interface read by the tool through docker exec: the same readings.
    by_tool = start(daemons, engine, reader="tool")
    server.ping(first, 1)
    for each in (daemon, by_tool):
        each.result("traffic.sample")
    shown = [each.result("server.status") for each in (daemon, by_tool)]
    assert [s["interfaces"][0]["reader"] for s in shown] == ["uapi", "tool"]
    fields = ("name", "exists", "up", "public_key", "listen_port", "peers", "awg")
    by_socket, by_docker_exec = ({f: s["interfaces"][0][f] for f in fields} for s in shown)
    assert by_socket == by_docker_exec
    seen = ("public_key", "endpoint", "latest_handshake", "allowed_ips", "session", "online")
    listed = [
        sorted(({f: p[f] for f in seen} for p in each.result("traffic.list")["peers"]), key=str)
        for each in (daemon, by_tool)
    ]
    assert listed[0] == listed[1] and len(listed[0]) == 2


def test_a_stopped_container_loses_nothing(daemons, engine: DockerEngine, server: AmneziaServer) -> None:  # type: ignore[no-untyped-def]
    daemon = start(daemons, engine)
    peer = server.peers[0]
    server.ping(peer, 3)
    daemon.result("traffic.sample")
    engine.docker("stop", "-t", "1", SERVER_NAME)
    error = daemon.call("traffic.sample")["error"]
    assert error["code"] == -32003 and "not running" in error["data"]["reason"]
    status = daemon.result("server.status")
    assert status["healthy"] is False and "not running" in status["sampler"]["last_error"]
    assert pair(figures(daemon, peer)["period"]) == server.flavor.expected(3)  # still served, nothing lost
    server.start(SERVER_NAME)
    server.restart(peer.name)
    server.ping(peer, 2)
    daemon.result("traffic.sample")
    assert pair(figures(daemon, peer)["period"]) == add(server.flavor.expected(3), server.flavor.expected(2))
    assert daemon.result("server.status")["healthy"] is True


def test_a_container_out_of_reach_is_read_by_docker_exec_and_said(  # type: ignore[no-untyped-def]
    daemons, engine: DockerEngine, server: AmneziaServer
) -> None:
    """awgd bounded to CAP_NET_ADMIN, as awgd.service has it, may not look into the container's
    root: it reads by docker exec, exactly, and says why in server.status and its log."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    bounded = ["setpriv", "--bounding-set=-all,+net_admin", "--inh-caps=-all", "--"]
    options = {"exec_prefix": PREFIX, "tool_timeout": 5}
    daemon = daemons("auto", wireguard=options, env=engine.env, prefix=bounded).start()
    first, _ = server.peers
    server.ping(first, 3)
    for _ in range(2):  # the first is the tool's in any case (it finds awg or wg)
        daemon.result("traffic.sample")
    status = daemon.result("server.status")
    assert [i["reader"] for i in status["interfaces"]] == ["tool"]
    assert "cannot look into the container (permission denied" in status["reader"]["problem"]
    assert pair(figures(daemon, first)["session"]) == server.flavor.expected(3)
    assert "not the control sockets: cannot look into the container" in daemon.log.read_text()


def test_a_container_that_does_not_exist(daemons, engine: DockerEngine, server: AmneziaServer) -> None:  # type: ignore[no-untyped-def]
    daemon = daemons("auto", wireguard={"exec_prefix": ["docker", "exec", "amnezia-nothere"]}, env=engine.env)
    daemon.start()
    error = daemon.call("traffic.sample")["error"]
    assert error["code"] == -32003 and "No such container" in error["data"]["reason"]
    status = daemon.result("server.status")
    assert status["healthy"] is False and "No such container" in status["sampler"]["last_error"]
    assert daemon.result("traffic.list")["total"] == 0  # nothing booked


def test_the_docker_engine_down_and_a_hung_docker_exec(daemons, engine: DockerEngine, server: AmneziaServer) -> None:  # type: ignore[no-untyped-def]
    daemon = start(daemons, engine, tool_timeout=2)
    peer = server.peers[0]
    server.ping(peer, 3)
    daemon.result("traffic.sample")
    want = pair(figures(daemon, peer)["period"])

    # A hung `docker exec`: amneziawg-go stopped, so the tool inside waits for it for ever.
    stopped = server.daemon_pid()
    os.kill(stopped, signal.SIGSTOP)
    try:
        error = daemon.call("traffic.sample")["error"]
        assert error["code"] == -32003 and "timed out after 2 s" in error["data"]["reason"]
        assert daemon.result("server.status")["healthy"] is False
        assert pair(figures(daemon, peer)["period"]) == want  # still served from memory
    finally:
        os.kill(stopped, signal.SIGCONT)
    daemon.result("traffic.sample")
    assert daemon.result("server.status")["healthy"] is True

    # The Docker engine itself down: every container stops with it.
    engine.stop()
    try:
        error = daemon.call("traffic.sample")["error"]
        assert error["code"] == -32003 and "Cannot connect to the Docker daemon" in error["data"]["reason"]
        assert pair(figures(daemon, peer)["period"]) == want  # the ledger's figures, nothing more
    finally:
        engine.start()
    server.start(SERVER_NAME)
    server.start(peer.name)
    server.ping(peer, 1)
    daemon.result("traffic.sample")
    assert pair(figures(daemon, peer)["period"]) == add(want, server.flavor.expected(1))


def test_peers_added_blocked_and_removed_through_docker_exec(
    daemons, engine: DockerEngine, images: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    """peer.* into Amnezia's container: the preshared key on `docker exec -i`'s stdin, wg0.conf
    and clientsTable kept in step, blocks holding through `docker restart amnezia-awg`."""
    psk = subprocess.run(["wg", "genpsk"], capture_output=True, text=True, check=True).stdout.strip()
    wgbed.SECRETS.add(psk)
    server = AmneziaServer(engine, images["awg"], AMNEZIAWG, clients=3, on_server=2)
    newcomer = server.peers[2]
    newcomer.preshared_key = psk
    server.up()
    try:
        daemon = start(daemons, engine)
        first = server.peers[0]
        added = daemon.result(
            "peer.add", interface="wg0", public_key=newcomer.public_key, preshared_key=psk, label="Tablet"
        )
        assert added["allowed_ips"] == [f"{newcomer.address}/32"] and added["persisted"] is True
        assert f"PresharedKey = {psk}" in server.file("wg0.conf")
        table = json.loads(server.file("clientsTable"))
        assert {"clientId": newcomer.public_key, "clientName": "Tablet"} in [
            {"clientId": row["clientId"], "clientName": row["userData"]["clientName"]} for row in table
        ]
        server.restart(newcomer.name)
        server.ping(newcomer, 3)
        daemon.result("traffic.sample")
        got = figures(daemon, newcomer)
        assert pair(got["period"]) == AMNEZIAWG.expected(3) and got["label"] == "Tablet"

        assert daemon.result("peer.block", interface="wg0", public_key=first.public_key)["blocked"] == ["admin"]
        assert not server.pings(first)
        # docker restart: the interface comes back from wg0.conf, with the added peer and
        # without the block, which the next sample puts back.
        server.restart(SERVER_NAME)
        daemon.result("traffic.sample")
        server.restart(first.name)
        server.restart(newcomer.name)
        assert not server.pings(first)
        assert server.pings(newcomer)
        daemon.result("peer.unblock", interface="wg0", public_key=first.public_key)
        assert server.pings(first)

        daemon.result("peer.remove", interface="wg0", public_key=newcomer.public_key)
        assert newcomer.public_key not in server.file("wg0.conf")
        assert newcomer.public_key not in server.file("clientsTable")
        assert figures(daemon, newcomer)["present"] is False
    finally:
        server.down()


@pytest.mark.parametrize(
    ("layout", "tool"),
    [(amnezia.CURRENT, "awg"), (amnezia.LEGACY, "awg"), (amnezia.LEGACY, "wg")],
    ids=["amnezia-awg2-awg0", "amnezia-awg-wg0", "amnezia-awg-wg0-2024"],
)
def test_peer_new_through_docker_exec_in_both_layouts(  # type: ignore[no-untyped-def]
    daemons, engine: DockerEngine, images: dict[str, str], layout: tuple[str, str], tool: str, tmp_path: Path
) -> None:
    """`awgctl peer new` on Amnezia's container, as the app deploys it now (`amnezia-awg2`,
    awg0.conf) and before (`amnezia-awg`, wg0.conf): the peer in the live interface, its config
    file and clientsTable; a device made from exactly the file awgctl wrote connects, awgd
    counts what the data plane counts, and the peer comes back after a container restart."""
    pytest.importorskip("cryptography", reason="awgctl peer new needs the client library's config extra")
    flavor = AMNEZIAWG if tool == "awg" else AMNEZIAWG_2024
    server = AmneziaServer(engine, images[tool], flavor, clients=1, on_server=0, layout=layout).up()
    try:
        options = {"exec_prefix": ["docker", "exec", server.name], "tool_timeout": 5}
        clients = {"endpoint": "10.201.1.1", "persistent_keepalive": 0}
        daemon = daemons("auto", wireguard=options, env=engine.env, clients=clients).start()
        out = tmp_path / "phone.conf"
        done = awgctl("--socket", daemon.socket, "peer", "new", "-i", server.iface, "--label", "Phone",
                      "--config-out", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
        key = done.stdout.splitlines()[0]
        text = out.read_text()
        private = next(line for line in text.splitlines() if line.startswith("PrivateKey = ")).split(" = ")[1]
        wgbed.SECRETS.add(private)
        for name, value in flavor.obfuscation.items():
            assert f"\n{name} = {value}\n" in text
        assert "Endpoint = 10.201.1.1:51820\n" in text
        assert f"PublicKey = {key}" in server.file(f"{server.iface}.conf")
        assert private not in server.file(f"{server.iface}.conf")
        rows = json.loads(server.file("clientsTable"))
        assert {"clientId": key, "clientName": "Phone"} in [
            {"clientId": row["clientId"], "clientName": row["userData"]["clientName"]} for row in rows
        ]
        device = server.peers[0]
        server.become(device, text)
        assert server.pings(device, 3)
        daemon.result("traffic.sample")
        got = daemon.result("traffic.get", interface=server.iface, public_key=key)
        live = engine.docker("exec", server.name, tool, "show", server.iface, "transfer").stdout
        counted = next(line.split("\t")[1:] for line in live.splitlines() if line.startswith(key))
        assert pair(got["period"]) == (int(counted[0]), int(counted[1])) and got["period"]["rx_bytes"] > 0
        assert got["label"] == "Phone"
        server.restart(server.name)  # the interface made again from its file: the peer is in it
        assert key in engine.docker("exec", server.name, tool, "show", server.iface, "peers").stdout
    finally:
        server.down()


def test_a_speed_limit_holds_through_docker_exec(daemons, engine: DockerEngine, images: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """peer.limit into Amnezia's container: tc and the IFB through `docker exec`, measured with
    iperf3 between the client's and the server's containers; back after `docker restart`."""
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")
    server = AmneziaServer(engine, images["awg"], AMNEZIAWG, clients=2).up()
    try:
        daemon = start(daemons, engine)
        limited, free = server.peers
        answer = daemon.result(
            "peer.limit", interface="wg0", public_key=limited.public_key, down_kbit=2000, up_kbit=1000
        )
        assert answer["rate_limit"] == {"down_kbit": 2000, "up_kbit": 1000}
        down, up = iperf(server, limited, download=True), iperf(server, limited, download=False)
        assert 1.2 <= down <= 2.3 and 0.3 <= up <= 1.2, (down, up)
        assert iperf(server, free, download=True) > 8
        server.restart(SERVER_NAME)  # the interface comes back from wg0.conf, without qdiscs
        daemon.result("traffic.sample")
        server.restart(limited.name)
        assert 1.2 <= iperf(server, limited, download=True) <= 2.3
    finally:
        server.down()


def iperf(server: AmneziaServer, peer: amnezia.Peer, *, download: bool) -> float:
    """Mbit/s through the tunnel between the client's container and the server's (host iperf3
    in their network namespaces)."""
    listening = subprocess.Popen(
        ["nsenter", "-t", str(server.pid(SERVER_NAME)), "-n", "iperf3", "-s", "-1", "--forceflush"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listening.stdout is not None
    for line in listening.stdout:
        if "listening" in line.lower():
            break
    argv = ["iperf3", "-c", amnezia.SERVER_ADDRESS, "-t", "4", "-J", *(["-R"] if download else [])]
    done = subprocess.run(
        ["nsenter", "-t", str(server.pid(peer.name)), "-n", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    listening.wait(timeout=30)
    assert done.returncode == 0, done.stdout[-500:] + done.stderr
    result = json.loads(done.stdout)
    assert "sum_received" in result.get("end", {}), result.get("error") or done.stdout[-800:]
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6
