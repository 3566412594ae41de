"""A user's device, end to end (API v3 §1): `awgctl peer new` and `awgctl peer rekey` against a
real awgd on real amneziawg-go 3.1 (S3, S4, I1 on), the 2024 pair and wireguard-go, and a
device brought up with exactly the file awgctl wrote, as awg-quick would (the file stripped,
its address set): it reaches the server and is counted exactly. The QR code is read back by
zbarimg, the vpn:// key decoded; the device's private key is searched for everywhere awgd
keeps or says anything.

Run alone with `bash tests/run.sh --quick tests/test_devices.py`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wgbed
from test_awgctl import awgctl
from test_peers import Server, pings
from wgbed import AMNEZIAWG, FLAVORS, SHARED_AMNEZIAWG, Client, TestBed

from awgd_client.amnezia_key import decode_key

pytestmark = [pytest.mark.wireguard]

# Exact counts: a device with a persistent keepalive sends one as soon as it is up, so the
# figures are checked against the data plane's formula with keepalive off; the line itself is
# checked in tests/test_device_config.py.
CLIENTS = {"endpoint": "10.200.1.1", "dns": ["1.1.1.1"], "persistent_keepalive": 0}


@pytest.fixture(params=FLAVORS, ids=[flavor.id for flavor in FLAVORS])
def bed(request: pytest.FixtureRequest) -> Iterator[TestBed]:
    problem = wgbed.available(request.param)
    if problem is None and shutil.which("zbarimg") is None:
        problem = "needs zbarimg (tests/run.sh installs zbar-tools)"
    for module in ("cryptography", "segno"):
        if problem is None and importlib.util.find_spec(module) is None:
            problem = f"needs {module} (the client library's config extra)"
    if problem is not None:
        pytest.skip(problem)
    with TestBed(clients=3, flavor=request.param) as made:
        yield made


def quick(bed: TestBed) -> str:
    """awg-quick (wg-quick for plain WireGuard): its `strip` is what `up` hands the tool."""
    if bed.flavor.tool == "wg":
        return shutil.which("wg-quick") or "wg-quick"
    shared = SHARED_AMNEZIAWG / "bin" / "awg-quick"
    return str(shared) if shared.exists() else (shutil.which("awg-quick") or "awg-quick")


def bring_up(bed: TestBed, client: Client, config_path: Path) -> None:
    """The device in `client`'s namespace, from exactly this file, as awg-quick brings it up:
    the interface made, the stripped file set, its addresses added, up; a route to the server."""
    tunnel = client.tunnel
    tunnel.kill()
    copy = bed.dir / f"{tunnel.ifname}.conf"  # awg-quick takes the interface's name from the file's
    shutil.copyfile(config_path, copy)
    copy.chmod(0o600)
    stripped = subprocess.run([quick(bed), "strip", str(copy)], capture_output=True, text=True, check=True).stdout
    assert "PrivateKey" in stripped and "Address" not in stripped and "DNS" not in stripped
    tunnel.start()
    setconf = bed.dir / f"{tunnel.ifname}.stripped"
    setconf.write_text(stripped)
    setconf.chmod(0o600)
    tunnel.wg("setconf", tunnel.ifname, str(setconf))
    for line in config_path.read_text().splitlines():
        if line.startswith("Address = "):
            for address in line.removeprefix("Address = ").split(", "):
                client.host.run("ip", "addr", "add", address, "dev", tunnel.ifname)
    client.host.run("ip", "link", "set", tunnel.ifname, "up")
    client.host.run("ip", "route", "add", f"{bed.server_of(client).address}/32", "dev", tunnel.ifname)


def private_key_of(config_path: Path) -> str:
    for line in config_path.read_text().splitlines():
        if line.startswith("PrivateKey = "):
            key = line.removeprefix("PrivateKey = ")
            wgbed.SECRETS.add(key)  # the daemons fixture fails the test if awgd ever shows it
            return key
    raise AssertionError("no private key in the config")


def zbar(path: Path) -> str:
    out = subprocess.run(["zbarimg", "--raw", "--quiet", "-Sbinary", str(path)], capture_output=True, check=True)
    return out.stdout.decode("utf-8")


def assert_nowhere_in_awgd(server: Server, secret: str) -> None:
    """Beyond the daemons fixture's search (log, ledger, answers): the server's config file,
    the tool's argument lists, and every event."""
    assert secret not in server.conf.read_text()
    assert secret not in server.argv_log.read_text()
    assert secret not in json.dumps(server.daemon.result("events.list", limit=1000))


