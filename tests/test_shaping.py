"""awgd.shaping, the plan of tc commands for per-peer speed limits: a model of tc checks that
any sequence of wanted limits gives exactly the classes and filters wanted, each added once
and deleted only when there (hypothesis); and the real tc takes the commands on a real device
and sends each peer's packets to its own class (counted by the kernel)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awgd.shaping import (
    MAX_KBIT,
    MIN_KBIT,
    InterfaceShaping,
    RateLimit,
    ShapingError,
    Steps,
    Wanted,
    batch,
    ifb_name,
    plan,
)

KEYS = [f"key{i}" for i in range(6)]
NETWORKS = ["10.8.0.2/32", "10.8.1.2/32", "10.8.0.3/32", "fd00::2/128", "fd00::102/128", "10.9.0.0/24", "fd01::/64"]


class TcModel:
    """What tc would hold after the commands: qdiscs, classes and filter handles per device."""

    def __init__(self) -> None:
        self.qdiscs: set[tuple[str, str]] = set()
        self.classes: dict[tuple[str, str], str] = {}
        self.filters: dict[tuple[str, str], str] = {}  # (device, handle) -> flowid
        self.links: set[str] = set()

    def reset(self, device: str) -> None:
        self.qdiscs = {q for q in self.qdiscs if q[0] != device}
        self.classes = {k: v for k, v in self.classes.items() if k[0] != device}
        self.filters = {k: v for k, v in self.filters.items() if k[0] != device}

    def run(self, steps: Steps) -> None:
        for line in steps.reset:
            assert line[:2] == ["qdisc", "del"]
            self.reset(line[3])
        for line in steps.reset_ip:
            self.links.discard(line[2])
        for line in steps.ip_before:
            if line[:2] == ["link", "add"]:
                self.links.add(line[2])
        batch(steps.tc)  # the second wall never refuses what plan made
        for line in steps.tc:
            self.command(line)
        for line in steps.ip_after:
            assert line[:2] == ["link", "delete"]
            self.links.discard(line[2])

    def command(self, line: list[str]) -> None:
        kind, verb, device = line[0], line[1], line[3]
        if kind == "qdisc":
            which = "ingress" if "ingress" in line else "root"
            if verb == "add":
                assert (device, which) not in self.qdiscs, line
                self.qdiscs.add((device, which))
            else:
                assert (device, which) in self.qdiscs, line
                self.qdiscs.discard((device, which))
                if which == "root":
                    self.reset(device)
        elif kind == "class":
            classid = line[line.index("classid") + 1]
            if verb == "add":
                assert (device, "root") in self.qdiscs and (device, classid) not in self.classes, line
                self.classes[(device, classid)] = line[line.index("rate") + 1]
            else:
                assert self.classes.pop((device, classid), None) is not None, line
        else:
            if "handle" not in line:  # the ingress redirect
                assert (device, "ingress") in self.qdiscs and "mirred" in line
                return
            handle = line[line.index("handle") + 1]
            if verb == "add":
                assert (device, handle) not in self.filters, line
                self.filters[(device, handle)] = line[line.index("flowid") + 1] if "flowid" in line else ""
            else:
                assert self.filters.pop((device, handle), None) is not None, line


def expected_rates(wanted: dict[str, Wanted], state: InterfaceShaping) -> dict[tuple[str, str], str]:
    rates = {}
    for key, want in wanted.items():
        slot = f"1:{state.peers[key].slot:x}"
        if want.limit.down_kbit is not None:
            rates[(state.device, slot)] = f"{want.limit.down_kbit}kbit"
        if want.limit.up_kbit is not None:
            rates[(state.ifb, slot)] = f"{want.limit.up_kbit}kbit"
    return rates


kbit = st.one_of(st.none(), st.integers(MIN_KBIT, MAX_KBIT))
wants = st.builds(
    Wanted,
    st.builds(RateLimit, kbit, kbit),
    st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=3, unique=True).map(tuple),
)
rounds = st.lists(
    st.tuples(st.dictionaries(st.sampled_from(KEYS), wants, max_size=5), st.sampled_from([7, 7, 7, 8])),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(rounds)
def test_any_sequence_of_limits_leaves_exactly_what_is_wanted(steps: list[tuple[dict[str, Wanted], int]]) -> None:
    state = InterfaceShaping("awg0", ifb_name("awg0"))
    tc = TcModel()
    for wanted, ifindex in steps:
        if ifindex != state.ifindex:
            tc = TcModel()  # a re-created interface has nothing; its IFB is kept by name
            tc.links = {state.ifb} if state.redirected else set()
        tc.run(plan(state, ifindex, wanted))
        live = {k: w for k, w in wanted.items() if not w.limit.empty}
        assert set(state.peers) == set(live)
        assert tc.classes == expected_rates(live, state)
        # Every address of every peer limited that way has its filter to the peer's class.
        for key, want in live.items():
            slot = f"1:{state.peers[key].slot:x}"
            for device, limit, rules in (
                (state.device, want.limit.down_kbit, state.peers[key].down),
                (state.ifb, want.limit.up_kbit, state.peers[key].up),
            ):
                assert len(rules) == (len(want.networks) if limit is not None else 0)
                for rule in rules:
                    assert tc.filters[(device, f"{rule.table:x}:{rule.bucket:x}:{rule.node:x}")] == slot
        per_peer = sum(len(a.down) + len(a.up) for a in state.peers.values())
        # Besides the peers' filters, each HTB tree has its two hash tables and the two links to them.
        structure = sum(1 for (_, handle) in tc.filters if handle in ("2:", "3:") or handle.startswith("800::f0"))
        assert structure == 4 * sum(1 for side in (state.egress, state.ingress) if side.ready)
        assert len(tc.filters) == per_peer + structure  # nothing left behind
        assert state.redirected == any(w.limit.up_kbit is not None for w in live.values())
        assert (state.ifb in tc.links) == state.redirected
        # Nothing changes, nothing is sent.
        again = plan(state, ifindex, wanted)
        assert again.empty


def test_a_change_to_one_peer_touches_that_peer_alone() -> None:
    state = InterfaceShaping("awg0", ifb_name("awg0"))
    wanted = {f"k{i}": Wanted(RateLimit(1000 + i, None), (f"10.8.{i // 250}.{i % 250 + 2}/32",)) for i in range(2000)}
    plan(state, 3, wanted)
    wanted["k7"] = Wanted(RateLimit(5000, None), wanted["k7"].networks)
    steps = plan(state, 3, wanted)
    assert not steps.reset and not steps.ip_before
    assert len(steps.tc) == 4  # the old filter and class out, the new class and filter in
    assert all("10.8.0.9/32" in " ".join(line) or "class" in line for line in steps.tc if "add" in line)


def test_the_second_wall_refuses_what_could_change_a_command() -> None:
    for bad in (["qdisc", "del", "dev", "awg0\nqdisc", "root"], ["filter", "add", "a b"], ["x", "#"], ["x", ""]):
        with pytest.raises(ShapingError):
            batch([bad])
    with pytest.raises(ShapingError):
        plan(InterfaceShaping("awg0; reboot", "ifb"), 1, {})
    with pytest.raises(ShapingError):
        plan(InterfaceShaping("awg0", "ifbawg0"), 1, {"k": Wanted(RateLimit(1000), ("10.0.0.1/32 flowid 1:1",))})
    with pytest.raises(ShapingError):
        RateLimit(MIN_KBIT - 1)
    with pytest.raises(ShapingError):
        RateLimit(True)  # type: ignore[arg-type]
    assert RateLimit(2000, None).lower(RateLimit(500, 800)) == RateLimit(500, 800)
    assert RateLimit(None, 300).lower(None) == RateLimit(None, 300)


# ---- the real tc ------------------------------------------------------------------------------


def ns(name: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    argv_ = ["ip", "netns", "exec", name, *argv]
    return subprocess.run(argv_, input=stdin, capture_output=True, text=True, check=False)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth: `a` (10.77.0.1, fd77::1) shapes what it sends to `b`."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if shutil.which("ping") is None:
        pytest.skip("needs ping (iputils-ping)")
    a, b = f"awgdtc{uuid.uuid4().hex[:6]}", f"awgdtc{uuid.uuid4().hex[:6]}"
    for name in (a, b):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        veth = ["ip", "-n", a, "link", "add", "awg0", "type", "veth", "peer", "name", "eth0", "netns", b]
        subprocess.run(veth, check=True)
        for name, address, v6 in ((a, "10.77.0.1/24", "fd77::1/64"), (b, "10.77.0.2/24", "fd77::2/64")):
            dev = "awg0" if name == a else "eth0"
            subprocess.run(["ip", "-n", name, "addr", "add", address, "dev", dev], check=True)
            subprocess.run(["ip", "-n", name, "addr", "add", v6, "dev", dev, "nodad"], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
        yield a, b
    finally:
        for name in (a, b):
            subprocess.run(["ip", "netns", "del", name], check=False)


def apply(name: str, steps: Steps) -> None:
    for line in steps.reset:
        ns(name, "tc", *line)
    for line in steps.reset_ip:
        ns(name, "ip", *line)
    for line in steps.ip_before:
        ns(name, "ip", *line)
    if steps.tc:
        done = ns(name, "tc", "-batch", "-", stdin=batch(steps.tc))
        assert done.returncode == 0, done.stderr
    for line in steps.ip_after:
        assert ns(name, "ip", *line).returncode == 0


def class_bytes(name: str, device: str) -> dict[str, int]:
    """Bytes sent through each HTB class (tc 6.1 prints no JSON for HTB classes)."""
    shown = ns(name, "tc", "-s", "class", "show", "dev", device).stdout
    return {handle: int(sent) for handle, sent in re.findall(r"class htb (\S+) .*?\n\s*Sent (\d+) bytes", shown)}


def test_real_tc_sends_each_peers_packets_to_its_class(pair: tuple[str, str]) -> None:
    a, b = pair
    state = InterfaceShaping("awg0", ifb_name("awg0"))
    wanted = {
        "b4": Wanted(RateLimit(2000, 1000), ("10.77.0.2/32",)),
        "b6": Wanted(RateLimit(3000, None), ("fd77::2/128",)),
        "elsewhere": Wanted(RateLimit(4000, None), ("10.78.0.0/24",)),
    }
    apply(a, plan(state, 5, wanted))
    slots = {key: f"1:{applied.slot:x}" for key, applied in state.peers.items()}
    assert ns(a, "ping", "-c", "3", "-i", "0.2", "-s", "1000", "10.77.0.2").returncode == 0
    assert ns(a, "ping", "-c", "2", "-i", "0.2", "-s", "500", "fd77::2").returncode == 0
    counted = class_bytes(a, "awg0")
    assert counted[slots["b4"]] >= 3 * 1000 and counted[slots["b6"]] >= 2 * 500
    assert counted[slots["elsewhere"]] == 0
    # What b sends back arrives on a's ingress, goes through the IFB, and is counted there.
    assert ns(b, "ping", "-c", "3", "-i", "0.2", "-s", "700", "10.77.0.1").returncode == 0
    assert class_bytes(a, "ifbawg0")[slots["b4"]] >= 3 * 700
    # One peer's limit changed, another lifted: the kernel holds exactly what is wanted.
    wanted["b4"] = Wanted(RateLimit(2500, None), ("10.77.0.2/32",))
    del wanted["b6"]
    apply(a, plan(state, 5, wanted))
    classes = ns(a, "tc", "class", "show", "dev", "awg0").stdout
    assert "rate 2500Kbit" in classes and "rate 3Mbit" not in classes
    assert ns(a, "ip", "link", "show", "ifbawg0").returncode != 0  # no upload limit left: no IFB
    apply(a, plan(state, 5, {}))
    assert ns(a, "tc", "class", "show", "dev", "awg0").stdout.strip() == ""


def test_what_ip_lists_tells_whether_the_limits_are_gone() -> None:
    from awgd.ip_link import Link

    state = InterfaceShaping("awg0", ifb_name("awg0"))
    plan(state, 4, {"k": Wanted(RateLimit(2000, 1000), ("10.8.0.2/32",))})
    there = {"awg0": Link(4, True, "htb"), "ifbawg0": Link(9, True, "htb")}
    assert not state.gone(there)
    assert state.gone({**there, "awg0": Link(4, True, "fq_codel")})  # a new namespace, the same ifindex
    assert state.gone({"awg0": there["awg0"]})  # the IFB went with the old namespace
    assert state.gone({})
    plan(state, 4, {"k": Wanted(RateLimit(2000, None), ("10.8.0.2/32",))})
    assert not state.gone({"awg0": there["awg0"]})  # no upload limit: no IFB to look for
