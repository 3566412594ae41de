"""The pure parts of changing peers: config file edits (awgd.wg_config), clientsTable
(awgd.clients_table), addresses (awgd.addresses), and the file replacement's compare-and-swap
(awgd.server_files) on a real file."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awgd.addresses import AddressError, next_free, normalize_cidrs, outside, owners, parse_ip_addr, taken_by
from awgd.clients_table import parse_clients_table, rekey_client, remove_client, set_client
from awgd.server_files import FileChanged, FileError, read_text, replace_text, with_stdin
from awgd.wg_config import UnsafeText, add_peer, parse_config, peer_names, rekey_peer, remove_peer, update_peer

keys = st.binary(min_size=32, max_size=32).map(lambda raw: base64.b64encode(raw).decode())
comment = st.text(alphabet="abc xyz=#", max_size=20).map(lambda text: "# " + text)
setting = st.sampled_from(["Endpoint = 1.2.3.4:5", "PersistentKeepalive = 7", "AllowedIPs = 10.0.0.9/32"])


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A config file with an [Interface], comments and peers; and its peers' keys."""
    peer_keys = draw(st.lists(keys, max_size=5, unique=True))
    lines = [*draw(st.lists(comment, max_size=2)), "[Interface]", "PrivateKey = (secret)", "ListenPort = 51820"]
    for key in peer_keys:
        lines += draw(st.sampled_from([[""], ["", "# Name = someone"], []]))
        lines += [*draw(st.lists(comment, max_size=1)), "[Peer]", f"PublicKey = {key}"]
        lines += draw(st.lists(setting, max_size=2))
    ending = draw(st.sampled_from(["\n", "", "\n\n"]))
    return "\n".join(lines) + ending, peer_keys


def sections_of(text: str, key: str | None = None) -> list[tuple[str, ...]]:
    """Every section's lines but the one of `key` (its lead comments and trailing blank lines aside)."""
    return [
        tuple(line for line in s.lines if line.strip())
        for s in parse_config(text).sections
        if key is None or s.public_key != key
    ]


@settings(max_examples=300)
@given(config_files(), keys, st.booleans())
def test_adding_a_peer_keeps_every_other_line(drawn: tuple[str, list[str]], key: str, named: bool) -> None:
    text, existing = drawn
    edited = add_peer(
        text, key, allowed_ips=("10.8.0.7/32", "fd00::7/128"), preshared_key=None, label="Phone" if named else None
    )
    assert sections_of(edited, key) == sections_of(text, key)
    (mine,) = [s for s in parse_config(edited).peers() if s.public_key == key]
    assert mine.value("AllowedIPs") == "10.8.0.7/32, fd00::7/128"
    if named:
        assert peer_names(edited)[key] == "Phone"
    if key not in existing:
        assert edited.startswith(text.rstrip("\n"))  # appended: everything before it byte for byte
    assert remove_peer(edited, key).rstrip("\n") == remove_peer(text, key).rstrip("\n")


@settings(max_examples=300)
@given(config_files(), st.data())
def test_removing_or_updating_a_peer_touches_only_its_section(
    drawn: tuple[str, list[str]], data: st.DataObject
) -> None:
    text, existing = drawn
    if not existing:
        assert remove_peer(text, "x" * 43 + "=") == text
        return
    key = data.draw(st.sampled_from(existing))
    removed = remove_peer(text, key)
    assert key not in removed
    assert sections_of(removed) == sections_of(text, key)
    updated = update_peer(text, key, allowed_ips=("10.9.0.0/24",), keepalive=25, label="New", set_label=True)
    assert sections_of(updated, key) == sections_of(text, key)
    (mine,) = [s for s in parse_config(updated).peers() if s.public_key == key]
    assert mine.value("AllowedIPs") == "10.9.0.0/24" and mine.value("PersistentKeepalive") == "25"
    assert peer_names(updated)[key] == "New"
    off = update_peer(updated, key, keepalive=0, label=None, set_label=True)
    (mine,) = [s for s in parse_config(off).peers() if s.public_key == key]
    assert mine.value("PersistentKeepalive") is None and key not in peer_names(off)


