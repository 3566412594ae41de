"""The `awgd` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from awgd import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="awgd", description="Traffic accounting for AmneziaWG/WireGuard.")
    parser.add_argument("--version", action="version", version=f"awgd {__version__}")
    parser.parse_args(argv)
    # The daemon loop, config and RPC server arrive with issue 3; until then say so plainly.
    print("awgd: the daemon is not implemented yet (this build has the accounting core only)", file=sys.stderr)
    return 1
