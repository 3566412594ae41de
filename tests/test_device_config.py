"""A user's device's config, built by the client library (API v3 §1): the operator's
[clients] settings, keys, the config text, the AmneziaVPN key and its QR series, QR codes read
back by a real decoder (zbarimg). The end-to-end proofs, devices brought up from these files
on real AmneziaWG, are in tests/test_devices.py."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from awgd.cli import to_toml
from awgd.client_settings import ClientSettingError, parse_clients, parse_endpoint
from awgd.config import ConfigError, parse
from awgd.dump_parser import parse_dump
from awgd.wg_config import parse_config
from awgd_client.amnezia_key import (
    QR_CHUNK_BYTES,
    AmneziaKeyError,
    amnezia_document,
    compress,
    decode_key,
    encode_key,
    join_qr_chunks,
    qr_chunks,
    uncompress,
)
from awgd_client.device_config import DeviceConfigError, container_of, device_config, device_params
from awgd_client.device_keys import generate_key_pair, generate_preshared_key, public_key_of
from awgd_client.models import DeviceDefaults, InterfaceStatus, Usage

DATA = Path(__file__).parent / "data"
SERVER_KEY = "WJDkYFbyKaFyJ4GWCTZJdAo878OBmrOmiCbnI3P/mXM="
DEVICE_KEY = "0HyJ1jObkhdUzBGaUkpnt7bGbM5xg3Pc9iTQOMB0/1I="
PSK = "c4Wlt14yqzCrYc5XQNVdPyUAcf3OHCk6USn245r/MRY="
AWG31 = {
    "jc": 4,
    "jmin": 10,
    "jmax": 50,
    "s1": 12,
    "s2": 12,
    "s3": 12,
    "s4": 12,
    "h1": "471800590-471800690",
    "h2": "1246894907-1246895000",
    "h3": "3",
    "h4": "4",
    "i1": "<r 2><b 0x858000010001>",
}


def interface(awg: dict[str, int | str] | None = None, **client: object) -> InterfaceStatus:
    defaults = {
        "endpoint": "vpn.example.com:51820",
        "dns": ("1.1.1.1", "1.0.0.1"),
        "mtu": None,
        "allowed_ips": ("0.0.0.0/0", "::/0"),
        "persistent_keepalive": 25,
    }
    return InterfaceStatus(
        name="awg0",
        exists=True,
        up=True,
        public_key=SERVER_KEY,
        listen_port=51820,
        peers=1,
        peers_online=0,
        period=Usage(0, 0, 0),
        awg=awg,
        client=DeviceDefaults(**{**defaults, **client}),  # type: ignore[arg-type]
    )


# ---- the operator's settings -------------------------------------------------------------------


def test_clients_settings_apply_per_interface_and_show_the_port() -> None:
    config = parse(
        {"clients": {"endpoint": "VPN.example.com", "mtu": 1376, "awg1": {"endpoint": "[2001:db8::1]:443", "dns": []}}}
    )
    assert config.clients.of("awg0").shown(51820) == {
        "endpoint": "vpn.example.com:51820",
        "dns": ["1.1.1.1", "1.0.0.1"],
        "mtu": 1376,
        "allowed_ips": ["0.0.0.0/0", "::/0"],
        "persistent_keepalive": 25,
    }
    awg1 = config.clients.of("awg1").shown(40000)
    assert awg1["endpoint"] == "[2001:db8::1]:443" and awg1["dns"] == [] and awg1["mtu"] == 1376
    assert parse({}).clients.of("awg0").shown(51820)["endpoint"] is None
    # --check-config prints them, and what it prints reads back as the same config.
    import tomllib

    assert parse(tomllib.loads(to_toml(config.effective()))).clients == config.clients


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"endpoint": "vpn.example.com:0"}, "clients.endpoint"),
        ({"endpoint": "vpn.example.com:70000"}, "clients.endpoint"),
        ({"endpoint": "bad host"}, "clients.endpoint"),
        ({"endpoint": "evil.example\nPostUp = x"}, "clients.endpoint"),
        ({"endpoint": "[fe80::1%eth0]:1"}, "clients.endpoint"),
        ({"endpoint": 5}, "clients.endpoint"),
        ({"dns": ["1.1.1.1", "resolver.example"]}, "clients.dns"),
        ({"dns": "1.1.1.1"}, "clients.dns"),
        ({"mtu": 100}, "clients.mtu"),
        ({"mtu": True}, "clients.mtu"),
        ({"allowed_ips": []}, "clients.allowed_ips"),
        ({"allowed_ips": ["0.0.0.0/0 # x"]}, "clients.allowed_ips"),
        ({"persistent_keepalive": -1}, "clients.persistent_keepalive"),
        ({"keepalive": 25}, "clients.keepalive"),
        ({"awg0": {"mtu": 1}}, "clients.awg0.mtu"),
        ({"bad/name": {}}, "clients.bad/name"),
    ],
)
def test_a_bad_clients_setting_is_a_config_error_naming_it(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"clients": table})
    assert caught.value.key == key


def test_endpoints_are_read_as_written() -> None:
    assert parse_endpoint("203.0.113.7") == ("203.0.113.7", None)
    assert parse_endpoint("203.0.113.7:443") == ("203.0.113.7", 443)
    assert parse_endpoint("2001:db8::7") == ("2001:db8::7", None)
    assert parse_endpoint("[2001:DB8::7]:443") == ("2001:db8::7", 443)
    assert parse_endpoint("a-b.example.") == ("a-b.example.", None)
    for bad in ("", "1.2.3.4.5", "-a.example", "a..b", "[2001:db8::7", "[2001:db8::7]x", "host:", "h:+1"):
        with pytest.raises(ClientSettingError):
            parse_endpoint(bad)
    assert parse_clients({}).of("x").endpoint(51820) is None


# ---- keys -------------------------------------------------------------------------------------


needs_cryptography = pytest.mark.skipif(
    importlib.util.find_spec("cryptography") is None, reason="needs cryptography (the config extra)"
)


@needs_cryptography
@pytest.mark.parametrize("tool", ["wg", "awg"])
def test_keys_are_what_the_tool_makes_of_them(tool: str) -> None:
    binary = shutil.which(tool) or str(Path(__file__).resolve().parents[2] / "shared/amneziawg/bin" / tool)
    if not os.path.exists(binary):
        pytest.skip(f"needs {tool}")
    for _ in range(20):
        pair = generate_key_pair()
        made = subprocess.run([binary, "pubkey"], input=pair.private_key, capture_output=True, text=True, check=True)
        assert made.stdout.strip() == pair.public_key
        assert public_key_of(pair.private_key) == pair.public_key
        raw = base64.b64decode(pair.private_key)
        assert raw[0] & 7 == 0 and raw[31] & 0xC0 == 0x40  # clamped, as `genkey` prints it
    # And a key `genkey` made: the tool's public key is ours.
    private = subprocess.run([binary, "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public = subprocess.run([binary, "pubkey"], input=private, capture_output=True, text=True, check=True).stdout
    assert public_key_of(private) == public.strip()
    assert len(base64.b64decode(generate_preshared_key())) == 32
    assert pair.private_key not in repr(pair)


# ---- the config -------------------------------------------------------------------------------


def test_the_config_carries_every_parameter_of_the_interface_as_it_has_it() -> None:
    config = device_config(interface(AWG31, mtu=1376), ("10.8.1.5/32", "fd00::5/128"), DEVICE_KEY, PSK)
    assert config.text() == (
        "[Interface]\n"
        f"PrivateKey = {DEVICE_KEY}\n"
        "Address = 10.8.1.5/32, fd00::5/128\n"
        "DNS = 1.1.1.1, 1.0.0.1\n"
        "MTU = 1376\n"
        "Jc = 4\nJmin = 10\nJmax = 50\nS1 = 12\nS2 = 12\nS3 = 12\nS4 = 12\n"
        "H1 = 471800590-471800690\nH2 = 1246894907-1246895000\nH3 = 3\nH4 = 4\n"
        "I1 = <r 2><b 0x858000010001>\n"
        "\n[Peer]\n"
        f"PublicKey = {SERVER_KEY}\n"
        f"PresharedKey = {PSK}\n"
        "Endpoint = vpn.example.com:51820\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\n"
        "PersistentKeepalive = 25\n"
    )
    assert DEVICE_KEY not in repr(config) and PSK not in repr(config)
    # awgd's own reader of config files reads every value back.
    parsed = parse_config(config.text())
    (iface,) = (section for section in parsed.sections if section.kind == "Interface")
    assert iface.settings()["I1"] == "<r 2><b 0x858000010001>" and iface.settings()["H1"] == "471800590-471800690"
    assert parsed.peers()[0].public_key == SERVER_KEY
    assert parsed.peers()[0].settings()["Endpoint"] == "vpn.example.com:51820"
    # Plain WireGuard: none of AmneziaWG's keys; no MTU line unless set; keepalive 0 is off.
    plain = device_config(interface(None, persistent_keepalive=0), ("10.8.1.5/32",), DEVICE_KEY, None).text()
    assert "Jc" not in plain and "MTU" not in plain and "PresharedKey" not in plain
    assert "PersistentKeepalive" not in plain


@pytest.mark.parametrize(
    ("dump", "expected"),
    [
        ("wg-1.0.20210914.all.out", {}),
        ("awg-1.0.20241018.all.out", None),
        ("awg-1.0.20250901.all-awgparams.out", None),
        ("awg-3.1.20260812.all-awgparams.out", None),
    ],
)
def test_parameters_from_every_dump_format_go_into_the_config_as_printed(dump: str, expected: object) -> None:
    for iface in parse_dump((DATA / dump).read_bytes()):
        params = dict(device_params(None if iface.awg is None else dict(iface.awg)))
        if expected is not None:
            assert params == expected
        for name, value in iface.awg or ():
            key = name.upper() if name[0] != "j" else {"jc": "Jc", "jmin": "Jmin", "jmax": "Jmax"}[name]
            if value in (0, "0"):
                assert key not in params  # unset: the tools print 0 for a header not sent
            else:
                assert params[key] == str(value)
        assert not {"header_protection_key", "Hpk"} & set(params)


def test_the_container_follows_the_servers_protocol_generation() -> None:
    assert container_of(None) == "amnezia-wireguard"
    assert container_of({"jc": 0, "h1": "0"}) == "amnezia-wireguard"  # wireguard-go through awg
    assert container_of({"jc": 4, "s1": 50, "h1": "1234567891"}) == "amnezia-awg"
    assert container_of({"jc": 4, "s3": 20}) == "amnezia-awg2"
    assert container_of({"jc": 4, "h1": "100-200"}) == "amnezia-awg2"
    assert container_of({"jc": 4, "i1": "<b 0x00>"}) == "amnezia-awg2"


def test_no_endpoint_no_config_and_the_message_names_the_setting() -> None:
    with pytest.raises(DeviceConfigError, match=r"\[clients\] endpoint"):
        device_config(interface(AWG31, endpoint=None), ("10.8.1.5/32",), DEVICE_KEY, PSK)


@given(st.text(min_size=1, max_size=20).filter(lambda t: set(t) & set("\n\r\x00#[]=") or not t.isprintable()))
def test_the_writer_refuses_what_would_change_the_files_meaning(junk: str) -> None:
    """A second wall behind the daemon's checks, whoever hands the values in."""
    with pytest.raises(DeviceConfigError):
        device_config(interface({**AWG31, "i2": f"<b 0x00>{junk}"}), ("10.8.1.5/32",), DEVICE_KEY, PSK)
    with pytest.raises(DeviceConfigError):
        device_config(interface(AWG31), (f"10.8.1.5/32{junk}",), DEVICE_KEY, PSK)
    with pytest.raises(DeviceConfigError):
        device_config(interface(AWG31, dns=(f"1.1.1.1{junk}",)), ("10.8.1.5/32",), DEVICE_KEY, PSK)
    with pytest.raises(DeviceConfigError):
        device_config(interface(AWG31, endpoint=f"vpn.example.com:1{junk}"), ("10.8.1.5/32",), DEVICE_KEY, PSK)


