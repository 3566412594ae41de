"""Coverage-guided fuzzing of the dump parser (atheris). The only exception allowed is
DumpError, and its message never quotes the input.

    python tests/fuzz/fuzz_dump_parser.py -max_total_time=60 [corpus dir]
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]

with atheris.instrument_imports():
    from awgd.dump_parser import DumpError, DumpParser, parse_dump

PARSER = DumpParser()


def test_one(data: bytes) -> None:
    interface = None
    if data[:1] == b"\x01":  # exercise `show IFACE dump` too
        interface, data = "wg0", data[1:]
    for parse in (parse_dump, PARSER.parse):
        try:
            parse(data, interface)
        except DumpError as error:
            assert len(str(error)) < 200, "an error message must never quote the line"


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
