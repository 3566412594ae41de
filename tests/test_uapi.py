"""The UAPI reader: amneziawg-go's and wireguard-go's control socket read directly.

Pure: the parser over rendered answers (hypothesis), its incremental path against the plain
one, its errors and secrets. Real: the readings of both readers equal on every flavour
(amneziawg-go 3.1, the 2024 pair, wireguard-go), through a restart of the data plane; the
daemon reading by socket, saying so in server.status, and falling back to the tool (and
saying so) when a socket is missing or refuses.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from daemon import Awgd
from hypothesis import given, settings
from hypothesis import strategies as st
from wgbed import AMNEZIAWG as AWG_FLAVOR
from wgbed import FLAVORS, TestBed, available

from awgd.dump_parser import Interface, Peer, parse_dump
from awgd.uapi_parser import AMNEZIAWG, WIREGUARD, UapiError, UapiParser, parse_uapi
from awgd.uapi_reader import (
    UapiReader,
    UapiUnavailable,
    container_of,
    kernel_interfaces,
    read_links,
    resolve_in,
    x25519_public,
)

DERIVE = x25519_public()
PRIVATE = bytes(range(1, 33))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def public_of(private: bytes) -> str:
    assert DERIVE is not None
    return b64(DERIVE(private))


@dataclass
class FakePeer:
    key: bytes
    rx: int = 0
    tx: int = 0
    handshake: int = 0
    endpoint: str | None = None
    ips: tuple[str, ...] = ("10.0.0.2/32",)
    keepalive: int = 0

    def text(self, style: str) -> str:
        lines = [f"public_key={self.key.hex()}", "preshared_key=" + "ab" * 32, "protocol_version=1"]
        if self.endpoint:
            lines.append(f"endpoint={self.endpoint}")
        lines += [f"last_handshake_time_sec={self.handshake}", "last_handshake_time_nsec=17"]
        lines += [f"tx_bytes={self.tx}", f"rx_bytes={self.rx}"]
        if self.keepalive or style == "0.2":  # 0.2.x prints 0; 3.x leaves it out
            lines.append(f"persistent_keepalive_interval={self.keepalive}")
        lines += [f"allowed_ip={ip}" for ip in self.ips]
        return "\n".join(lines) + "\n"

    def peer(self) -> Peer:
        return Peer(
            b64(self.key),
            self.endpoint,
            self.ips,
            self.handshake,
            self.rx,
            self.tx,
            (self.keepalive, self.keepalive) if self.keepalive else None,
        )


HEAD_31 = (
    f"private_key={PRIVATE.hex()}\nlisten_port=51820\njc=4\njmin=40\njmax=70\ns1=50\ns2=100\ns3=20\ns4=16\n"
    "h1=1234567891\nh2=1234567892\nh3=1234567893\nh4=1234567894\ni1=<b 0x6177676474657374>\n"
    f"header_protection_key={'cd' * 32}\nrandom_trailers=0\ndisable_cookies=0\n"
)
HEAD_WG = f"private_key={PRIVATE.hex()}\nlisten_port=51820\n"


def answer(head: str, peers: list[FakePeer], style: str = "3.1", rng: random.Random | None = None) -> str:
    order = list(peers)
    (rng or random.Random(1)).shuffle(order)  # Go's map order
    return head + "".join(p.text(style) for p in order)


def by_key(iface: Interface) -> Interface:
    return replace(iface, peers=tuple(sorted(iface.peers, key=itemgetter(0))), changed=None)


# ---- pure ---------------------------------------------------------------------------------


def test_an_amneziawg_3_answer() -> None:
    peers = [FakePeer(bytes([7] * 32), 276, 336, 1796637521, "10.200.1.2:41089"), FakePeer(bytes([8] * 32))]
    iface = parse_uapi("awg0", answer(HEAD_31, peers), AMNEZIAWG, DERIVE)  # type: ignore[arg-type]
    assert iface.public_key == public_of(PRIVATE)
    assert iface.listen_port == 51820 and iface.fwmark is None and iface.format == "awg3.1"
    assert dict(iface.awg or ()) == {
        "jc": 4, "jmin": 40, "jmax": 70, "s1": 50, "s2": 100, "s3": 20, "s4": 16,
        "h1": "1234567891", "h2": "1234567892", "h3": "1234567893", "h4": "1234567894",
        "i1": "<b 0x6177676474657374>",
    }  # fmt: skip
    assert sorted(iface.peers) == sorted(p.peer() for p in peers)


def test_plain_wireguard_and_unset_obfuscation() -> None:
    peers = [FakePeer(bytes([9] * 32), keepalive=25, ips=("10.0.0.2/32", "fd00::2/128"))]
    plain = parse_uapi("wg0", answer(HEAD_WG, peers, "0.2"), WIREGUARD, DERIVE)  # type: ignore[arg-type]
    assert plain.awg is None and plain.format == "wg"
    assert plain.peers == (peers[0].peer(),)
    # amneziawg-go 0.2.x with nothing set prints no parameter; its tool prints zeros (awg1).
    bare = parse_uapi("awg0", answer(HEAD_WG, peers, "0.2"), AMNEZIAWG, DERIVE)  # type: ignore[arg-type]
    assert bare.format == "awg1"
    assert dict(bare.awg or ()) == {
        "jc": 0, "jmin": 0, "jmax": 0, "s1": 0, "s2": 0, "h1": "0", "h2": "0", "h3": "0", "h4": "0"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("private_key=zz\n", 1, "private key is not a hex key"),
        ("listen_port=70000\n", 1, "listen port is not a port number"),
        ("garbage\n", 1, "not a key=value line"),
        (HEAD_WG + "public_key=" + "ab" * 31 + "\n", 3, "public key is not a hex key"),
        (HEAD_WG + "public_key=" + "ab" * 32 + "\nrx_bytes=-1\n", 4, "rx bytes is not a counter"),
        (HEAD_WG + "public_key=" + "ab" * 32 + "\nrx_bytes=9223372036854775808\n", 4, "rx bytes is not a counter"),
        (HEAD_WG + "public_key=" + "ab" * 32 + "\nendpoint=1.2.3.4\n", 4, "endpoint is not ADDRESS:PORT"),
        (HEAD_WG + "public_key=" + "ab" * 32 + "\nallowed_ip=10.0.0.0/33\n", 4, "allowed IP is not a CIDR range"),
        (HEAD_WG + "public_key=" + "ab" * 32 + "\nrx_bytes=1\nrx_bytes=2\n", 5, "rx_bytes given twice"),
        (
            HEAD_WG + "public_key=" + "ab" * 32 + "\npreshared_key=" + "q" * 64 + "\n",
            4,
            "preshared key is not a hex key",
        ),
    ],
)
def test_bad_answers_name_the_line_never_the_content(text: str, line: int, reason: str) -> None:
    with pytest.raises(UapiError) as caught:
        parse_uapi("wg0", text, WIREGUARD, DERIVE)  # type: ignore[arg-type]
    assert (caught.value.line, caught.value.reason) == (line, reason)
    assert "ab" * 8 not in str(caught.value) and PRIVATE.hex() not in str(caught.value)


def test_secrets_never_leave_the_parser() -> None:
    peers = [FakePeer(bytes([5] * 32), 1, 2)]
    parser = UapiParser(DERIVE)  # type: ignore[arg-type]
    iface = parser.parse("awg0", answer(HEAD_31, peers), AMNEZIAWG)
    shown = repr(iface)
    for secret in (PRIVATE.hex(), b64(PRIVATE), "ab" * 32, b64(bytes.fromhex("ab" * 32)), "cd" * 32):
        assert secret not in shown
    # What the parser keeps of the interface's lines is a digest, not the lines.
    assert PRIVATE.hex() not in repr(vars(parser)) and PRIVATE.hex() not in repr(parser._last)


# Histories of answers: counters moving, peers coming, going and re-keyed, the head changing,
# Go's order new each time. The incremental parser must give what the plain one gives, keep
# the last order while the keys stay, and name in `changed` every peer that is not the very
# Peer of the last answer.
_STEP = st.sampled_from(["move", "move", "move", "same", "add", "remove", "rekey", "head", "endpoint"])


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=12), st.integers(0, 2**32), st.sampled_from(["3.1", "0.2"]))
def test_the_incremental_path_gives_what_the_plain_one_gives(steps: list[str], seed: int, style: str) -> None:
    rng = random.Random(seed)
    peers = [FakePeer(rng.randbytes(32), rng.randrange(10**6), rng.randrange(10**6)) for _ in range(rng.randrange(6))]
    head = HEAD_31 if style == "3.1" else HEAD_WG
    parser = UapiParser(DERIVE)  # type: ignore[arg-type]
    last: Interface | None = None
    for step in ["same", *steps]:
        if step == "move" and peers:
            for peer in rng.sample(peers, rng.randrange(1, len(peers) + 1)):
                peer.rx += rng.randrange(1, 3000)
                peer.tx += rng.randrange(0, 3000)
                peer.handshake = rng.choice([peer.handshake, rng.randrange(1, 2**31)])
        elif step == "add":
            peers.append(FakePeer(rng.randbytes(32)))
        elif step == "remove" and peers:
            peers.remove(rng.choice(peers))
        elif step == "rekey" and peers:
            rng.choice(peers).key = rng.randbytes(32)
        elif step == "head":
            head = head.replace("listen_port=51820", "listen_port=51821")
        elif step == "endpoint" and peers:
            rng.choice(peers).endpoint = f"[2001:db8::{rng.randrange(1, 999)}]:{rng.randrange(1, 65535)}"
        text = answer(head, peers, style, rng)
        got = parser.parse("awg0", text, AMNEZIAWG)
        plain = parse_uapi("awg0", text, AMNEZIAWG, DERIVE)  # type: ignore[arg-type]
        assert by_key(got) == by_key(plain)
        if last is not None and {p[0] for p in last.peers} == {p[0] for p in got.peers}:
            assert got.changed is not None
            assert [p[0] for p in got.peers] == [p[0] for p in last.peers]  # the order kept
            before = {p[0]: p for p in last.peers}
            unchanged = [p for p in got.peers if p not in got.changed]
            assert all(before[p[0]] is p for p in unchanged)
            assert {p[0] for p in got.changed} >= {p[0] for p in got.peers if before[p[0]] != p}
        else:
            assert got.changed is None
        last = got


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("=\n_aeiklnoprstuy0123456789abcdef.:/[]-x")), max_size=400))
def test_any_text_is_read_or_refused_clearly(text: str) -> None:
    parser = UapiParser(DERIVE)  # type: ignore[arg-type]
    for _ in range(2):
        try:
            got = parser.parse("wg0", text, WIREGUARD)
        except UapiError as exc:
            assert len(str(exc)) < 120
            continue
        assert by_key(got) == by_key(parse_uapi("wg0", text, WIREGUARD, DERIVE))  # type: ignore[arg-type]


def test_a_repeated_key_keeps_its_first_group_and_ends_the_fast_path() -> None:
    one, two = FakePeer(bytes([1] * 32), 5), FakePeer(bytes([2] * 32), 6)
    parser = UapiParser(DERIVE)  # type: ignore[arg-type]
    parser.parse("wg0", HEAD_WG + one.text("3.1") + two.text("3.1"), WIREGUARD)
    again = replace(one, rx=99)
    got = parser.parse("wg0", HEAD_WG + one.text("3.1") + again.text("3.1"), WIREGUARD)
    assert got.changed is None  # not the same keys: `two` is gone, `one` is there twice
    assert [p.rx_bytes for p in got.peers] == [5]


def test_resolve_in_keeps_a_container_s_links_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run" / "amneziawg").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")  # as Debian and Alpine images have it
    (root / "escape").symlink_to("/../../etc")
    assert resolve_in(str(root), "/var/run/amneziawg") == str(root / "run" / "amneziawg")
    assert resolve_in(str(root), "/escape/passwd") is None  # root/etc does not exist
    (root / "loop").symlink_to("loop")
    assert resolve_in(str(root), "/loop/x") is None


def test_container_of_names_the_engine_and_container() -> None:
    assert container_of(["docker", "exec", "amnezia-awg"]) == (["docker"], "amnezia-awg")
    assert container_of(["/usr/bin/podman", "--remote", "exec", "-u", "root", "c1"]) == (
        ["/usr/bin/podman", "--remote"],
        "c1",
    )
    assert container_of(["ip", "netns", "exec", "x"]) is None
    assert container_of(["docker", "exec"]) is None


def test_kernel_interfaces_are_found_only_where_a_module_is_loaded(tmp_path: Path) -> None:
    net, module = tmp_path / "net", tmp_path / "module"
    for name, devtype in (("wg9", "DEVTYPE=wireguard"), ("awg9", "DEVTYPE=amneziawg"), ("tun0", "")):
        (net / name).mkdir(parents=True)
        (net / name / "uevent").write_text(f"INTERFACE={name}\nIFINDEX=7\n{devtype}\n")
    assert kernel_interfaces(str(net), frozenset(), [str(module)]) == []  # no module: no look
    module.mkdir()
    assert sorted(kernel_interfaces(str(net), frozenset(), [str(module)])) == ["awg9", "wg9"]
    assert kernel_interfaces(str(net), frozenset({"tun0", "awg9"}), [str(module)]) == ["awg9"]


def test_links_come_from_the_sysfs_given(tmp_path: Path) -> None:
    for name, flags in (("awg0", "0x1091"), ("awg1", "0x1090")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ifindex").write_text("12\n" if name == "awg0" else "13\n")
        (tmp_path / name / "flags").write_text(flags + "\n")
    links = read_links({"awg0": str(tmp_path)}, frozenset({"awg1", "gone0"}), str(tmp_path))
    assert links is not None
    assert (links["awg0"].ifindex, links["awg0"].up, links["awg0"].qdisc) == (12, True, None)
    assert (links["awg1"].ifindex, links["awg1"].up) == (13, False)  # IFF_UP clear: down
    assert "gone0" not in links
    assert read_links({"awg0": str(tmp_path / "nowhere")}, frozenset(), str(tmp_path)) is None


# ---- a socket that answers what a test wants --------------------------------------------


class FakeSocket:
    """A Unix socket at `path` answering every connection with `reply` (or closing)."""

    def __init__(self, path: Path, reply: bytes | None) -> None:
        self.path = path
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.asked: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.asked.append(conn.recv(64))
                if self.reply is not None:
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def read_once(directory: Path) -> Any:
    reader = UapiReader(UapiParser(DERIVE))  # type: ignore[arg-type]
    return asyncio.run(reader.read([], [str(directory)], frozenset(), 2))


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"errno=22\n\n", "socket answered errno=22"),
        (None, "socket closed before the end of its answer"),
        (b"garbage line\nerrno=0\n\n", "answer cannot be parsed: line 1: not a key=value line"),
        (b"listen_port=1\n\n", "answer has no errno line"),
    ],
)
def test_a_socket_that_refuses_is_named(tmp_path: Path, reply: bytes | None, reason: str) -> None:
    fake = FakeSocket(tmp_path / "wg7.sock", reply)
    try:
        with pytest.raises(UapiUnavailable) as caught:
            read_once(tmp_path)
        assert str(caught.value) == f"wg7's {reason}" and not caught.value.expected
        assert fake.asked == [b"get=1\n\n"]
    finally:
        fake.close()


def test_no_socket_is_expected(tmp_path: Path) -> None:
    (tmp_path / "wg0.sock").write_text("not a socket")
    with pytest.raises(UapiUnavailable) as caught:
        read_once(tmp_path)
    assert caught.value.expected and "no control socket" in str(caught.value)


# ---- real data planes ---------------------------------------------------------------------


@pytest.fixture(params=FLAVORS, ids=[f.id for f in FLAVORS])
def bed(request: pytest.FixtureRequest) -> Iterator[TestBed]:
    problem = available(request.param)
    if problem:
        pytest.skip(problem)
    made = TestBed(clients=2, flavor=request.param).up()
    try:
        yield made
    finally:
        made.down()


def both_readings(bed: TestBed, reader: UapiReader) -> tuple[dict[str, Interface], dict[str, Interface]]:
    got = asyncio.run(reader.read([], [str(bed.server.rundir)], frozenset(), 5))
    tool = parse_dump(bed.servers[0].wg("show", "all", "dump"))
    return {i.name: by_key(i) for i in got.interfaces}, {i.name: by_key(i) for i in tool}


def test_the_readers_agree_on_real_data_planes(bed: TestBed) -> None:
    """Both readers on the same interface, with traffic, a keepalive, a second range, and
    through a restart of the data plane: equal readings (the counters read twice in a row
    are equal when nothing moves in between; pings are done before each pair)."""
    reader = UapiReader(UapiParser(DERIVE))  # type: ignore[arg-type]
    server = bed.servers[0]
    first, second = bed.peers
    server.wg("set", server.ifname, "peer", second.tunnel.public_key, "persistent-keepalive", "0")
    ranges = f"{first.tunnel.address}/32,fd00::9/128"
    server.wg("set", server.ifname, "peer", first.tunnel.public_key, "allowed-ips", ranges)
    bed.ping(first, 3)
    uapi, tool = both_readings(bed, reader)
    assert uapi == tool
    moved = next(iter(uapi.values()))
    assert any(p.rx_bytes > 0 for p in moved.peers)
    assert uapi[server.ifname].awg == (None if bed.flavor.daemon == "wireguard-go" else tool[server.ifname].awg)
    # Again: only the moving peer is read afresh.
    bed.ping(second, 2)
    got = asyncio.run(reader.read([], [str(bed.server.rundir)], frozenset(), 5)).interfaces[0]
    assert got.changed is not None and {p.public_key for p in got.changed} == {second.tunnel.public_key}
    # The data plane restarts: every counter from zero, both readers agree again.
    bed.restart_server(server)
    bed.restart_client(first)  # a fresh session, so it handshakes at once
    bed.ping(first, 2)
    uapi, tool = both_readings(bed, reader)
    assert uapi == tool
    assert all(p.rx_bytes < 1000 for p in uapi[server.ifname].peers)


def test_the_daemon_reads_by_socket_and_falls_back_to_the_tool(tmp_path: Path) -> None:
    """awgd with the sockets where socket_dirs says: samples read by socket (server.status
    says "uapi"), the books exact against the interface's own counters; the socket missing, or
    answering an error: the tool reads, server.status says "tool" and why, the log says so; the
    socket back: the sockets again, nothing counted twice."""
    problem = available(AWG_FLAVOR)
    if problem:
        pytest.skip(problem)
    bed = TestBed(clients=1, flavor=AWG_FLAVOR).up()
    # awgd looks in a directory of its own, a link to the bed's; the tool in the bed's. Turning
    # the link into another directory hides the socket from awgd only. (Never touch the socket
    # itself: amneziawg-go stops at any inotify event on it, a hard link or a chmod.)
    sockets = tmp_path / "sockets"
    sockets.symlink_to(bed.server.rundir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    daemon = Awgd(
        tmp_path / "awgd",
        "auto",
        wireguard={"reader": "uapi", "socket_dirs": [str(sockets)]},
        periods={"timezone": "UTC"},
        env=bed.path_env(),
        prefix=bed.server.argv(),  # awgd runs in the bed's namespace, where its tool looks
    )
    server, client = bed.servers[0], bed.peers[0]

    def point(to: Path) -> None:
        (tmp_path / "new").symlink_to(to)
        os.rename(tmp_path / "new", sockets)

    def sample_and_status() -> dict[str, Any]:
        bed.ping(client, 2)
        daemon.result("traffic.sample")
        return daemon.result("server.status")  # type: ignore[no-any-return]

    def exact() -> None:
        rx, tx = server.counters(client.tunnel.public_key)
        peer = daemon.result("traffic.get", public_key=client.tunnel.public_key)
        assert (peer["session"]["rx_bytes"], peer["session"]["tx_bytes"]) == (rx, tx)
        assert (peer["period"]["rx_bytes"], peer["period"]["tx_bytes"]) == (rx, tx)

    try:
        daemon.start()
        status = sample_and_status()
        assert [i["reader"] for i in status["interfaces"]] == ["uapi"]
        assert status["reader"] == {"setting": "uapi", "problem": None}
        assert status["tool"] == "awg"
        exact()
        point(elsewhere)
        status = sample_and_status()
        assert [i["reader"] for i in status["interfaces"]] == ["tool"]
        assert status["reader"]["problem"] == f"no control socket in {sockets}"
        exact()
        fake = FakeSocket(elsewhere / f"{server.ifname}.sock", b"errno=5\n\n")
        try:
            status = sample_and_status()
            assert [i["reader"] for i in status["interfaces"]] == ["tool"]
            assert status["reader"]["problem"] == f"{server.ifname}'s socket answered errno=5"
            exact()
        finally:
            fake.close()
        point(bed.server.rundir)
        status = sample_and_status()
        assert [i["reader"] for i in status["interfaces"]] == ["uapi"] and status["reader"]["problem"] is None
        exact()
        log = daemon.log.read_text()
        assert "read with awg, not the control sockets: no control socket" in log
        assert "socket answered errno=5" in log
    finally:
        daemon.stop()
        bed.down()