def test_a_device_from_the_file_awgctl_wrote_connects_and_is_counted_exactly(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    server = Server(daemons, bed, on_server=(2, 3), clients=CLIENTS)
    device = bed.peers[0]
    out = bed.dir / "ivan.conf"
    png = bed.dir / "ivan.png"
    done = awgctl(
        "--socket", server.daemon.socket, "peer", "new", "-i", server.ifname, "--label", "Ivan's phone",
        "--config-out", str(out), "--qr-out", str(png), "--link",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    public_key, where, qr, link = done.stdout.splitlines()
    assert "config written to" in where and "QR code written to" in qr and link.startswith("vpn://")
    text = out.read_text()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    private = private_key_of(out)
    # The file: the server's own parameters, exactly as the live interface has them.
    status = next(i for i in server.daemon.result("server.status")["interfaces"] if i["name"] == server.ifname)
    assert status["client"]["endpoint"] == f"10.200.1.1:{server.tunnel.port}"
    for name, value in bed.flavor.obfuscation.items():
        assert f"\n{name} = {value}\n" in text, name
    if not bed.flavor.obfuscation:
        # As lines: a random base64 key may hold "H1" or "Jc" (it did, once in a CI run).
        assert "\nJc = " not in text and "\nH1 = " not in text, text
    assert f"PublicKey = {server.tunnel.public_key}\n" in text and "PresharedKey = " in text
    assert "Address = 10.99.0.2/32\n" in text  # the next free address
    # The QR code is the file, byte for byte; the key's config is the file too.
    assert zbar(png) == text  # -Sbinary: the bytes as they are, no newline added
    last = json.loads(
        decode_key(link)["containers"][0]["awg" if bed.flavor.obfuscation else "wireguard"]["last_config"]
    )
    assert last["config"] == text and last["client_pub_key"] == public_key
    # The device from exactly that file reaches the server, and awgd counts it exactly.
    bring_up(bed, device, out)
    bed.ping(device, 5)
    server.daemon.result("traffic.sample")
    peer = server.result("traffic.get", public_key=public_key)
    assert peer["label"] == "Ivan's phone" and peer["allowed_ips"] == ["10.99.0.2/32"]
    figures = (peer["period"]["rx_bytes"], peer["period"]["tx_bytes"])
    # Exactly what the data plane counted. The device's kernel may also send IPv6 chatter
    # (AllowedIPs = ::/0 routes it into the tunnel): the pings are a floor, not the whole.
    assert figures == server.tunnel.counters(public_key)
    assert all(got >= want for got, want in zip(figures, bed.flavor.expected(5), strict=True))
    assert_nowhere_in_awgd(server, private)
    assert private not in done.stdout.replace(link, "")  # only the key (the app's format) carries it


def test_without_an_endpoint_nothing_is_added_and_the_setting_is_named(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    if bed.flavor is not AMNEZIAWG:
        pytest.skip("the refusal is the same on every flavor")
    server = Server(daemons, bed, on_server=(2, 3), clients={"dns": ["1.1.1.1"]})
    before_keys, before_file = server.live_keys(), server.conf.read_text()
    out = bed.dir / "x.conf"
    done = awgctl("--socket", server.daemon.socket, "peer", "new", "-i", server.ifname, "--config-out", str(out))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "[clients] endpoint" in done.stderr, done.stderr
    assert server.live_keys() == before_keys and server.conf.read_text() == before_file
    assert not out.exists()
    assert server.daemon.result("events.list")["events"] == []
    assert server.daemon.result("traffic.list")["total"] == 2


def test_a_rekey_cuts_the_old_device_off_and_keeps_everything_else(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    if bed.flavor is not AMNEZIAWG:
        pytest.skip("rekey's bookkeeping is the same on every flavor; amneziawg-go 3.1 shows it")
    server = Server(daemons, bed, on_server=(3,), clients=CLIENTS)
    lost, found = bed.peers[0], bed.peers[1]
    first = bed.dir / "first.conf"
    done = awgctl(
        "--json", "--socket", server.daemon.socket, "peer", "new", "-i", server.ifname, "--label", "Phone",
        "--config-out", str(first),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    old_key = answer["public_key"]
    assert answer == {"public_key": old_key, "config_path": str(first), "link": None}
    private_key_of(first)
    bring_up(bed, lost, first)
    bed.ping(lost, 4)
    server.result("plan.set", public_key=old_key, limit_bytes=10**9, reset="month")
    server.daemon.result("traffic.sample")
    before = server.result("traffic.get", public_key=old_key)
    used = before["plan"]["used_bytes"]
    assert used == sum(bed.flavor.expected(4))
    # The user lost the phone: new keys, for a device in another namespace, which reaches the
    # endpoint through its own link to the server.
    found.host.run("ip", "route", "add", "10.200.1.1/32", "via", "10.200.2.1")
    second = bed.dir / "second.conf"
    done = awgctl(
        "--json", "--socket", server.daemon.socket, "peer", "rekey", old_key, "-i", server.ifname,
        "--config-out", str(second), "--link",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    new_key = json.loads(done.stdout)["public_key"]
    private_key_of(second)
    assert server.live_keys() == {new_key, bed.peers[2].tunnel.public_key}
    assert f"PublicKey = {new_key}\n" in server.conf.read_text() and old_key not in server.conf.read_text()
    bring_up(bed, found, second)
    assert not pings(bed, lost)  # the old device is cut off
    bed.ping(found, 3)
    server.daemon.result("traffic.sample")  # not `fresh`: the rekey's own sample is under 5 s old
    new = server.result("traffic.get", public_key=new_key)
    assert new["label"] == "Phone" and new["allowed_ips"] == before["allowed_ips"] and new["blocked"] == []
    assert new["plan"]["used_bytes"] == used + sum(bed.flavor.expected(3))  # never a quota given back
    assert new["plan"]["start"] == before["plan"]["start"]
    old = server.result("traffic.get", public_key=old_key)
    assert old["present"] is False and old["replaced_by"] == new_key
    assert (old["period"]["rx_bytes"], old["period"]["tx_bytes"]) == bed.flavor.expected(4)
    assert old["plan"] is None and old["label"] is None
    rekeyed = [e for e in server.daemon.result("events.list")["events"] if e["type"] == "peer.rekeyed"]
    assert [(e["public_key"], e["data"]) for e in rekeyed] == [(old_key, {"new_public_key": new_key})]
    # Blocked, then rekeyed: the new key passes nothing either, and unblocking gives it back.
    server.result("peer.block", public_key=new_key)
    assert not pings(bed, found)
    third = bed.dir / "third.conf"
    done = awgctl(
        "--socket", server.daemon.socket, "peer", "rekey", new_key[:10], "-i", server.ifname,
        "--config-out", str(third), "--qr",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    newest = done.stdout.splitlines()[0]
    assert done.stdout.count("█") > 100  # --qr: the config's code on the terminal
    private_key_of(third)
    bring_up(bed, found, third)
    assert server.result("traffic.get", public_key=newest)["blocked"] == ["admin"]
    assert not pings(bed, found)
    server.result("peer.unblock", public_key=newest)
    assert pings(bed, found)
    assert server.result("traffic.get", public_key=newest)["allowed_ips"] == before["allowed_ips"]
    # The new key already a peer: -32005; bad params -32602; an unknown peer -32001.
    clash = server.call("peer.rekey", public_key=newest, new_public_key=bed.peers[2].tunnel.public_key)
    assert clash["error"]["code"] == -32005
    assert server.call("peer.rekey", public_key=newest)["error"]["code"] == -32602
    bad = server.call("peer.rekey", public_key=newest, new_public_key="x\n[Peer]")
    assert bad["error"]["code"] == -32602
    unknown = server.call("peer.rekey", public_key=old_key, new_public_key=bed.peers[0].tunnel.public_key)
    assert unknown["error"]["code"] == -32001
    assert server.live_keys() == {newest, bed.peers[2].tunnel.public_key}
    for path in (first, second, third):
        assert_nowhere_in_awgd(server, private_key_of(path))


def test_the_client_library_makes_a_device_in_one_call(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    if bed.flavor is not AMNEZIAWG:
        pytest.skip("the library's flow is the same on every flavor")
    from awgd_client import Client as RpcClient
    from awgd_client.new_device import new_device, rekey_device

    server = Server(daemons, bed, on_server=(2, 3), clients=CLIENTS)
    with RpcClient(server.daemon.socket) as awgd:
        device = new_device(awgd, server.ifname, label="Tablet")
        wgbed.SECRETS.add(device.private_key)
        assert device.public_key in server.live_keys() and device.private_key not in repr(device)
        assert device.config_text.startswith("[Interface]\nPrivateKey = " + device.private_key)
        assert decode_key(device.link)["description"] == "Tablet"
        assert device.qr_png().startswith(b"\x89PNG")
        config = bed.dir / "tablet.conf"
        config.write_text(device.config_text)
        bring_up(bed, bed.peers[0], config)
        bed.ping(bed.peers[0], 2)
        again = rekey_device(awgd, server.ifname, device.public_key)
        wgbed.SECRETS.add(again.private_key)
        assert again.peer.label == "Tablet" and again.config.addresses == device.config.addresses
        assert again.public_key in server.live_keys() and device.public_key not in server.live_keys()
    assert_nowhere_in_awgd(server, device.private_key)


def test_the_docs_bot_flow_buy_config_stats_renew(daemons, bed: TestBed) -> None:  # type: ignore[no-untyped-def]
    """docs/examples/bot_flow.py as it is, with real aiogram against the stand-in Bot API: /buy
    sends the config, its QR and the key; a device from that file connects; /stats shows the
    plan; the quota runs out and the user is cut off; /renew gives it back; /lost rekeys."""
    if bed.flavor is not AMNEZIAWG:
        pytest.skip("the bot's flow is the same on every flavor")
    pytest.importorskip("aiogram", reason="the bot extra (aiogram 3) is not installed")
    example = Path(__file__).parent.parent / "docs/examples/bot_flow.py"
    if not example.exists():
        pytest.skip("needs the source tree's docs/examples")
    import asyncio

    from test_aiogram_router import FakeTelegram, command, run_bot

    spec = importlib.util.spec_from_file_location(
        "bot_flow", Path(__file__).parent.parent / "docs/examples/bot_flow.py"
    )
    assert spec is not None and spec.loader is not None
    bot_flow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bot_flow)
    server = Server(daemons, bed, on_server=(2, 3), clients=CLIENTS)
    user, device = 4242, bed.peers[0]
    limit = 3000  # a handful of pings' worth: the quota runs out within the test
    users: dict[int, str] = {}

    async def sent(fake: FakeTelegram, method: str, count: int) -> dict[str, Any]:
        """The `count`-th call to `method` (an event, not a sleep), with its file's bytes."""
        async with fake.changed:
            calls = lambda: [params for name, params in fake.calls if name == method]  # noqa: E731
            await asyncio.wait_for(fake.changed.wait_for(lambda: len(calls()) >= count), 30)
        params = dict(calls()[count - 1])
        for field in ("document", "photo"):
            if str(params.get(field, "")).startswith("attach://"):
                params[field] = params[params[field].removeprefix("attach://")]
        return params

    async def reply(fake: FakeTelegram, text: str) -> str:
        before = len([name for name, _ in fake.calls if name == "sendMessage"])
        await fake.push(command(user, text))
        return str((await sent(fake, "sendMessage", before + 1))["text"])

    async def scenario(fake: FakeTelegram) -> None:
        await fake.push(command(user, "/buy"))
        document = await sent(fake, "sendDocument", 1)
        photo = await sent(fake, "sendPhoto", 1)
        key = await sent(fake, "sendMessage", 1)
        config = document["document"].decode()
        path = bed.dir / "bought.conf"
        path.write_text(config)
        private_key_of(path)
        png = bed.dir / "bought.png"
        png.write_bytes(photo["photo"])
        assert zbar(png) == config
        link = str(key["text"]).removeprefix("<code>").removesuffix("</code>")
        assert json.loads(decode_key(link)["containers"][0]["awg"]["last_config"])["config"] == config
        bring_up(bed, device, path)
        await asyncio.to_thread(bed.ping, device, 2)
        await asyncio.to_thread(server.daemon.result, "traffic.sample")  # /stats' fresh shares a recent one
        shown = await reply(fake, "/stats")
        assert shown.startswith("<b>VPN</b>\n🟢 Online\nUsed ") and "Used 0\u00a0B" not in shown, shown
        # Past the quota: awgd cuts the peer off (a sample books it and the plan blocks).
        await asyncio.to_thread(pings, bed, device, 10)
        await asyncio.to_thread(server.daemon.result, "traffic.sample")
        assert "⛔ VPN paused: the traffic limit is used up" in await reply(fake, "/stats")
        assert not await asyncio.to_thread(pings, bed, device)
        assert (await reply(fake, "/renew")).startswith("Renewed until ")
        assert await asyncio.to_thread(pings, bed, device)
        assert "VPN paused" not in await reply(fake, "/stats")
        old = users[user]
        await fake.push(command(user, "/lost"))
        document = await sent(fake, "sendDocument", 2)
        assert users[user] != old and f"PrivateKey = {private_key_of(path)}" not in document["document"].decode()
        path.write_bytes(document["document"])
        private_key_of(path)

    run_bot(
        server.daemon.socket,
        scenario,
        lambda client: bot_flow.build_router(client, server.ifname, users, limit_bytes=limit),
    )
    peer = server.result("traffic.get", public_key=users[user])
    assert peer["label"] == f"tg{user}" and peer["plan"]["limit_bytes"] == limit
