"""Peers through the daemon (peer.add/remove/update/block/unblock, events.list) on real
amneziawg-go 3.1 with obfuscation on, in namespaces: a real awgd inside the server's
namespace, a config file in `wireguard.config_dir`, real clients pinging.

The server's interface is re-created from that config file (`restart_from_file`), as
`awg-quick down; awg-quick up` would, to show what the file brings back. The `awg` awgd runs is
a wrapper that logs its argument lists, so a test can show a preshared key never was in one.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wgbed
from conftest import dump, key
from test_awgctl import awgctl
from wgbed import AMNEZIAWG, Client, TestBed, Tunnel

from awgd.server_files import read_text, replace_text
from awgd.wg_config import parse_config
from awgd_client import AddedPeer, AsyncClient, Conflict, ToolFailed, UnknownPeer
from awgd_client import Client as RpcClient

pytestmark = [pytest.mark.wireguard]

COMMENT = "# managed by hand, and by awgd"


@pytest.fixture
def bed() -> Iterator[TestBed]:
    problem = wgbed.available(AMNEZIAWG)
    if problem is not None:
        pytest.skip(problem)
    with TestBed(clients=3, flavor=AMNEZIAWG) as made:
        yield made


class Server:
    """The bed's server interface with a config file, and awgd beside it."""

    def __init__(
        self,
        daemons: Any,
        bed: TestBed,
        *,
        on_server: tuple[int, ...] = (1, 2, 3),
        env: dict[str, str] | None = None,
        clients: dict[str, Any] | None = None,
    ) -> None:
        self.bed = bed
        self.tunnel: Tunnel = bed.servers[0]
        self.ifname = self.tunnel.ifname
        self.conf_dir = bed.dir / "conf"
        self.conf_dir.mkdir()
        self.conf = self.conf_dir / f"{self.ifname}.conf"
        on = [c for c in bed.peers if c.index in on_server]
        for client in bed.peers:
            if client not in on:
                bed.remove_peer(client)
        self.conf.write_text(self._file(on))
        self.conf.chmod(0o600)
        self.argv_log = bed.dir / "argv.log"
        wrapper = bed.bin / bed.flavor.tool_name
        real = os.readlink(wrapper)
        wrapper.unlink()
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {self.argv_log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
        env = {**bed.path_env(), **(env or {})}
        self.daemon = daemons(
            "auto", prefix=bed.server.argv(), env=env, wireguard={"config_dir": str(self.conf_dir)}, clients=clients
        )
        self.daemon.start()

    def _file(self, clients: list[Client]) -> str:
        return f"{COMMENT}\n{self.bed.server_config(self.tunnel, clients)}"

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.daemon.call(method, interface=self.ifname, **params)  # type: ignore[no-any-return]

    def result(self, method: str, **params: Any) -> Any:
        answer = self.call(method, **params)
        assert "result" in answer, answer
        return answer["result"]

    def live_keys(self) -> set[str]:
        return set(self.tunnel.wg("show", self.ifname, "peers").split())

    def live_ips(self, client: Client) -> str:
        for line in self.tunnel.wg("show", self.ifname, "allowed-ips").splitlines():
            key, _, ips = line.partition("\t")
            if key == client.tunnel.public_key:
                return ips
        raise KeyError(client.tunnel.public_key)

    def restart_from_file(self) -> None:
        """The interface re-created from its config file (awg-quick down/up, setconf form)."""
        self.tunnel.kill()
        self.tunnel.start()
        self.tunnel.wg("setconf", self.ifname, str(self.conf))
        self.tunnel.host.run("ip", "addr", "add", f"{self.tunnel.address}/24", "dev", self.ifname)
        self.tunnel.host.run("ip", "link", "set", self.ifname, "up")


def pings(bed: TestBed, client: Client, count: int = 2) -> bool:
    """Whether every one of `count` pings came back (a blocked peer's never do)."""
    result = subprocess.run(
        client.host.argv("ping", "-c", str(count), "-i", "0.2", "-W", "2", "-q", bed.server_of(client).address),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0


def genpsk() -> str:
    psk = subprocess.run(["wg", "genpsk"], capture_output=True, text=True, check=True).stdout.strip()
    wgbed.SECRETS.add(psk)  # the daemons fixture fails the test if it shows up in a log, the ledger or an answer
    return psk


def pair(usage: dict[str, int]) -> tuple[int, int]:
    return usage["rx_bytes"], usage["tx_bytes"]


def test_a_peer_added_with_an_automatic_address_and_a_preshared_key_connects(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    newcomer = bed.peers[2]  # its client config says 10.99.0.4: the next free address
    psk = genpsk()
    added = server.result("peer.add", public_key=newcomer.tunnel.public_key, preshared_key=psk, label="Phone")
    assert added["allowed_ips"] == [f"{newcomer.tunnel.address}/32"]
    assert added["persisted"] is True and added["label"] == "Phone" and added["blocked"] == []
    text = server.conf.read_text()
    assert text.startswith(COMMENT + "\n")  # the rest of the file as it was
    assert f"# Name = Phone\n[Peer]\nPublicKey = {newcomer.tunnel.public_key}\nPresharedKey = {psk}\n" in text
    assert stat.S_IMODE(os.stat(server.conf).st_mode) == 0o600
    assert "preshared-key /dev/stdin" in server.argv_log.read_text() and psk not in server.argv_log.read_text()
    # A fresh client with that preshared key: the handshake only completes if the server has it.
    bed.restart_client(newcomer)
    key_file = bed.dir / "psk"
    key_file.write_text(psk + "\n")
    newcomer.tunnel.wg("set", newcomer.tunnel.ifname, "peer", server.tunnel.public_key, "preshared-key", str(key_file))
    bed.ping(newcomer, 3)
    server.daemon.result("traffic.sample")
    peer = server.result("traffic.get", public_key=newcomer.tunnel.public_key)
    assert pair(peer["period"]) == bed.flavor.expected(3) == pair(peer["session"])
    events = server.daemon.result("events.list")["events"]
    assert [(e["type"], e["public_key"]) for e in events] == [("peer.added", newcomer.tunnel.public_key)]
    # The file brings it back: the interface re-created from it has exactly the three peers.
    server.restart_from_file()
    assert server.live_keys() == {c.tunnel.public_key for c in bed.peers}


def test_a_blocked_peer_passes_nothing_through_restarts_until_unblocked(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed)
    user, other = bed.peers[0], bed.peers[1]
    assert pings(bed, user)
    blocked = server.result("peer.block", public_key=user.tunnel.public_key)
    assert blocked["blocked"] == ["admin"] and blocked["allowed_ips"] == [f"{user.tunnel.address}/32"]
    assert server.live_keys() == {c.tunnel.public_key for c in bed.peers}  # still configured
    assert server.live_ips(user) == "(none)"
    assert not pings(bed, user)
    assert pings(bed, other)
    assert (
        "Block" not in server.conf.read_text() and f"AllowedIPs = {user.tunnel.address}/32" in server.conf.read_text()
    )
    # Unblocked at once: the same session of the same client passes traffic again.
    assert server.result("peer.unblock", public_key=user.tunnel.public_key)["blocked"] == []
    assert pings(bed, user)
    server.result("peer.block", public_key=user.tunnel.public_key)
    # The interface re-created from its file: the next sample takes the allowed IPs away again.
    server.restart_from_file()
    assert server.live_ips(user) == f"{user.tunnel.address}/32"
    server.daemon.result("traffic.sample")
    assert server.live_ips(user) == "(none)"
    bed.restart_client(user)
    bed.restart_client(other)
    assert not pings(bed, user)
    assert pings(bed, other)
    # awgd SIGKILLed and the interface re-created meanwhile: its first sample blocks again.
    server.daemon.stop(signal.SIGKILL)
    server.restart_from_file()
    server.daemon.start()
    assert server.live_ips(user) == "(none)"
    assert server.result("traffic.get", public_key=user.tunnel.public_key)["blocked"] == ["admin"]
    # Unblocked: the user's unchanged client works again.
    unblocked = server.result("peer.unblock", public_key=user.tunnel.public_key)
    assert unblocked["blocked"] == [] and unblocked["allowed_ips"] == [f"{user.tunnel.address}/32"]
    assert server.live_ips(user) == f"{user.tunnel.address}/32"
    bed.restart_client(user)  # the server forgot its session when re-created: the client reconnects, same config
    assert pings(bed, user, 3)
    events = server.daemon.result("events.list")["events"]
    assert [e["type"] for e in events] == ["peer.blocked", "peer.unblocked"] * 2
    assert events[0]["data"] == {"reason": "admin", "reasons": ["admin"]} and events[1]["data"] == {"reason": "admin"}
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})


def test_a_removed_peer_leaves_the_interface_and_the_file_and_keeps_its_history(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed)
    leaving, staying = bed.peers[1], bed.peers[0]
    bed.ping(leaving, 4)
    removed = server.result("peer.remove", public_key=leaving.tunnel.public_key)
    assert removed["public_key"] == leaving.tunnel.public_key and removed["removed_at"]
    assert leaving.tunnel.public_key not in server.live_keys()
    text = server.conf.read_text()
    assert leaving.tunnel.public_key not in text and staying.tunnel.public_key in text and text.startswith(COMMENT)
    peer = server.result("traffic.get", public_key=leaving.tunnel.public_key)
    assert peer["present"] is False and pair(peer["period"]) == bed.flavor.expected(4)  # booked before it went
    server.restart_from_file()
    assert server.live_keys() == {staying.tunnel.public_key, bed.peers[2].tunnel.public_key}
    again = server.call("peer.remove", public_key=leaving.tunnel.public_key)
    assert again["error"]["code"] == -32001


def test_update_changes_the_interface_and_the_file(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed)
    client = bed.peers[0]
    updated = server.result(
        "peer.update",
        public_key=client.tunnel.public_key,
        label="Laptop",
        allowed_ips=[f"{client.tunnel.address}/32", "10.99.7.0/24"],
        persistent_keepalive=25,
        outside_subnets=True,  # a site behind the client
    )
    assert updated["label"] == "Laptop" and updated["allowed_ips"] == [f"{client.tunnel.address}/32", "10.99.7.0/24"]
    assert server.live_ips(client) == f"{client.tunnel.address}/32 10.99.7.0/24"
    text = server.conf.read_text()
    assert f"AllowedIPs = {client.tunnel.address}/32, 10.99.7.0/24\n" in text and "PersistentKeepalive = 25\n" in text
    assert "# Name = Laptop\n" in text
    dropped = server.result("peer.update", public_key=client.tunnel.public_key, label=None)
    assert dropped["label"] is None and "# Name = Laptop" not in server.conf.read_text()


def test_conflicts_bad_params_and_refusals_answer_their_codes(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    one, two, three = (c.tunnel.public_key for c in bed.peers)
    bed.ping(bed.peers[0], 3)
    existing = server.call("peer.add", public_key=one)
    assert existing["error"]["code"] == -32005 and existing["error"]["data"] == {"public_key": one}
    taken = server.call("peer.add", public_key=three, allowed_ips=[bed.peers[1].tunnel.address])
    assert taken["error"]["code"] == -32005
    assert taken["error"]["data"] == {"allowed_ip": f"{bed.peers[1].tunnel.address}/32", "owner": two}
    for params, named in [
        ({"allowed_ips": ["10.99.0.300/32"]}, "allowed_ips"),
        ({"allowed_ips": "10.99.0.9/32"}, "allowed_ips"),
        ({"persistent_keepalive": 0}, "persistent_keepalive"),
        ({"persistent_keepalive": 70000}, "persistent_keepalive"),
        ({"label": "a\nb"}, "label"),
        ({"label": "x" * 65}, "label"),
        ({"preshared_key": "not a key"}, "preshared_key"),
    ]:
        answer = server.call("peer.add", public_key=three, **params)
        assert answer["error"]["code"] == -32602 and named in answer["error"]["message"], (params, answer)
    unknown = server.daemon.call("peer.add", interface="nosuch0", public_key=three)
    assert unknown["error"]["code"] == -32602 and "nosuch0" in unknown["error"]["message"]
    # The file cannot be written: -32006, and the peer is not left on the interface.
    server.conf.unlink()
    server.conf.mkdir()
    refused = server.call("peer.add", public_key=three)
    assert refused["error"]["code"] == -32006 and refused["error"]["data"]["reason"]
    assert three not in server.live_keys()
    assert server.daemon.result("events.list")["events"] == []  # nothing happened
    server.daemon.result("traffic.sample")
    assert pair(server.result("traffic.get", public_key=one)["period"]) == bed.flavor.expected(3)  # still exact


def test_two_adds_racing_for_an_address_get_different_ones(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1,))
    answers: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda c=c: answers.append(server.result("peer.add", public_key=c.tunnel.public_key)))
        for c in bed.peers[1:]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    addresses = sorted(a["allowed_ips"][0] for a in answers)
    assert addresses == ["10.99.0.3/32", "10.99.0.4/32"]
    assert len(server.live_keys()) == 3


