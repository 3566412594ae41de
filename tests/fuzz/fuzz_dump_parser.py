"""Coverage-guided fuzzing of the dump parser (atheris). The only exception allowed is
DumpError, its message never quotes the input, and the incremental DumpParser gives
exactly what parse_dump gives.

    python tests/fuzz/fuzz_dump_parser.py -max_total_time=60 [corpus dir]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]

with atheris.instrument_imports():
    from awgd.dump_parser import DumpError, DumpParser, parse_dump

PARSER = DumpParser()


def outcome(parse: Callable[[bytes, str | None], object], data: bytes, interface: str | None) -> object:
    try:
        return parse(data, interface)
    except DumpError as error:
        assert len(str(error)) < 200, "an error message must never quote the line"
        return (error.line, error.reason)


def test_one(data: bytes) -> None:
    interface = None
    if data[:1] == b"\x01":  # exercise `show IFACE dump` too
        interface, data = "wg0", data[1:]
    # PARSER keeps the previous input's layout: consecutive inputs of the fuzzer are often
    # mutations of each other, which exercises its fast path. It must agree with parse_dump.
    assert outcome(PARSER.parse, data, interface) == outcome(parse_dump, data, interface)


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
