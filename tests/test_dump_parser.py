"""The dump parser against real captures, generated dumps of every format, and garbage."""

from __future__ import annotations

import base64
import string

import pytest
from conftest import CAPTURES, secrets_in_captures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from awgd.dump_parser import COUNTER_MAX, FORMATS_BY_FIELD_COUNT, DumpError, Interface, Peer, parse_dump

SECRETS = secrets_in_captures()
KEYS = {
    "srv": "K+JHQUHL3z4m1vBZ61nJl8vAZTs6yF/ZpzsP/ZICqiw=",
    "cli": "6NCqMhFSG4mXZ28vhdHtmVrAL2sqQFKvBHSIPCdphVs=",
    "pb": "FL71OoN46udZlZ9mNzEiHYoU/41QYP+/zcO4KMMfK24=",
    "pc": "PewACFYeRTMlzGQWvG4UgULVuaCKZzNJAl0HlVkFqBQ=",
}


def by_name(name: str) -> bytes:
    return next(c for c in CAPTURES if c.name == name).stdout


# ---- real captures ------------------------------------------------------------------


def test_secret_list_is_not_empty() -> None:
    # Guards the secret-leak assertions below against silently checking nothing.
    assert len(SECRETS) >= 6


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda c: c.name)
def test_every_capture_parses_and_drops_secrets(capture) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_dump(capture.stdout, capture.interface)
    text = repr(parsed)
    for secret in SECRETS:
        assert secret not in text
    for iface in parsed:
        assert not hasattr(iface, "private_key")
        for peer in iface.peers:
            assert not hasattr(peer, "preshared_key")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("wg-1.0.20210914.all", "wg"),
        ("awg-1.0.20241018.all", "awg1"),
        ("awg-1.0.20250901.all", "awg2"),
        ("awg-3.1.20260812.all", "awg3.1"),
    ],
)
def test_server_interface_of_each_version(name: str, fmt: str) -> None:
    parsed = {i.name: i for i in parse_dump(by_name(name))}
    assert list(parsed) == ["awgrc", "awgr0"]  # the tool's order, not sorted
    server = parsed["awgr0"]
    assert (server.public_key, server.listen_port, server.fwmark, server.format) == (KEYS["srv"], 51901, None, fmt)
    assert parsed["awgrc"].fwmark == 0xCA6C
    peers = {p.public_key: p for p in server.peers}
    assert peers[KEYS["cli"]] == Peer(
        public_key=KEYS["cli"],
        endpoint="10.251.0.2:51902",
        allowed_ips=("10.252.0.2/32",),
        latest_handshake=1795624736,
        rx_bytes=4004,
        tx_bytes=3948,
        keepalive=None,
    )
    assert peers[KEYS["pb"]].endpoint == "[fd00:251::3]:51820"
    assert peers[KEYS["pb"]].allowed_ips == ("10.252.0.3/32", "fd00:252::3/128")
    assert peers[KEYS["pb"]].keepalive == (25, 25)
    assert peers[KEYS["pc"]] == Peer(KEYS["pc"], None, (), 0, 0, 0, None)


@pytest.mark.parametrize("name", ["wg-1.0.20210914.awgr0", "awg-1.0.20241018.awgr0", "awg-3.1.20260812.awgr0"])
def test_single_interface_dump_matches_all_dump(name: str) -> None:
    tool = name.rsplit(".", 1)[0]
    (single,) = parse_dump(by_name(name), "awgr0")
    from_all = next(i for i in parse_dump(by_name(f"{tool}.all")) if i.name == "awgr0")
    assert single.public_key == from_all.public_key
    assert sorted(single.peers, key=lambda p: p.public_key) == sorted(from_all.peers, key=lambda p: p.public_key)


def test_awg3_params_capture_ranges_and_shared_key() -> None:
    parsed = {i.name: i for i in parse_dump(by_name("awg-3.1.20260812.all-awgparams"))}
    assert set(parsed) == {"awgrg1", "awgrg2", "awgrg3"}
    shared = "/3XRrL6Fsbg8eMWYHck/lfFmd/gdxxVYJUDOI3vBAHU="
    assert sum(1 for i in parsed.values() for p in i.peers if p.public_key == shared) == 3
    rg3 = {p.public_key: p for p in parsed["awgrg3"].peers}
    assert rg3[shared].keepalive == (25, 35)
    assert (rg3[shared].rx_bytes, rg3[shared].tx_bytes) == (4242, 42)


