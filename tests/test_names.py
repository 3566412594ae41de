"""One rule per name: the config, the dump parser, the RPC params and the clients agree on
what a public key and an interface name are, and on traffic.list's sort orders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from awgd import api
from awgd.config import ConfigError, parse
from awgd.dump_parser import DumpError, parse_dump
from awgd_client import awgctl
from awgd_client.names import LIST_SORTS, interface_name_problem, is_interface_name, is_public_key

KEY = "A" * 43 + "="
PRIVATE = "E" * 43 + "="

NAMES = {
    "wg0": True,
    "awg0": True,
    "a" * 15: True,
    "a" * 16: False,
    "wg-é": True,  # 5 bytes: the kernel takes any byte but a few
    "é" * 7: True,  # 14 bytes
    "é" * 8: False,  # 8 characters, but 16 bytes
    "à": False,  # UTF-8 C3 A0: the kernel's isspace() counts 0xa0
    ".": False,
    "..": False,
    "a.b": True,
    "a/b": False,
    "a:b": False,
    "a b": False,
    "a\tb": False,
    "": False,
    "wg\x00": False,
    "wg\x01": True,  # the kernel allows control characters other than whitespace
}


@pytest.mark.parametrize(("name", "valid"), NAMES.items(), ids=[repr(n) for n in NAMES])
def test_every_part_agrees_on_interface_names(name: str, valid: bool) -> None:
    assert is_interface_name(name) is valid
    try:
        parse({"wireguard": {"interfaces": [name]}})
        config_ok = True
    except ConfigError:
        config_ok = False
    assert config_ok is valid
    params = api.Params({"public_key": KEY, "interface": name}, ("public_key", "interface"))
    try:
        params.interface()
        api_ok = True
    except api.RpcError:
        api_ok = False
    assert api_ok is valid
    if "\n" in name or "\t" in name:
        return  # cannot even be written into a dump line
    dump = f"{name}\t{PRIVATE}\t{KEY}\t51820\toff\n"
    try:
        parse_dump(dump)
        parser_ok = True
    except DumpError:
        parser_ok = False
    assert parser_ok is valid


@given(st.text(max_size=20))
def test_the_rule_is_the_kernels(name: str) -> None:
    raw = name.encode("utf-8", "surrogateescape")
    kernel = (
        0 < len(raw) <= 15 and raw not in (b".", b"..") and not any(byte in b"/: \t\n\v\f\r\xa0\x00" for byte in raw)
    )
    assert is_interface_name(name) is kernel
    assert (interface_name_problem(name) is None) is kernel


def test_one_key_rule() -> None:
    assert is_public_key(KEY)
    assert not is_public_key("A" * 43 + "B")
    assert not is_public_key("A" * 42 + "B=")  # the last character carries only 4 bits
    assert not is_public_key(None)


def test_one_sort_list() -> None:
    assert tuple(api._ORDER) == LIST_SORTS
    for sort in LIST_SORTS:
        assert awgctl.parser().parse_args(["peers", "--sort", sort]).sort == sort
    with pytest.raises(SystemExit):
        awgctl.parser().parse_args(["peers", "--sort", "size"])
