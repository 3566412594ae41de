"""Coverage-guided fuzzing of the dump parser (atheris). The only exception allowed is
DumpError, its message never quotes the input, the incremental DumpParser gives what parse_dump
gives (each interface's peers in the dump's order or, for Go's map order, in its own), and its `changed` names every
peer that is not the very Peer of the last dump.

    python tests/fuzz/fuzz_dump_parser.py -max_total_time=60 [corpus dir]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from operator import itemgetter
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]

with atheris.instrument_imports():
    from awgd.dump_parser import DumpError, DumpParser, Interface, parse_dump

PARSER = DumpParser()
LAST: dict[str, object] = {}  # the last successful parse, by interface name


def outcome(parse: Callable[[bytes, str | None], object], data: bytes, interface: str | None) -> object:
    try:
        return parse(data, interface)
    except DumpError as error:
        assert len(str(error)) < 200, "an error message must never quote the line"
        return (error.line, error.reason)


def in_key_order(parsed: object) -> object:
    if isinstance(parsed, tuple) and all(isinstance(i, Interface) for i in parsed):
        return tuple(replace(i, peers=tuple(sorted(i.peers, key=itemgetter(0)))) for i in parsed)
    return parsed


def test_one(data: bytes) -> None:
    interface = None
    if data[:1] == b"\x01":  # exercise `show IFACE dump` too
        interface, data = "wg0", data[1:]
    # PARSER keeps the previous input's layout: consecutive inputs of the fuzzer are often
    # mutations of each other, which exercises its fast paths. It must agree with parse_dump.
    got = outcome(PARSER.parse, data, interface)
    assert in_key_order(got) == in_key_order(outcome(parse_dump, data, interface))
    if interface is None and isinstance(got, tuple) and all(isinstance(i, Interface) for i in got):
        check_changed(got)


def check_changed(parsed: tuple[Interface, ...]) -> None:
    for iface in parsed:
        before = LAST.get(iface.name)
        keys = {peer.public_key for peer in iface.peers}
        if not isinstance(before, Interface) or {p.public_key for p in before.peers} != keys:
            assert iface.changed is None
            continue
        assert iface.changed is not None
        old = {peer.public_key: peer for peer in before.peers}
        listed = {id(peer) for peer in iface.changed}
        assert all(id(peer) in listed or peer is old[peer.public_key] for peer in iface.peers)
    LAST.clear()
    LAST.update((iface.name, iface) for iface in parsed)


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