def test_awg2_params_capture_with_spaces_in_i1() -> None:
    parsed = {i.name: i for i in parse_dump(by_name("awg-1.0.20250901.all-awgparams"))}
    assert parsed["awgrg2"].format == "awg2"
    assert parsed["awgrg2"].fwmark == 0xCA6C


def test_empty_output_means_no_interfaces() -> None:
    assert parse_dump(b"") == ()
    assert parse_dump("", "wg0") == ()


# ---- generated dumps of every format --------------------------------------------------

keys = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
octet = st.integers(0, 255)
ipv4 = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(lambda g: ":".join(f"{x:x}" for x in g))
port = st.integers(0, 65535)
endpoints = st.one_of(
    st.none(),
    st.tuples(ipv4, port).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(ipv6, port, st.sampled_from(["", "%eth0"])).map(lambda t: f"[{t[0]}{t[2]}]:{t[1]}"),
)
cidrs = st.one_of(
    st.tuples(ipv4, st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(ipv6, st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
)
counters = st.integers(0, COUNTER_MAX)
keepalives = st.one_of(
    st.none(),
    st.integers(1, 65535).map(lambda n: (n, n)),
    st.tuples(st.integers(1, 1000), st.integers(0, 1000)).map(lambda t: (t[0], t[0] + t[1])),
)
free_text = st.text(alphabet=string.printable.replace("\t", "").replace("\n", "").replace("\r", ""), max_size=40)
names = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=15).filter(
    lambda name: name not in (".", "..")  # the kernel's dev_valid_name refuses these two
)


@st.composite
def peers(draw: st.DrawFn) -> tuple[Peer, str]:
    peer = Peer(
        public_key=draw(keys),
        endpoint=draw(endpoints),
        allowed_ips=tuple(draw(st.lists(cidrs, max_size=4))),
        latest_handshake=draw(st.integers(0, 2**40)),
        rx_bytes=draw(counters),
        tx_bytes=draw(counters),
        keepalive=draw(keepalives),
    )
    psk = draw(st.one_of(st.just("(none)"), keys))
    ka = peer.keepalive
    ka_text = "off" if ka is None else (str(ka[0]) if ka[0] == ka[1] and draw(st.booleans()) else f"{ka[0]}-{ka[1]}")
    line = "\t".join(
        [
            peer.public_key,
            psk,
            peer.endpoint or "(none)",
            ",".join(peer.allowed_ips) or "(none)",
            str(peer.latest_handshake),
            str(peer.rx_bytes),
            str(peer.tx_bytes),
            ka_text,
        ]
    )
    return peer, line


@st.composite
def interfaces(draw: st.DrawFn, name: str) -> tuple[Interface, list[str], str]:
    field_count = draw(st.sampled_from(sorted(FORMATS_BY_FIELD_COUNT)))
    private = draw(keys)
    public = draw(st.one_of(st.none(), keys))
    listen = draw(port)
    fwmark = draw(st.one_of(st.none(), st.integers(1, 2**32 - 1)))
    middle = draw(st.lists(free_text, min_size=field_count - 4, max_size=field_count - 4))
    head = "\t".join([private, public or "(none)", str(listen), *middle, "off" if fwmark is None else f"0x{fwmark:x}"])
    drawn = draw(st.lists(peers(), max_size=6, unique_by=lambda p: p[0].public_key))
    fmt = FORMATS_BY_FIELD_COUNT[field_count]
    iface = Interface(name, public, listen, fwmark, fmt, tuple(p for p, _ in drawn), awg=expected_awg(fmt, middle))
    return iface, [head] + [line for _, line in drawn], private


# docs/FORMAT.md's table, written out again here: the obfuscation parameters by format.
HS, IS = ["h1", "h2", "h3", "h4"], ["i1", "i2", "i3", "i4", "i5"]
AWG_NAMES = {
    "awg1": ["jc", "jmin", "jmax", "s1", "s2", *HS],
    "awg1.5": ["jc", "jmin", "jmax", "s1", "s2", *HS, *IS],
    "awg2": ["jc", "jmin", "jmax", "s1", "s2", "s3", "s4", *HS, *IS],
    "awg3.0": ["jc", "jmin", "jmax", "s1", "s2", "s3", "s4", *HS, *IS],
    "awg3.1": ["jc", "jmin", "jmax", "s1", "s2", "s3", "s4", *HS, *IS],
}


def expected_awg(fmt: str, middle: list[str]) -> tuple[tuple[str, int | str], ...] | None:
    if fmt not in AWG_NAMES:
        return None
    shown: list[tuple[str, int | str]] = []
    for name, value in zip(AWG_NAMES[fmt], middle, strict=False):
        if name[0] in "js":
            if value.isdigit() and len(value) <= 10:
                shown.append((name, int(value)))
        elif value not in ("(null)", "") and value.isprintable():
            shown.append((name, value))
    return tuple(shown)


@st.composite
def dumps(draw: st.DrawFn) -> tuple[tuple[Interface, ...], list[tuple[str, list[str]]], set[str]]:
    chosen = draw(st.lists(names, max_size=4, unique=True))
    built = [draw(interfaces(name)) for name in chosen]
    return tuple(i for i, _, _ in built), [(i.name, lines) for i, lines, _ in built], {p for _, _, p in built}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(dumps())
def test_generated_all_dump_round_trips(generated) -> None:  # type: ignore[no-untyped-def]
    expected, blocks, privates = generated
    text = "".join(f"{name}\t{line}\n" for name, lines in blocks for line in lines)
    parsed = parse_dump(text.encode())
    assert parsed == expected
    public = {i.public_key for i in parsed} | {p.public_key for i in parsed for p in i.peers}
    for private in privates - public:  # hypothesis may draw the same key twice
        assert private not in repr(parsed)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(interfaces("awg0"))
def test_generated_single_interface_dump_round_trips(generated) -> None:  # type: ignore[no-untyped-def]
    expected, lines, private = generated
    parsed = parse_dump(("\n".join(lines) + "\n").encode(), "awg0")
    assert parsed == (expected,)
    public = {expected.public_key} | {p.public_key for p in expected.peers}
    assert private in public or private not in repr(parsed)


@given(interfaces("awg0"), interfaces("awg1"))
def test_repeated_interface_lines_merge(first, second) -> None:  # type: ignore[no-untyped-def]
    iface0, lines0, _ = first
    _, lines1, _ = second
    # awg0 listed twice (a kernel interface and a socket of the same name), awg1 between.
    text = "".join(f"awg0\t{line}\n" for line in lines0)
    text += "".join(f"awg1\t{line}\n" for line in lines1)
    text += "".join(f"awg0\t{line}\n" for line in lines0)
    parsed = {i.name: i for i in parse_dump(text)}
    assert parsed["awg0"] == iface0


# ---- garbage ----------------------------------------------------------------------------

SERVER_LINE = by_name("wg-1.0.20210914.all").decode().splitlines()[2]
PEER_LINE = by_name("wg-1.0.20210914.all").decode().splitlines()[3]
PRIVATE_KEY = SERVER_LINE.split("\t")[1]


def dump_with(bad_peer_line: str) -> str:
    return f"{SERVER_LINE}\n{PEER_LINE}\n{bad_peer_line}\n"


def fault(text: str | bytes, interface: str | None = None) -> DumpError:
    with pytest.raises(DumpError) as caught:
        parse_dump(text, interface)
    assert PRIVATE_KEY not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        ((6, "12x4"), "rx counter is not a decimal number"),
        ((7, "-1"), "tx counter is not a decimal number"),
        ((7, "1.5"), "tx counter is not a decimal number"),
        ((5, "soon"), "latest handshake is not a decimal number"),
        ((1, "short"), "public key is not a base64 key"),
        ((1, "K+JHQUHL3z4m1vBZ61nJl8vAZTs6yF/ZpzsP/ZICqiw"), "public key is not a base64 key"),
        ((2, "nope"), "preshared key is neither a base64 key nor (none)"),
        ((3, "10.0.0.1"), "endpoint is not ADDRESS:PORT or (none)"),
        ((3, "10.0.0.256:1"), "endpoint is not ADDRESS:PORT or (none)"),
        ((3, "10.0.0.1:65536"), "endpoint is not ADDRESS:PORT or (none)"),
        ((3, "[fd00::1::2]:51820"), "endpoint is not a valid IPv6 address"),
        ((4, "10.0.0.0/33"), "allowed IPs are not a CIDR list or (none)"),
        ((4, "10.0.0.1/32, 10.0.0.2/32"), "allowed IPs are not a CIDR list or (none)"),
        ((8, "sometimes"), "keepalive is not 'off', N or N-M"),
        ((8, "35-25"), "keepalive range is reversed"),
        ((6, str(2**64 - 1)), "counter exceeds 2**63 - 1"),
        ((6, "١٢"), "rx counter is not a decimal number"),  # Arabic-Indic digits are not ASCII
    ],
)
def test_bad_peer_fields_name_line_and_fault(replace: tuple[int, str], reason: str) -> None:
    fields = PEER_LINE.split("\t")
    fields[replace[0]] = replace[1]
    error = fault(dump_with("\t".join(fields)))
    assert (error.line, error.reason) == (3, reason)
    assert str(error) == f"line 3: {reason}"


