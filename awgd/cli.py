"""The `awgd` command line: run the daemon, or check the config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from awgd import __version__
from awgd.config import DEFAULT_PATH, EX_CONFIG, ConfigError, load
from awgd.ledger import LedgerError
from awgd.log import setup
from awgd.rpc_server import SocketInUse

log = logging.getLogger(__name__)

EX_SOFTWARE = 70


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="awgd", description="Traffic accounting for AmneziaWG/WireGuard servers.")
    parser.add_argument("--config", metavar="PATH", help=f"config file (default {DEFAULT_PATH}; missing = defaults)")
    parser.add_argument("--check-config", action="store_true", help="validate, print the effective config, exit")
    parser.add_argument("--version", action="version", version=f"awgd {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"awgd: config {args.config or DEFAULT_PATH}: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        sys.stdout.write(to_toml(config.effective()))
        return 0
    setup()
    from awgd.daemon import serve  # the daemon's imports are not needed to check a config

    try:
        return asyncio.run(serve(config, args.config))
    except (LedgerError, SocketInUse, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled in the loop once it runs
        return 0
    except Exception:
        log.exception("awgd failed")
        return EX_SOFTWARE


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