@settings(max_examples=200)
@given(config_files(), st.data(), keys, st.one_of(st.none(), keys))
def test_a_rekey_changes_only_the_keys_of_the_peers_section(
    drawn: tuple[str, list[str]], data: st.DataObject, new: str, preshared: str | None
) -> None:
    text, existing = drawn
    if not existing or new in existing:
        assert rekey_peer(text, "x" * 42 + "E=", new, preshared) == text
        return
    key = data.draw(st.sampled_from(existing))
    rekeyed = rekey_peer(text, key, new, preshared)
    assert sections_of(rekeyed, new) == sections_of(text, key)  # every other section as it was
    (mine,) = [s for s in parse_config(rekeyed).peers() if s.public_key == new]
    (was,) = [s for s in parse_config(text).peers() if s.public_key == key]
    assert mine.value("PresharedKey") == preshared
    kept = {k: v for k, v in was.settings().items() if k.lower() not in ("publickey", "presharedkey")}
    assert {k: v for k, v in mine.settings().items() if k.lower() not in ("publickey", "presharedkey")} == kept
    assert peer_names(rekeyed).get(new) == peer_names(text).get(key)
    with pytest.raises(UnsafeText):
        rekey_peer(text, key, new + "\nPostUp = x", preshared)


def test_the_clients_table_is_kept_in_step_and_a_broken_one_left_alone() -> None:
    a, b = "A" * 43 + "=", "E" * 43 + "="
    table = json.dumps([{"clientId": a, "userData": {"clientName": "Phone", "creationDate": "x", "extra": 1}}])
    added = set_client(table, b, "Tablet", datetime(2026, 11, 27, 17, 2, 2))
    assert parse_clients_table(added) == {a: "Phone", b: "Tablet"}
    assert json.loads(added)[0]["userData"]["extra"] == 1  # fields awgd does not know are kept
    assert parse_clients_table(set_client(added, a, "Laptop", datetime.now())) == {a: "Laptop", b: "Tablet"}
    assert parse_clients_table(remove_client(added, a)) == {b: "Tablet"}
    assert set_client("{broken", a, "x", datetime.now()) == "{broken"
    assert remove_client("{broken", a) == "{broken"
    assert parse_clients_table(set_client("", a, "First", datetime.now())) == {a: "First"}
    c = "I" * 43 + "="
    rekeyed = rekey_client(added, a, c)  # the entry under its new key, name and date kept
    assert parse_clients_table(rekeyed) == {c: "Phone", b: "Tablet"}
    assert json.loads(rekeyed)[0]["userData"] == json.loads(added)[0]["userData"]
    assert rekey_client("{broken", a, c) == "{broken"


IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
5: awg0    inet 10.8.1.1/24 scope global awg0\\       valid_lft forever preferred_lft forever
5: awg0    inet6 fd00:8:1::1/64 scope global \\       valid_lft forever preferred_lft forever
5: awg0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever
6: wg1    inet 10.9.0.0/24 scope global wg1
"""


def test_own_addresses_from_ip_addr() -> None:
    assert [str(a) for a in parse_ip_addr(IP_ADDR, "awg0")] == ["10.8.1.1/24", "fd00:8:1::1/64"]
    assert [str(a) for a in parse_ip_addr(IP_ADDR, "wg1")] == ["10.9.0.0/24"]  # Amnezia's own: the network address
    assert parse_ip_addr(IP_ADDR, "nosuch") == ()


def test_next_free_address_examples() -> None:
    own = parse_ip_addr(IP_ADDR, "awg0")
    assert next_free(own, taken_by([])) == ("10.8.1.2/32", "fd00:8:1::2/128")
    assert next_free(own, taken_by([["10.8.1.2/32"], ["10.8.1.0/30"]])) == ("10.8.1.4/32", "fd00:8:1::2/128")
    assert next_free(own, taken_by([["10.8.1.0/24"]])) is None  # full
    amnezia = parse_ip_addr(IP_ADDR, "wg1")
    assert next_free(amnezia, taken_by([])) == ("10.9.0.1/32",)
    assert next_free((ipaddress.ip_interface("10.0.0.1/32"),), taken_by([])) is None  # no subnet with room


@settings(max_examples=300)
@given(st.integers(24, 30), st.sets(st.integers(0, 255), max_size=80), st.integers(0, 255))
def test_next_free_is_the_lowest_address_nobody_has(prefix: int, held: set[int], own_host: int) -> None:
    subnet = ipaddress.ip_network(f"10.7.3.0/{prefix}")
    hosts = [int(subnet.network_address) + n for n in range(subnet.num_addresses)]
    own = ipaddress.ip_interface(f"{ipaddress.IPv4Address(hosts[own_host % len(hosts)])}/{prefix}")
    taken = [[f"{ipaddress.IPv4Address(hosts[n % len(hosts)])}/32"] for n in held]
    free = [
        h
        for h in hosts[1:-1]
        if h != int(own.ip) and all(h != int(ipaddress.ip_network(t[0]).network_address) for t in taken)
    ]
    chosen = next_free((own,), taken_by(taken))
    if not free:
        assert chosen is None
    else:
        assert chosen == (f"{ipaddress.IPv4Address(free[0])}/32",)


def test_cidrs_are_normalised_and_owners_found() -> None:
    assert normalize_cidrs(["10.8.1.7", "10.8.1.9/24", "FD00::7/128", "10.8.1.7/32"]) == (
        "10.8.1.7/32",
        "10.8.1.0/24",
        "fd00::7/128",
    )
    for bad in ["10.8.1.300/32", "", "10.8.1.0/33", "x", 7, None, *INJECTIONS, "fe80::1%eth0/128", " 10.8.1.7/32"]:
        with pytest.raises(AddressError):
            normalize_cidrs([bad])  # type: ignore[list-item]
    assert owners([("K1", ["10.8.1.7/32"]), ("K2", ["10.8.1.0/24"])]) == {"10.8.1.7/32": "K1", "10.8.1.0/24": "K2"}


# The review's D6: Python's ipaddress takes an IPv6 scope id holding anything, so this was a
# valid "CIDR" that wrote a PreUp, run as root at the next awg-quick up.
INJECTIONS = [
    "::%\n[Interface]\nPreUp = touch /tmp/owned\n/128",
    "::%x/128",
    "10.8.1.7/32\n[Peer]",
    "10.8.1.7/32 # x",
]
UNSAFE = st.text(min_size=1).filter(lambda t: any(c in t for c in "#[]=\n\r\x85\u2028\u2029\x00"))


@given(junk=UNSAFE)
def test_the_writer_refuses_what_would_change_the_files_meaning(junk: str) -> None:
    """A second wall behind the API's checks: whoever calls it, no value with a line break,
    `#`, `[`, `]` or `=`, and no label with a line break, reaches a config file."""
    text = "[Interface]\nPrivateKey = x\n\n[Peer]\nPublicKey = K\nAllowedIPs = 10.8.1.2/32\n"
    with pytest.raises(UnsafeText):
        add_peer(text, "K2", allowed_ips=(junk,))
    with pytest.raises(UnsafeText):
        add_peer(text, "K2", allowed_ips=("10.8.1.3/32",), preshared_key=junk)
    with pytest.raises(UnsafeText):
        add_peer(text, junk, allowed_ips=("10.8.1.3/32",))
    with pytest.raises(UnsafeText):
        update_peer(text, "K", allowed_ips=(junk,))
    if any(c in junk for c in "\n\r\x85\u2028\u2029\x00"):
        with pytest.raises(UnsafeText):
            update_peer(text, "K", label=junk, set_label=True)
        with pytest.raises(UnsafeText):
            add_peer(text, "K2", allowed_ips=("10.8.1.3/32",), label=junk)


def test_allowed_ips_outside_the_interfaces_subnets() -> None:
    own = (ipaddress.ip_interface("10.8.1.1/24"), ipaddress.ip_interface("fd00::1/64"))
    inside = ["10.8.1.7/32", "10.8.1.8/31", "fd00::7/128"]
    assert outside(own, inside) == []
    wrong = ["0.0.0.0/0", "::/0", "10.8.1.0/24", "10.8.1.1/32", "10.9.0.7/32", "fd01::7/128", "10.8.0.0/16"]
    assert outside(own, wrong) == wrong
    assert outside((), ["0.0.0.0/0"]) == []  # an interface without addresses: nothing to compare


def test_docker_exec_gets_its_stdin_flag() -> None:
    assert with_stdin(["docker", "exec", "amnezia-awg"]) == ["docker", "exec", "-i", "amnezia-awg"]
    assert with_stdin(["docker", "exec", "-it", "amnezia-awg"]) == ["docker", "exec", "-it", "amnezia-awg"]
    assert with_stdin(["/usr/bin/podman", "exec", "x"]) == ["/usr/bin/podman", "exec", "-i", "x"]
    assert with_stdin(["ip", "netns", "exec", "vpn"]) == ["ip", "netns", "exec", "vpn"]
    assert with_stdin([]) == []


def test_an_edit_someone_made_meanwhile_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text("[Interface]\n")

    async def run() -> None:
        was = await read_text(str(path), [], 10)
        assert was == "[Interface]\n"
        path.write_text("[Interface]\n# the Amnezia app was here\n")  # between awgd's read and write
        with pytest.raises(FileChanged):
            await replace_text(str(path), [], 10, was=was, text="[Interface]\n[Peer]\n")
        assert path.read_text() == "[Interface]\n# the Amnezia app was here\n"
        assert await read_text(str(tmp_path / "missing.conf"), [], 10) is None
        await replace_text(str(path), [], 10, was=path.read_text(), text="new\n")
        assert path.read_text() == "new\n" and (path.stat().st_mode & 0o777) == 0o644  # its own mode kept
        fresh = tmp_path / "wg1.conf"
        await replace_text(str(fresh), [], 10, was=None, text="made\n")
        assert fresh.read_text() == "made\n" and (fresh.stat().st_mode & 0o777) == 0o600

    asyncio.run(run())


def test_an_edit_keeps_a_link_the_files_owner_and_mode(tmp_path: Path) -> None:
    """Issue 26: edits turned a linked config into a regular file and reset owner and mode."""
    real_dir = tmp_path / "kept"
    real_dir.mkdir()
    real = real_dir / "awg0.conf"
    real.write_text("[Interface]\n")
    os.chown(real, 0, 4)  # a group of the operator's (adm)
    real.chmod(0o640)
    link = tmp_path / "awg0.conf"
    link.symlink_to(real)

    async def run() -> None:
        await replace_text(str(link), [], 10, was="[Interface]\n", text="[Interface]\n[Peer]\n")

    asyncio.run(run())
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "[Interface]\n[Peer]\n"
    info = real.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 4, 0o640)
    assert sorted(p.name for p in real_dir.iterdir()) == ["awg0.conf"]  # no temporary file left


def test_a_directory_others_can_write_to_is_refused(tmp_path: Path) -> None:
    """The review's D10: root wrote through an attacker's file in a directory she could write."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    target = shared / "wg0.conf"
    target.write_text("[Interface]\n")

    async def run(prefix: list[str]) -> None:
        await replace_text(str(target), prefix, 10, was="[Interface]\n", text="[Interface]\nPrivateKey = x\n")

    with pytest.raises(FileError, match="writable by group or others"):
        asyncio.run(run([]))
    # Through a prefix (a container awgd cannot walk), the script checks the directory itself.
    with pytest.raises(FileError, match="not root's alone"):
        asyncio.run(run(["env"]))
    assert target.read_text() == "[Interface]\n"