@pytest.mark.parametrize("count", [2, 7, 9, 30])
def test_wrong_peer_field_counts(count: int) -> None:
    fields = PEER_LINE.split("\t")[1:]
    fields = (fields * 4)[:count]
    error = fault(f"{SERVER_LINE}\nawgr0\t" + "\t".join(fields) + "\n")
    assert error.line == 2
    # 8 fields after the name is a 9-field line; anything else is a bad repeated interface line
    assert "fields" in error.reason or "not" in error.reason


def test_every_truncation_of_a_peer_line_is_rejected() -> None:
    last_tab = PEER_LINE.rindex("\t")
    for cut in range(len("awgr0\t") + 1, last_tab + 1):
        error = fault(dump_with(PEER_LINE[:cut]))
        assert error.line == 3


def test_single_interface_dump_rejects_a_second_interface_line() -> None:
    lines = by_name("wg-1.0.20210914.awgr0").decode().splitlines()
    error = fault("\n".join([lines[0], lines[1], lines[0]]) + "\n", "awgr0")
    assert error.line == 3
    assert error.reason == "peer line has 4 fields, expected 8"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("awg0\tabc", "interface line has 1 fields, expected at least 4"),
        ("awg0\tx\ty\tz\tw", "interface private key is not a base64 key"),
        (f"awg0\t{PRIVATE_KEY}\tbad\t1\toff", "interface public key is not a base64 key"),
        (f"awg0\t{PRIVATE_KEY}\t(none)\t70000\toff", "listen port is not a port number"),
        (f"awg0\t{PRIVATE_KEY}\t(none)\t1\t0xZZ", "fwmark is neither 'off' nor hexadecimal"),
        (f"awg 0\t{PRIVATE_KEY}\t(none)\t1\toff", "invalid interface name"),
        (f"averyveryverylongname\t{PRIVATE_KEY}\t(none)\t1\toff", "invalid interface name"),
        ("no tabs at all", "no TAB-separated fields"),
    ],
)
def test_bad_interface_lines(line: str, reason: str) -> None:
    error = fault(line + "\n")
    assert (error.line, error.reason) == (1, reason)