# ---- the AmneziaVPN key -----------------------------------------------------------------------


def test_the_key_decodes_to_the_apps_document_with_the_config_inside() -> None:
    config = device_config(interface(AWG31, mtu=1376), ("10.8.1.5/32",), DEVICE_KEY, PSK)
    key = encode_key(amnezia_document(config, AWG31, description="Ivan's phone", public_key=SERVER_KEY))
    assert key.startswith("vpn://") and "=" not in key and "+" not in key and "/" not in key[6:]
    document = decode_key(key)
    assert document["hostName"] == "vpn.example.com" and document["description"] == "Ivan's phone"
    assert (document["dns1"], document["dns2"]) == ("1.1.1.1", "1.0.0.1")
    assert document["defaultContainer"] == "amnezia-awg2"
    (container,) = document["containers"]
    awg = container["awg"]
    assert container["container"] == "amnezia-awg2" and awg["port"] == "51820" and awg["transport_proto"] == "udp"
    assert {k: awg[k] for k in ("Jc", "S3", "H1", "I1")} == {
        "Jc": "4",
        "S3": "12",
        "H1": "471800590-471800690",
        "I1": "<r 2><b 0x858000010001>",
    }
    last = json.loads(awg["last_config"])  # a JSON string inside
    assert last["config"] == config.text()
    assert last["client_ip"] == "10.8.1.5" and last["psk_key"] == PSK and last["server_pub_key"] == SERVER_KEY
    assert last["mtu"] == "1376" and last["persistent_keep_alive"] == "25" and last["port"] == 51820
    # Qt's qCompress: 4 bytes of length, big-endian, then zlib.
    blob = base64.urlsafe_b64decode(key[6:] + "=" * (-len(key[6:]) % 4))
    assert int.from_bytes(blob[:4], "big") == len(zlib.decompress(blob[4:]))