def test_a_prefix_that_drops_standard_input_never_empties_the_file(tmp_path: Path) -> None:
    """The review's D9: `kubectl exec` without -i emptied wg0.conf and said persisted."""
    dropping = tmp_path / "no-stdin"
    dropping.write_text('#!/bin/sh\nexec "$@" < /dev/null\n')
    dropping.chmod(0o755)
    target = tmp_path / "wg0.conf"
    target.write_text("[Interface]\nPrivateKey = kept\n")
    target.chmod(0o600)

    async def run() -> None:
        await replace_text(str(target), [str(dropping)], 10, was=target.read_text(), text="[Interface]\n[Peer]\n")

    with pytest.raises(FileError, match="does not pass standard input"):
        asyncio.run(run())
    assert target.read_text() == "[Interface]\nPrivateKey = kept\n"


def test_content_that_arrives_garbled_is_not_renamed_into_place(tmp_path: Path) -> None:
    """A prefix that passes the probe and then loses part of the content: the SHA-256 check."""
    cutting = tmp_path / "cutting"
    # Passes what `cat` alone reads (the probe); cuts the content of the write to 5 bytes.
    cutting.write_text('#!/bin/sh\nif [ "$1" = cat ]; then exec "$@"; fi\nhead -c 5 | "$@"\n')
    cutting.chmod(0o755)
    target = tmp_path / "wg0.conf"
    target.write_text("[Interface]\n")

    async def run() -> None:
        await replace_text(str(target), [str(cutting)], 10, was=target.read_text(), text="[Interface]\n[Peer]\n")

    with pytest.raises(FileError, match="not what awgd sent"):
        asyncio.run(run())
    assert target.read_text() == "[Interface]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cutting", "wg0.conf"]