def test_empty_line_in_the_middle() -> None:
    error = fault(f"{SERVER_LINE}\n\n{PEER_LINE}\n")
    assert (error.line, error.reason) == (2, "empty line")


def test_invalid_utf8_names_its_line() -> None:
    error = fault(f"{SERVER_LINE}\n{PEER_LINE}\n".encode() + b"awgr0\t\xff\xfe\n")
    assert (error.line, error.reason) == (3, "not valid UTF-8")


def test_ten_megabyte_line_is_rejected_without_echoing_it() -> None:
    huge = "A" * (10 * 1024 * 1024)
    error = fault(f"{SERVER_LINE}\nawgr0\t{huge}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n")
    assert error.line == 2
    assert len(str(error)) < 200
    error = fault(huge.encode())
    assert error.line == 1


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_binary_noise_never_escapes_as_another_exception(noise: bytes) -> None:
    try:
        parse_dump(noise)
    except DumpError as error:
        assert error.line >= 0
    try:
        parse_dump(f"{SERVER_LINE}\n".encode() + noise)
    except DumpError as error:
        assert error.line >= 1


@settings(max_examples=300)
@given(st.integers(0, len(PEER_LINE) - 1), st.characters(blacklist_categories=("Cs",)))
def test_single_character_corruption_is_caught_or_harmless(position: int, char: str) -> None:
    corrupted = PEER_LINE[:position] + char + PEER_LINE[position + 1 :]
    try:
        parsed = parse_dump(dump_with(corrupted))
    except DumpError as error:
        assert error.line in (1, 2, 3)
        return
    # Still valid: every peer it yields is fully formed.
    for iface in parsed:
        for peer in iface.peers:
            assert len(peer.public_key) == 44
            assert 0 <= peer.rx_bytes <= COUNTER_MAX
