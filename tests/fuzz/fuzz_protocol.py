"""Coverage-guided fuzzing of the sans-IO JSON-RPC codec (atheris): framing, decoding and
request parsing never raise anything but ProtocolError, and every answer they make encodes.

    python tests/fuzz/fuzz_protocol.py -max_total_time=60 [corpus dir]
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "client")]

with atheris.instrument_imports():
    from awgd_client import protocol as rpc


def test_one(data: bytes) -> None:
    buffer = rpc.LineBuffer(max_line=4096)
    try:
        lines = buffer.feed(data)
    except rpc.LineTooLong:
        return
    for line in lines:
        try:
            message = rpc.decode(line)
        except rpc.ProtocolError as error:
            assert error.code == rpc.PARSE_ERROR
            continue
        items, _ = rpc.parse_requests(message)
        for item in items:
            if isinstance(item, dict):
                rpc.encode(item)  # every ready answer must encode
        with contextlib.suppress(rpc.ProtocolError):
            rpc.parse_response(message)


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
