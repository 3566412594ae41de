"""The `awgctl` admin command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from awgd_client import __version__


def main(argv: Sequence[str] | None = None) -> int:  # parser.error exits with status 2
    parser = argparse.ArgumentParser(prog="awgctl", description="Query a running awgd.")
    parser.add_argument("--version", action="version", version=f"awgctl {__version__}")
    parser.parse_args(argv)
    parser.error("no subcommands yet: they arrive with the client library")