def test_a_full_subnet_is_a_conflict(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1,))
    # Every other address of the /24 taken by one peer's wide allowed IPs.
    server.result(
        "peer.update", public_key=bed.peers[0].tunnel.public_key, allowed_ips=["10.99.0.0/24"], outside_subnets=True
    )
    full = server.call("peer.add", public_key=bed.peers[1].tunnel.public_key)
    assert full["error"]["code"] == -32005 and full["error"]["data"]["interface"] == server.ifname


def test_server_status_shows_the_address_and_the_obfuscation_parameters(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed)
    (iface,) = server.daemon.result("server.status")["interfaces"]
    assert iface["address"] == [f"{server.tunnel.address}/24"]
    obfuscation = {k.lower(): v for k, v in AMNEZIAWG.obfuscation.items()}
    for name in ("jc", "jmin", "jmax", "s1", "s2", "s3", "s4"):
        assert iface["awg"][name] == int(obfuscation[name])
    for name in ("h1", "h2", "h3", "h4"):
        assert iface["awg"][name] == obfuscation[name]
    assert iface["awg"]["i1"] == obfuscation["i1"]


def test_the_config_file_is_old_or_new_whenever_its_writer_is_killed(tmp_path: Path) -> None:
    """awgd's atomic replacement (awgd.server_files), its writer killed at many points."""

    path = tmp_path / "wg0.conf"
    old = "[Interface]\nPrivateKey = x\n" + "".join(f"# old line {n}\n" for n in range(20000))
    new = old + "\n[Peer]\nPublicKey = y\n" + "".join(f"# new line {n}\n" for n in range(20000))
    path.write_text(old)
    path.chmod(0o640)
    outcomes = set()

    async def attempt(delay: float) -> None:
        was = await read_text(str(path), [], 10)
        task = asyncio.ensure_future(replace_text(str(path), [], 10, was=was, text=new if was == old else old))
        await asyncio.sleep(delay)
        task.cancel()  # kills the writer's whole process group, wherever it is
        await asyncio.gather(task, return_exceptions=True)

    rng = random.Random(15)
    for _ in range(60):
        asyncio.run(attempt(rng.uniform(0, 0.03)))
        text = path.read_text()
        assert text in (old, new)
        outcomes.add(text == new)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # the file's own mode, kept
        assert len(list(tmp_path.glob("wg0.conf.awgd-*"))) <= 1  # a killed writer's leftover goes at the next write
    assert outcomes == {True, False}, "the kills never landed on both sides of the rename"