def test_plain_wireguard_gets_the_apps_wireguard_container() -> None:
    config = device_config(interface(None), ("10.8.1.5/32",), DEVICE_KEY, None)
    document = decode_key(encode_key(amnezia_document(config, None, description="x", public_key=SERVER_KEY)))
    assert document["defaultContainer"] == "amnezia-wireguard"
    assert "wireguard" in document["containers"][0] and "Jc" not in document["containers"][0]["wireguard"]


documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=30,
)


@given(st.dictionaries(st.text(max_size=10), documents, max_size=6))
def test_any_document_survives_a_key(document: dict[str, object]) -> None:
    assert decode_key(encode_key(document)) == document


@given(st.binary(min_size=1, max_size=4 * QR_CHUNK_BYTES + 7), st.randoms(use_true_random=False))
def test_the_qr_series_reassembles_to_the_key_in_any_order(blob: bytes, rng: random.Random) -> None:
    key = "vpn://" + base64.urlsafe_b64encode(blob).rstrip(b"=").decode()
    chunks = qr_chunks(key)
    assert len(chunks) == -(-len(blob) // QR_CHUNK_BYTES)
    rng.shuffle(chunks)
    assert join_qr_chunks(chunks) == key
    if len(chunks) > 1:
        with pytest.raises(AmneziaKeyError, match="incomplete"):
            join_qr_chunks(chunks[1:])


def test_bad_keys_are_refused_with_a_reason() -> None:
    for bad in ("vpn://", "vpn://@@@@", "vpn://" + base64.urlsafe_b64encode(b"\0\0\0\5abcdef").decode()):
        with pytest.raises(AmneziaKeyError):
            decode_key(bad)
    # A bomb: a small blob claiming more than any document; never inflated.
    bomb = (10**9).to_bytes(4, "big") + zlib.compress(b"\0" * 10**6)
    with pytest.raises(AmneziaKeyError, match="claims"):
        uncompress(bomb)
    # A length that lies is refused, and so is a JSON array.
    with pytest.raises(AmneziaKeyError):
        uncompress((5).to_bytes(4, "big") + zlib.compress(b"0123456789"))
    with pytest.raises(AmneziaKeyError, match="object"):
        decode_key("vpn://" + base64.urlsafe_b64encode(compress(b"[1]")).decode())
    with pytest.raises(AmneziaKeyError):
        join_qr_chunks([base64.urlsafe_b64encode(b"\x07\xc1\x01\x00\x00\x00\x00\x01x").decode()])


# ---- QR codes, read back by a real decoder --------------------------------------------------------

needs_zbar = pytest.mark.skipif(
    shutil.which("zbarimg") is None or importlib.util.find_spec("segno") is None,
    reason="needs zbarimg and segno (tests/run.sh installs zbar-tools and python3-segno)",
)


def zbar(png: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / f"{random.getrandbits(32)}.png"
    path.write_bytes(png)
    out = subprocess.run(
        ["zbarimg", "--raw", "--quiet", "-Sbinary", str(path)], capture_output=True, check=True, timeout=60
    ).stdout
    return [out.decode("utf-8")]


@needs_zbar
def test_the_png_holds_the_config_byte_for_byte(tmp_path: Path) -> None:
    from awgd_client.qr_codes import qr_png, qr_terminal

    config = device_config(interface(AWG31, mtu=1376), ("10.8.1.5/32", "fd00::5/128"), DEVICE_KEY, PSK).text()
    assert zbar(qr_png(config), tmp_path) == [config]
    terminal = qr_terminal(config)
    assert terminal.count("\n") > 20 and set(terminal) <= set("█▀▄ \n")


@needs_zbar
def test_the_key_series_pngs_reassemble_to_the_key(tmp_path: Path) -> None:
    from awgd_client.qr_codes import key_qr_pngs

    long_i1 = "<b 0x" + random.Random(3).randbytes(700).hex() + ">"  # a key too long for one code
    config = device_config(interface({**AWG31, "i1": long_i1}), ("10.8.1.5/32",), DEVICE_KEY, PSK)
    key = encode_key(amnezia_document(config, {**AWG31, "i1": long_i1}, description="x", public_key=SERVER_KEY))
    pngs = key_qr_pngs(key)
    assert len(pngs) >= 2
    assert join_qr_chunks([zbar(png, tmp_path)[0] for png in pngs]) == key
