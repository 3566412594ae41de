"""Peers' names from the operator's files: the config file's comments and Amnezia's clientsTable."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from awgd.clients_table import parse_clients_table
from awgd.config import Config
from awgd.peer_names import NameReader, Names
from awgd.wg_config import MAX_LABEL_CHARS, clean_label, config_path, parse_config, peer_names

A, B, C = "A" * 43 + "=", "E" * 43 + "=", "I" * 43 + "="

CONFIG = f"""\
# the server
[Interface]
PrivateKey = {"Q" * 43}=
ListenPort = 51820
Jc = 4

# friendly_name = Alice's phone
[Peer]
PublicKey = {A}
AllowedIPs = 10.8.0.2/32

[Peer]
# Name: Bob
PublicKey = {B}
AllowedIPs = 10.8.0.3/32

# just a comment
[Peer]
PublicKey = {C}
AllowedIPs = 10.8.0.4/32
"""


def test_names_from_comments_above_or_inside_a_peer() -> None:
    assert peer_names(CONFIG) == {A: "Alice's phone", B: "Bob"}


def test_every_line_is_kept_where_it_was() -> None:
    parsed = parse_config(CONFIG)
    rebuilt = [*parsed.preamble, *(line for s in parsed.sections for line in (*s.lead, *s.lines))]
    assert rebuilt == CONFIG.splitlines()
    assert [s.kind for s in parsed.sections] == ["Interface", "Peer", "Peer", "Peer"]
    assert parsed.sections[0].lead == ("# the server",)
    assert parsed.sections[1].lead == ("# friendly_name = Alice's phone",)
    assert parsed.sections[3].lead == ("# just a comment",)
    assert [p.public_key for p in parsed.peers()] == [A, B, C]


@given(st.text(max_size=300))
def test_any_text_parses_and_keeps_its_lines(text: str) -> None:
    parsed = parse_config(text)
    rebuilt = [*parsed.preamble, *(line for s in parsed.sections for line in (*s.lead, *s.lines))]
    assert rebuilt == text.splitlines()
    for name in peer_names(text).values():
        assert 0 < len(name) <= MAX_LABEL_CHARS and name.isprintable()


def test_clients_table() -> None:
    table = [
        {"clientId": A, "userData": {"clientName": "Phone", "creationDate": "Mon Nov 2 2026"}},
        {"clientId": B, "userData": {"clientName": "  \x1b[31mred\x1b[0m  "}},
        {"clientId": "not a key", "userData": {"clientName": "x"}},
        {"clientId": C},
        "garbage",
    ]
    assert parse_clients_table(json.dumps(table)) == {A: "Phone", B: "[31mred[0m"}
    assert parse_clients_table("{not json") == {}
    assert parse_clients_table('{"a": 1}') == {}


def test_labels_are_cleaned_and_cut() -> None:
    assert clean_label("x" * 100) == "x" * MAX_LABEL_CHARS
    assert clean_label("\x00\x07 ") is None


def test_where_config_files_are() -> None:
    assert config_path(Config(), "awg", "awg0") == "/etc/amnezia/amneziawg/awg0.conf"
    assert config_path(Config(), "wg", "wg0") == "/etc/wireguard/wg0.conf"
    assert (
        config_path(Config(exec_prefix=("docker", "exec", "amnezia-awg")), "wg", "wg0") == "/opt/amnezia/awg/wg0.conf"
    )
    assert config_path(Config(config_dir="/srv/wg"), "awg", "wg0") == "/srv/wg/wg0.conf"


def table_of(*rows: tuple[str, str]) -> str:
    return json.dumps([{"clientId": key, "userData": {"clientName": name}} for key, name in rows])


@pytest.fixture
def logged_prefix(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """An exec_prefix that runs the command as it is and logs its argv (as `docker exec` would run it)."""
    log = tmp_path / "commands.log"
    wrapper = tmp_path / "prefix"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec "$@"\n')
    wrapper.chmod(0o755)
    return (str(wrapper),), log


def read(reader: NameReader, config: Config, interfaces: tuple[str, ...] = ("wg0",)) -> Names | None:
    return asyncio.run(reader.read(config, "awg", interfaces))


def test_a_file_is_read_again_only_when_it_changed(tmp_path: Path, logged_prefix: tuple[tuple[str, ...], Path]) -> None:
    prefix, log = logged_prefix
    table, conf = tmp_path / "clientsTable", tmp_path / "wg0.conf"
    table.write_text(table_of((A, "Alice")))
    conf.write_text(CONFIG)
    config = Config(exec_prefix=prefix, names_file=str(table), config_dir=str(tmp_path))
    reader = NameReader(recheck_seconds=0)

    names = read(reader, config)
    assert names is not None and names.of("wg0", A) == "Alice's phone" and names.of("wg1", A) == "Alice"
    assert names.of("wg0", B) == "Bob" and names.of("wg0", C) is None
    first = log.read_text().splitlines()
    assert [line.split()[0] for line in first] == ["stat", "cat", "cat"]

    log.write_text("")
    names = read(reader, config)
    assert names is not None and names.of("wg1", A) == "Alice"  # the same names, from memory
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["stat"]

    log.write_text("")
    table.write_text(table_of((A, "Alice"), (C, "Carol")))  # the Amnezia app added a client
    names = read(reader, config)
    assert names is not None and names.of("wg0", C) == "Carol"
    assert log.read_text().splitlines()[1:] == [f"cat {table}"]  # only the file that changed

    log.write_text("")
    table.unlink()
    names = read(reader, config)
    assert names is not None and names.of("wg0", C) is None and names.of("wg0", B) == "Bob"


def test_names_are_looked_for_at_most_once_a_minute(tmp_path: Path) -> None:
    table = tmp_path / "clientsTable"
    table.write_text(table_of((A, "Alice")))
    config = Config(names_file=str(table), config_dir=str(tmp_path))
    reader = NameReader()
    assert read(reader, config) is not None
    table.write_text(table_of((A, "Alicia")))
    assert read(reader, config) is None  # not due
    assert read(reader, config, ("wg0", "wg1")) is not None  # other interfaces: due at once


def test_a_rewrite_of_the_same_size_in_the_same_second_is_seen(tmp_path: Path) -> None:
    table = tmp_path / "clientsTable"
    table.write_text(table_of((A, "Alice")))
    config = Config(names_file=str(table), config_dir=str(tmp_path))
    reader = NameReader(recheck_seconds=0)
    assert (names := read(reader, config)) is not None and names.of("wg0", A) == "Alice"
    stamp = table.stat()
    replacement = tmp_path / "clientsTable.new"
    replacement.write_text(table_of((A, "Alica")))
    os.utime(replacement, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    replacement.rename(table)  # as editors and the Amnezia app save: a new inode
    assert (names := read(reader, config)) is not None and names.of("wg0", A) == "Alica"


def test_a_missing_or_broken_file_only_loses_its_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = tmp_path / "clientsTable"
    table.write_text("{not json")
    (tmp_path / "wg0.conf").write_text(CONFIG)
    config = Config(names_file=str(table), config_dir=str(tmp_path))
    names = read(NameReader(), config)
    assert names is not None and names.by_key == {} and names.of("wg0", B) == "Bob"
    table.unlink()
    table.mkdir()  # unreadable as a file, even to root
    names = read(NameReader(), config)
    assert names is not None and names.by_key == {} and names.of("wg0", B) == "Bob"
    assert f"cannot read names from {table}" in caplog.text