def test_the_client_library_and_awgctl_change_peers(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]

    server = Server(daemons, bed, on_server=(1,))
    socket, ifname = server.daemon.socket, server.ifname
    _, second, third = (c.tunnel.public_key for c in bed.peers)
    psk = genpsk()
    with RpcClient(socket) as client:
        added = client.add_peer(ifname, second, preshared_key=psk, label="Phone")
        assert isinstance(added, AddedPeer) and added.persisted and added.allowed_ips == ("10.99.0.3/32",)
        with pytest.raises(Conflict) as conflict:
            client.add_peer(ifname, second)
        assert conflict.value.data == {"public_key": second}
        assert client.block_peer(ifname, second).blocked == ("admin",)
        assert client.unblock_peer(ifname, second).blocked == ()
        assert client.update_peer(ifname, second, label=None).label is None
        assert client.update_peer(ifname, second, persistent_keepalive=25).label is None  # label untouched
        events = client.events()
        assert [e.type for e in events.events] == ["peer.added", "peer.blocked", "peer.unblocked"]
        assert events.last_id == events.events[-1].id
        assert [e.type for e in client.events(events.events[0].id).events] == ["peer.blocked", "peer.unblocked"]
        assert client.remove_peer(ifname, second).public_key == second
        with pytest.raises(UnknownPeer):
            client.remove_peer(ifname, second)
        status = client.server_status()
        assert status.interfaces[0].address == (f"{server.tunnel.address}/24",) and status.interfaces[0].awg

    async def asynchronous() -> None:
        async with AsyncClient(socket) as client:
            added = await client.add_peer(ifname, third, allowed_ips=["10.99.0.40"], label="Tablet")
            assert added.allowed_ips == ("10.99.0.40/32",)
            assert (await client.block_peer(ifname, third)).blocked == ("admin",)
            assert (await client.events(types=["peer.blocked"])).events[-1].public_key == third
            server.conf.unlink()
            server.conf.mkdir()  # the file cannot be replaced now
            with pytest.raises(ToolFailed):
                await client.update_peer(ifname, third, allowed_ips=["10.99.0.41/32"])
            server.conf.rmdir()

    asyncio.run(asynchronous())
    server.conf.write_text(server._file(bed.peers[:1]))
    env = {"AWGD_SOCKET": socket}
    done = awgctl(
        "peer", "add", second, "-i", ifname, "--preshared-key-file", "-", "--label", "Laptop", env=env, stdin=psk + "\n"
    )
    assert done.returncode == 0 and "10.99.0.3/32" in done.stdout and psk not in done.stdout + done.stderr
    assert f"PresharedKey = {psk}" in server.conf.read_text()
    again = awgctl("peer", "add", second, "-i", ifname, env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert awgctl("peer", "block", second[:10], env=env).returncode == 0
    table = awgctl("peers", env=env).stdout
    (row,) = [line for line in table.splitlines() if line.startswith(second[:12])]
    assert "Laptop" in row and "admin" in row
    assert awgctl("peer", "label", second, "Work laptop", env=env).returncode == 0
    assert awgctl("peer", "unblock", second, env=env).returncode == 0
    shown = awgctl("peer", second, env=env).stdout
    assert "Work laptop" in shown and "10.99.0.3/32" in shown
    assert awgctl("peer", "remove", second, "--yes", env=env).returncode == 0
    assert second not in server.conf.read_text()
    assert awgctl("peer", "add", "-i", ifname, env=env).returncode == 2  # no key: usage


def test_samples_during_changes_book_everything_exactly_once(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    steady, changed, added = bed.peers
    stop = threading.Event()
    failures: list[object] = []

    def sample_all_the_time() -> None:
        while not stop.is_set():
            answer = server.daemon.call("traffic.sample")
            if "result" not in answer:
                failures.append(answer)

    sampler = threading.Thread(target=sample_all_the_time)
    sampler.start()
    try:
        for round_ in range(3):
            bed.ping(steady, 2)
            server.result("peer.block", public_key=changed.tunnel.public_key)
            bed.ping(steady, 1)
            server.result("peer.update", public_key=changed.tunnel.public_key, label=f"round {round_}")
            server.result("peer.unblock", public_key=changed.tunnel.public_key)
            server.result("peer.add", public_key=added.tunnel.public_key)
            server.result("peer.remove", public_key=added.tunnel.public_key)
    finally:
        stop.set()
        sampler.join()
    assert not failures
    server.daemon.result("traffic.sample")
    peer = server.result("traffic.get", public_key=steady.tunnel.public_key)
    # One session: a handshake and 9 pings, whatever the samples and changes interleaved.
    assert pair(peer["period"]) == pair(peer["session"]) == bed.flavor.expected(9)


def test_the_config_file_stays_whole_when_awgd_is_killed_during_edits(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]

    server = Server(daemons, bed)
    keys = {c.tunnel.public_key for c in bed.peers}
    rng = random.Random(16)
    for attempt in range(8):
        label = f"label {attempt}"
        thread = threading.Thread(
            target=server.daemon.call,
            args=("peer.update",),
            kwargs={"interface": server.ifname, "public_key": bed.peers[0].tunnel.public_key, "label": label},
        )
        thread.start()
        threading.Event().wait(rng.uniform(0.0, 0.25))  # a kill at a random point of the change
        server.daemon.stop(signal.SIGKILL)
        thread.join()
        text = server.conf.read_text()
        assert text.startswith(COMMENT + "\n")
        assert {s.public_key for s in parse_config(text).peers()} == keys  # whole, every peer in it
        server.daemon.start()


def test_a_tool_that_refuses_a_change_is_minus_32006_without_keys(daemons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A stand-in for `awg` (fault injection): it shows one interface, and refuses every `set`
    with an error that quotes the key, as real tools do."""

    a, b = key("A"), key("E")
    (tmp_path / "dump").write_text(dump({"wg0": {a: (1, 1)}}))
    tool = tmp_path / "awg"
    tool.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = set ]; then echo "Unable to modify interface: peer $4: Operation not permitted" >&2; exit 1; fi\n'
        f'cat "{tmp_path}/dump"\n'
    )
    tool.chmod(0o755)
    (tmp_path / "conf").mkdir()
    daemon = daemons(str(tool), wireguard={"config_dir": str(tmp_path / "conf")}).start()
    for method, params in [
        ("peer.add", {"public_key": b, "allowed_ips": ["10.0.0.2/32"]}),
        ("peer.block", {"public_key": a}),
        ("peer.update", {"public_key": a, "persistent_keepalive": 25}),
    ]:
        error = daemon.call(method, interface="wg0", **params)["error"]
        assert error["code"] == -32006, (method, error)
        assert "Operation not permitted" in error["data"]["reason"]
        assert a not in error["data"]["reason"] and b not in error["data"]["reason"]  # keys replaced
    (tmp_path / "conf" / "wg0.conf").write_text(f"[Interface]\nListenPort = 51820\n\n[Peer]\nPublicKey = {a}\n")
    error = daemon.call("peer.remove", interface="wg0", public_key=a)["error"]
    assert error["code"] == -32006
    assert a in (tmp_path / "conf" / "wg0.conf").read_text()  # the file put back: the peer is still live
    peer = daemon.result("traffic.get", public_key=a)
    assert peer["blocked"] == [] and pair(peer["lifetime"]) == (0, 0)  # nothing changed, nothing booked twice
    assert daemon.result("events.list")["events"] == []
