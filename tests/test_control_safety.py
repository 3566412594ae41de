"""The review's defects of control (issue 26) against a real awgd on real amneziawg-go 3.1
in namespaces: what a member of the socket's group or an admin can send must never reach
root's files or commands, or the daemon's memory, beyond what it is for."""

from __future__ import annotations

import pytest
import test_plans
from conftest import key
from test_peers import Server
from wgbed import TestBed

pytestmark = [pytest.mark.wireguard]

# D6: Python's ipaddress took this as an IPv6 network; awgd wrote it into the config file of
# a blocked or absent peer, and the next awg-quick up ran the PreUp as root.
SCOPE_PAYLOAD = "::%\n[Interface]\nPreUp = touch /tmp/awgd-owned\n/128"


bed = test_plans.bed  # two clients on real amneziawg-go 3.1


def test_an_ipv6_scope_id_never_reaches_the_config_file(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    blocked, absent = bed.peers[0].tunnel.public_key, bed.peers[1].tunnel.public_key
    server.result("peer.block", public_key=blocked)  # a blocked peer's update never asks the tool
    server.result("peer.update", public_key=absent, label="gone")  # its settings stay in the ledger
    server.tunnel.wg("set", server.ifname, "peer", absent, "remove")  # gone behind awgd's back
    server.daemon.result("traffic.sample")
    before = server.conf.read_text()
    for payload in (SCOPE_PAYLOAD, "fe80::1%eth0/128", "10.8.1.9/32\nPreUp = id"):
        for target in (blocked, absent):
            answer = server.call("peer.update", public_key=target, allowed_ips=[payload])
            assert answer["error"]["code"] == -32602, (target, answer)
        answer = server.call("peer.add", public_key=key("n"), allowed_ips=[payload])
        assert answer["error"]["code"] == -32602, answer
        assert server.conf.read_text() == before
    assert "PreUp" not in server.conf.read_text()
    assert key("n") not in server.live_keys()
    # The peers are as they were: the blocked one is still blocked, and unblocks.
    assert server.result("peer.unblock", public_key=blocked)["blocked"] == []


def test_keepalive_zero_turns_it_off_on_awg_3(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(1, 2))
    user = bed.peers[0].tunnel.public_key

    def live() -> str:
        shown = server.tunnel.wg("show", server.ifname, "persistent-keepalive")
        return dict(line.split("\t") for line in shown.splitlines())[user]

    server.result("peer.update", public_key=user, persistent_keepalive=25)
    assert live() == "25"
    server.result("peer.update", public_key=user, persistent_keepalive=0)
    assert live() == "off"
    assert "PersistentKeepalive" not in server.conf.read_text().split(user)[1].split("[Peer]")[0]


def test_a_route_outside_the_interfaces_subnets_needs_the_admins_word(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    """0.0.0.0/0 on a server's peer: awg-quick would route the server's own traffic to it."""
    server = Server(daemons, bed, on_server=(1, 2))
    user = bed.peers[0].tunnel.public_key
    before = server.conf.read_text()
    for wrong in ("0.0.0.0/0", "10.77.0.0/16", f"{server.tunnel.address}/32"):
        answer = server.call("peer.add", public_key=key("o"), allowed_ips=[wrong])
        assert answer["error"]["code"] == -32602 and answer["error"]["data"]["allowed_ip"] == wrong, answer
        answer = server.call("peer.update", public_key=user, allowed_ips=[wrong])
        assert answer["error"]["code"] == -32602, answer
    assert server.conf.read_text() == before and key("o") not in server.live_keys()
    site = server.result("peer.add", public_key=key("o"), allowed_ips=["10.77.0.0/16"], outside_subnets=True)
    assert site["allowed_ips"] == ["10.77.0.0/16"] and key("o") in server.live_keys()


def test_a_prefix_without_standard_input_is_refused_before_anything_changes(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    """The review's D9: with a prefix awgd does not know (not docker/podman exec), the config
    file was emptied (189 bytes, server key included, to 0) and the answer said persisted."""
    server = Server(daemons, bed, on_server=(1, 2))
    server.daemon.stop()
    # awgd on the host; the tool, ip and the file edits reach into the namespace through a
    # prefix that, like `kubectl exec` without -i, gives the command no standard input.
    dropping = bed.dir / "exec-without-stdin"
    inside = " ".join(f"'{a}'" for a in bed.server.argv())
    dropping.write_text(f'#!/bin/sh\nexec {inside} "$@" < /dev/null\n')
    dropping.chmod(0o755)
    config = {"exec_prefix": [str(dropping)], "config_dir": str(server.conf_dir)}
    daemon = daemons("auto", wireguard=config, env=bed.path_env()).start()
    before = server.conf.read_text()
    user = bed.peers[0].tunnel.public_key
    psk = "P" * 42 + "A="
    for method, params in (
        ("peer.update", {"public_key": user, "label": "Dave"}),
        ("peer.add", {"public_key": key("d"), "preshared_key": psk}),
    ):
        answer = daemon.call(method, interface=server.ifname, **params)
        assert answer["error"]["code"] == -32006, answer
        assert "does not pass standard input" in answer["error"]["data"]["reason"]
    assert server.conf.read_text() == before
    assert key("d") not in server.live_keys()
