"""Coverage-guided fuzzing of the UAPI parser (atheris). The only exception allowed is
UapiError, its message never quotes the input, the incremental UapiParser gives what
parse_uapi gives (peers compared in key order), and its `changed` names every peer that is
not the very Peer of the last answer; when neither answer repeats a key and both list the
same keys, `changed` is known.

    python tests/fuzz/fuzz_uapi_parser.py -max_total_time=60 [corpus dir]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from operator import itemgetter
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]

with atheris.instrument_imports():
    from awgd.uapi_parser import AMNEZIAWG, WIREGUARD, Interface, UapiError, UapiParser, parse_uapi


def derive(private: bytes) -> bytes:
    """Any fixed function of the private key will do here (the real one is X25519's)."""
    return bytes(reversed(private))


PARSER = UapiParser(derive)
LAST: dict[str, tuple[Interface, bool]] = {}  # the last answer's, and whether it repeated a key


def outcome(parse: object, text: str, flavor: str) -> object:
    try:
        if parse is parse_uapi:
            return parse_uapi("wg0", text, flavor, derive)
        return PARSER.parse("wg0", text, flavor)
    except UapiError as error:
        assert len(str(error)) < 120, "an error message must never quote the line"
        return (error.line, error.reason)


def in_key_order(parsed: object) -> object:
    if isinstance(parsed, Interface):
        return replace(parsed, peers=tuple(sorted(parsed.peers, key=itemgetter(0))), changed=None)
    return parsed


def test_one(data: bytes) -> None:
    flavor = AMNEZIAWG if data[:1] == b"\x01" else WIREGUARD
    text = data[1:].decode("utf-8", "replace")
    # PARSER keeps the previous input's answer: consecutive inputs are often mutations of
    # each other, which exercises its fast path. It must agree with parse_uapi.
    got = outcome(PARSER, text, flavor)
    assert in_key_order(got) == in_key_order(outcome(parse_uapi, text, flavor))
    if isinstance(got, Interface):
        groups = text.count("\npublic_key=") + text.startswith("public_key=")
        check_changed(got, repeated=groups != len(got.peers))
    else:
        LAST.clear()
        PARSER.forget()


def check_changed(iface: Interface, *, repeated: bool) -> None:
    last = LAST.get(iface.name)
    before = None if last is None else last[0]
    if before is None or {p.public_key for p in before.peers} != {p.public_key for p in iface.peers}:
        assert iface.changed is None
    elif iface.changed is None:
        assert repeated or last is None or last[1], "the same keys, none repeated: changed must be known"
    else:
        old = {peer.public_key: peer for peer in before.peers}
        listed = {id(peer) for peer in iface.changed}
        assert all(id(peer) in listed or peer is old[peer.public_key] for peer in iface.peers)
    LAST[iface.name] = (iface, repeated)


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
