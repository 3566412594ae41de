"""`awgctl`: the admin's view of a running awgd.

Exit statuses: 0 ok; 1 the daemon answered with an error, or `status` found the server
unhealthy (so `awgctl status` works as a monitoring check); 2 usage; 3 the daemon is
unreachable, the socket refused us, or what answered sent something the API does not
define. `--json` prints the RPC result as JSON.

Changing peers (admin): `awgctl peer add KEY -i IFACE`, `peer remove`, `peer label KEY [TEXT]`,
`peer block`, `peer unblock`. A preshared key is read from a file (`--preshared-key-file`,
`-` for stdin), never taken from the command line, where every user could see it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from awgd_client import __version__
from awgd_client.async_client import AsyncClient
from awgd_client.errors import AwgdError, DaemonUnavailable, ProtocolError, RemoteError, SocketPermissionDenied
from awgd_client.formatting import (
    bar,
    format_ago,
    format_bytes,
    format_rate,
    parse_fraction,
    parse_rate,
    parse_size,
    plural,
)
from awgd_client.methods import limit_params, params, plan_params
from awgd_client.models import (
    AddedPeer,
    Event,
    EventList,
    History,
    PeerTraffic,
    RemovedPeer,
    ResetResult,
    SampleResult,
    ServerStatus,
    TrafficList,
)
from awgd_client.names import KEY_CHARS, LIST_SORTS, is_public_key, key_problem
from awgd_client.sync_client import Client

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
MIN_PREFIX = 8
SHORT_KEY = 12
# A table never narrower than this: below it, the columns that matter no longer fit either.
MIN_WIDTH = 80


class Style:
    """ANSI colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def good(self, text: str) -> str:
        return self._wrap("32", text)

    def bad(self, text: str) -> str:
        return self._wrap("31", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)


class UsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the RPC result as JSON")
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help="awgd's socket ($AWGD_SOCKET)")
    main = argparse.ArgumentParser(prog="awgctl", description="Query a running awgd.", parents=[common])
    main.add_argument("--version", action="version", version=f"awgctl {__version__}")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("status", parents=[common], help="the daemon, the sampler, the period, each interface")
    peers = commands.add_parser("peers", parents=[common], help="a table of peers and their usage this period")
    peers.add_argument("--interface", "-i")
    peers.add_argument("--sort", choices=LIST_SORTS, default="total")
    peers.add_argument("--limit", type=int, default=1000)
    peers.add_argument("--all", action="store_true", help="include peers no longer configured")
    peers.add_argument("--wide", action="store_true", help="every column, however wide ($COLUMNS is ignored)")
    peer = commands.add_parser(
        "peer",
        parents=[common],
        help="everything about one peer; or change one: peer add|rekey|remove|label|block|unblock|limit KEY, peer new",
        usage=(
            "awgctl peer [add|rekey|remove|label|block|unblock|limit] KEY [TEXT] [options]\n"
            "       awgctl peer new -i IFACE --config-out FILE [options]"
        ),
    )
    peer.add_argument("key", help="public key, or a unique prefix of at least 8 characters; or an action")
    peer.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    peer.add_argument("--interface", "-i")
    peer.add_argument("--allowed-ips", help="add, new: comma-separated CIDRs (default: the next free address)")
    peer.add_argument(
        "--outside-subnets",
        action="store_true",
        help="add: allowed IPs outside the interface's subnets are meant (the peer routes them)",
    )
    peer.add_argument("--preshared-key-file", metavar="FILE", help="add: read the preshared key from FILE (- = stdin)")
    peer.add_argument("--keepalive", type=int, help="add: persistent keepalive, seconds")
    peer.add_argument("--label", help="add, new: the peer's label")
    peer.add_argument("--yes", "-y", action="store_true", help="remove: do not ask for confirmation")
    peer.add_argument("--config-out", metavar="FILE", help="new, rekey: write the device's config to FILE (0600)")
    peer.add_argument("--qr-out", metavar="FILE.png", help="new, rekey: write the config's QR code to FILE.png")
    peer.add_argument("--qr", action="store_true", help="new, rekey: print the config's QR code on the terminal")
    peer.add_argument("--link", action="store_true", help="new, rekey: print the AmneziaVPN app's vpn:// key")
    peer.add_argument("--no-preshared-key", action="store_true", help="new, rekey: no preshared key")
    peer.add_argument("--down", metavar="SPEED", help="limit: the user's download, e.g. 10M, 500k, none")
    peer.add_argument("--up", metavar="SPEED", help="limit: the user's upload, e.g. 5M, none")
    history = commands.add_parser("history", parents=[common], help="a peer's usage by period, day or hour")
    history.add_argument("key")
    history.add_argument("--interface", "-i")
    history.add_argument("--by", choices=("period", "day", "hour"), help="the buckets (default: period)")
    history.add_argument("--days", action="store_true", help="the same as --by day")
    history.add_argument("--limit", type=int)
    commands.add_parser("sample", parents=[common], help="take a sample now")
    plan = commands.add_parser(
        "plan",
        parents=[common],
        help="set or clear a peer's plan: a quota per window, an expiry (admin)",
        usage="awgctl plan set|clear KEY [options]",
    )
    plan.add_argument("action", choices=("set", "clear"))
    plan.add_argument("key")
    plan.add_argument("--interface", "-i")
    plan.add_argument("--limit", help="set: the quota per window, e.g. 10GiB or 500MB (default: no limit)")
    plan.add_argument("--reset", choices=("period", "month", "week", "day", "none"), help="set: the window")
    plan.add_argument("--anchor", help="set: the window's anchor day, YYYY-MM-DD (default: today)")
    plan.add_argument(
        "--expires", help="set: when it expires: YYYY-MM-DD (00:00 in awgd's zone) or ISO 8601 (with an offset)"
    )
    plan.add_argument(
        "--over-quota", choices=("block", "throttle"), help="set: what a used-up quota does (default block)"
    )
    plan.add_argument("--throttle", metavar="SPEED", help="set: with --over-quota throttle, the speed then (e.g. 1M)")
    plan.add_argument("--warn", help="set: warning thresholds, e.g. 80%%,95%% or 0.8,0.95 (default 80%%)")
    events = commands.add_parser("events", parents=[common], help="the events; --follow waits for new ones")
    events.add_argument("--since", type=int, help="after this event id")
    events.add_argument("--types", help="comma-separated event types")
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("--follow", "-f", action="store_true", help="print new events as they happen (Ctrl-C stops)")
    metrics = commands.add_parser(
        "metrics", parents=[common], help="the Prometheus exposition once (for node_exporter's textfile collector)"
    )
    metrics.add_argument("--no-peer-metrics", action="store_true", help="leave out every per-peer series")
    reset = commands.add_parser("reset", parents=[common], help="zero a peer's usage this period (admin)")
    reset.add_argument("key")
    reset.add_argument("--interface", "-i")
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    style = Style(sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    try:
        with Client(getattr(args, "socket", None)) as client:
            return run(client, args, as_json, style)
    except UsageError as exc:
        return fail(EXIT_USAGE, str(exc))
    except (DaemonUnavailable, SocketPermissionDenied, ProtocolError) as exc:
        return fail(EXIT_UNREACHABLE, str(exc))
    except RemoteError as exc:
        return fail(EXIT_ERROR, exc.message)
    except AwgdError as exc:
        return fail(EXIT_ERROR, str(exc))


def fail(code: int, message: str) -> int:
    print(f"awgctl: {message}", file=sys.stderr)
    return code


def run(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    return COMMANDS[args.command](client, args, as_json, style)


def cmd_status(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    raw = client.call("server.status")
    status = ServerStatus.from_json(raw)
    code = EXIT_OK if status.healthy else EXIT_ERROR
    if as_json:
        return emit(raw, code)
    print(render_status(status, style))
    return code


def cmd_peers(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    if not 1 <= args.limit <= 10000:
        raise UsageError("--limit must be from 1 to 10000")
    params: dict[str, Any] = {"sort": args.sort, "limit": args.limit, "present_only": not args.all}
    if args.interface:
        params["interface"] = args.interface
    raw = client.call("traffic.list", **params)
    listing = TrafficList.from_json(raw)
    return emit(raw) if as_json else show(render_peers(listing, style, None if args.wide else terminal_width()))


PEER_ACTIONS = ("add", "new", "rekey", "remove", "label", "block", "unblock", "limit")


def cmd_peer(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    if args.key == "new":
        if args.rest:
            raise UsageError(f"awgctl peer new takes no key (it makes one): unexpected {' '.join(args.rest)!r}")
        return devices(lambda d: d.cmd_new(client, args, as_json))
    if args.key in PEER_ACTIONS:
        return change_peer(client, args, as_json, style)
    if args.rest:
        raise UsageError(f"unexpected {' '.join(args.rest)!r}; actions: {', '.join(PEER_ACTIONS)}")
    key, interface = resolve(client, args.key, args.interface)
    raw = client.call("traffic.get", public_key=key, **({"interface": interface} if interface else {}))
    peer = PeerTraffic.from_json(raw)
    if as_json:
        return emit(raw)
    history = History.from_json(client.call("traffic.history", public_key=key, interface=peer.interface, limit=6))
    return show(render_peer(peer, history, style))


def change_peer(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:  # noqa: PLR0911
    action, rest = args.key, list(args.rest)
    if not rest:
        raise UsageError(f"awgctl peer {action} KEY: give the peer's public key")
    given, extra = rest[0], rest[1:]
    if (extra and action != "label") or len(extra) > 1:
        raise UsageError(f"unexpected {' '.join(extra)!r}")
    if action == "add":
        if args.interface is None:
            raise UsageError("awgctl peer add: --interface is required")
        allowed = [part.strip() for part in args.allowed_ips.split(",")] if args.allowed_ips else None
        raw = client.change(
            "peer.add",
            {
                "interface": args.interface,
                "public_key": given,
                **({"allowed_ips": allowed} if allowed else {}),
                **({"preshared_key": read_key(args.preshared_key_file)} if args.preshared_key_file else {}),
                **({"persistent_keepalive": args.keepalive} if args.keepalive is not None else {}),
                **({"label": args.label} if args.label is not None else {}),
                **({"outside_subnets": True} if args.outside_subnets else {}),
            },
        )
        added = AddedPeer.from_json(raw)
        if as_json:
            return emit(raw)
        saved = "written to its config file" if added.persisted else style.bad("not persisted: no config file")
        return show(f"added {added.public_key} on {added.interface}: {', '.join(added.allowed_ips)}; {saved}")
    key, interface = resolve(client, given, args.interface)
    if interface is None:
        interface = PeerTraffic.from_json(client.call("traffic.get", public_key=key)).interface
    target = {"interface": interface, "public_key": key}
    if action == "rekey":
        return devices(lambda d: d.cmd_rekey(client, args, as_json, key, interface))
    if action == "remove":
        if not args.yes:
            ask(f"Remove {key} from {interface} (its config file too)? [y/N] ", "not removed")
        raw = client.change("peer.remove", target)
        removed = RemovedPeer.from_json(raw)
        return emit(raw) if as_json else show(f"removed {removed.public_key} from {removed.interface}")
    if action == "limit":
        return limit_peer(client, args, as_json, style, target)
    if action == "label":
        raw = client.change("peer.update", {**target, "label": extra[0] if extra else None})
    else:
        raw = client.change(f"peer.{action}", target)
    peer = PeerTraffic.from_json(raw)
    if as_json:
        return emit(raw)
    return show(f"{peer.public_key} on {peer.interface}: label {peer.label or '-'}; {blocked_state(peer, style)}")


def limit_peer(client: Client, args: argparse.Namespace, as_json: bool, style: Style, target: dict[str, str]) -> int:
    """`peer limit KEY --down 10M --up 5M`: a direction not given keeps its limit."""
    if args.down is None and args.up is None:
        raise UsageError("awgctl peer limit KEY: give --down and/or --up (a speed such as 10M, or none)")
    current = PeerTraffic.from_json(client.call("traffic.get", **target)).rate_limit
    try:
        down = parse_rate(args.down) if args.down is not None else (current.down_kbit if current else None)
        up = parse_rate(args.up) if args.up is not None else (current.up_kbit if current else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raw = client.change("peer.limit", limit_params(target["interface"], target["public_key"], down, up))
    peer = PeerTraffic.from_json(raw)
    if as_json:
        return emit(raw)
    return show(f"{peer.public_key} on {peer.interface}: speed {limit_line(peer)}")


def limit_line(peer: PeerTraffic) -> str:
    """ "down 10Mbit/s, up no limit"; "not limited"."""
    limit = peer.rate_limit
    if limit is None:
        return "not limited"

    def speed(kbit: int | None) -> str:
        return "no limit" if kbit is None else f"{format_rate(kbit)}bit/s"

    return f"down {speed(limit.down_kbit)}, up {speed(limit.up_kbit)}"


def devices(command: Callable[[Any], int]) -> int:
    """Run a command of awgctl_devices, which needs the `config` extra only when it runs."""
    from awgd_client import awgctl_devices

    try:
        return command(awgctl_devices)
    except awgctl_devices.DeviceUsageError as exc:
        raise UsageError(str(exc)) from None


def read_key(path: str) -> str:
    try:
        if path == "-":
            text = sys.stdin.readline()
        else:
            with open(path, encoding="ascii") as handle:
                text = handle.read(256)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the preshared key from {path}: {exc}") from None
    return text.strip()


def cmd_history(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    key, interface = resolve(client, args.key, args.interface)
    params: dict[str, Any] = {"public_key": key, "granularity": args.by or ("day" if args.days else "period")}
    if interface:
        params["interface"] = interface
    if args.limit is not None:
        params["limit"] = args.limit
    raw = client.call("traffic.history", **params)
    history = History.from_json(raw)
    return emit(raw) if as_json else show(render_history(history, style))


def cmd_metrics(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    """What awgd-exporter serves, printed once; `awgd_up 0` alone (and success) when awgd does
    not answer, so a textfile written from it never keeps stale figures."""
    try:
        from awgd_client.metrics import render
    except ImportError as exc:
        return fail(EXIT_ERROR, f"metrics need prometheus_client (python3-prometheus-client): {exc}")
    sys.stdout.buffer.write(render(lambda: client, peer_metrics=not args.no_peer_metrics))
    sys.stdout.flush()
    return EXIT_OK


def cmd_sample(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    raw = client.call("traffic.sample")
    sample = SampleResult.from_json(raw)
    if as_json:
        return emit(raw)
    return show(
        f"sampled at {fmt_time(sample.sampled_at)}: "
        f"{plural(sample.interfaces, 'interface')}, {plural(sample.peers, 'peer')}"
    )


def cmd_reset(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    key, interface = resolve(client, args.key, args.interface)
    if not args.yes:
        confirm(key, interface)
    raw = client.call("traffic.reset", public_key=key, **({"interface": interface} if interface else {}))
    result = ResetResult.from_json(raw)
    if as_json:
        return emit(raw)
    return show(
        f"reset {result.public_key} on {result.interface}: removed {format_bytes(result.removed.rx_bytes)} "
        f"received, {format_bytes(result.removed.tx_bytes)} sent this period"
    )


def cmd_plan(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    key, interface = resolve(client, args.key, args.interface)
    if interface is None:
        interface = PeerTraffic.from_json(client.call("traffic.get", public_key=key)).interface
    if args.action == "clear":
        raw = client.change("plan.clear", {"interface": interface, "public_key": key})
    else:
        try:
            limit = None if args.limit in (None, "none", "unlimited") else parse_size(args.limit)
            warn = [parse_fraction(part) for part in args.warn.split(",")] if args.warn else None
            throttle = parse_rate(args.throttle) if args.throttle else None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        given = plan_params(
            interface,
            key,
            limit_bytes=limit,
            reset=args.reset,
            anchor=args.anchor,
            expires_at=expiry(client, args.expires) if args.expires else None,
            warn_at=warn,
            over_quota=args.over_quota,
            throttle_kbit=throttle,
        )
        raw = client.change("plan.set", given)
    peer = PeerTraffic.from_json(raw)
    if as_json:
        return emit(raw)
    return show(f"{peer.public_key} on {peer.interface}: plan {plan_line(peer)}; {blocked_state(peer, style)}")


def expiry(client: Client, given: str) -> str:
    """--expires as given when it has a time; a plain date is 00:00 of that day in awgd's
    zone (where plan windows start too), as is a time without an offset."""
    try:
        if len(given) == len("YYYY-MM-DD"):
            moment = datetime.combine(date.fromisoformat(given), datetime.min.time())
        else:
            moment = datetime.fromisoformat(given)
    except ValueError:
        raise UsageError(f"--expires: not a date: {given!r} (YYYY-MM-DD, or ISO 8601 with an offset)") from None
    if moment.tzinfo is not None:
        return moment.isoformat()
    zone_name = ServerStatus.from_json(client.call("server.status")).timezone
    try:
        return moment.replace(tzinfo=ZoneInfo(zone_name)).isoformat()
    except (ZoneInfoNotFoundError, ValueError):
        return moment.astimezone().isoformat()


def cmd_events(client: Client, args: argparse.Namespace, as_json: bool, style: Style) -> int:
    types = [part.strip() for part in args.types.split(",")] if args.types else None
    if not 1 <= args.limit <= 1000:
        raise UsageError("--limit must be from 1 to 1000")
    if args.follow:
        return follow(client.socket_path, args.since, types, as_json)
    raw = client.call("events.list", **params(since=args.since, limit=args.limit, types=types))
    listing = EventList.from_json(raw)
    if as_json:
        return emit(raw)
    names = labels(TrafficList.from_json(client.call("traffic.list", limit=10000))) if listing.events else {}
    for event in listing.events:
        print(event_line(event, names))
    return EXIT_OK


def labels(listing: TrafficList) -> dict[str, str]:
    """Every key's label ("" for none), so that an event line names the peer as the peers
    table does; a key not in it is one awgd did not have when it was read."""
    return {p.public_key: p.label or "" for p in listing.peers}


def follow(socket_path: str, since: int | None, types: list[str] | None, as_json: bool) -> int:
    """Like `journalctl -f`: new events as they happen, through awgd restarts, until Ctrl-C."""

    async def printing() -> None:
        async with AsyncClient(socket_path) as client:
            names: dict[str, str] = {}
            async for event in client.subscribe(since, types):
                if not as_json and event.public_key and event.public_key not in names:  # a new peer
                    names = labels(await client.traffic_list(limit=10000))
                print(json.dumps(event_json(event)) if as_json else event_line(event, names), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(printing())
    return EXIT_OK


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "type": event.type,
        "interface": event.interface,
        "public_key": event.public_key,
        "data": event.data,
    }


def event_line(event: Event, names: dict[str, str] | None = None) -> str:
    """One event: its peer by label and short key, sizes as sizes, times as times."""
    data = " ".join(f"{name}={event_value(name, value)}" for name, value in event.data.items())
    who = " ".join(part for part in (event.interface, peer_name(event.public_key, names or {})) if part)
    return f"{event.id:>6}  {fmt_time(event.at)}  {event.type:<15} {who} {data}".rstrip()


def peer_name(public_key: str | None, names: dict[str, str]) -> str:
    if public_key is None:
        return ""
    short = public_key[:SHORT_KEY] + "…"
    label = names.get(public_key)
    return f"{json.dumps(label, ensure_ascii=False)} ({short})" if label else short


def event_value(name: str, value: Any) -> str:
    if name.endswith("_bytes") and isinstance(value, int) and not isinstance(value, bool):
        return format_bytes(value)
    if name == "threshold" and isinstance(value, float | int):
        return f"{value:.0%}"
    if name.endswith("public_key") and isinstance(value, str):
        return value[:SHORT_KEY] + "…"
    if isinstance(value, str) and name in ("start", "end", "expires_at"):
        try:
            return fmt_time(datetime.fromisoformat(value))
        except ValueError:
            pass
    return json.dumps(value, ensure_ascii=False)


def plan_text(peer: PeerTraffic) -> str:
    """ "8.1 GiB / 10.0 GiB" ; "1.2 GiB (no limit)"; "-" without a plan."""
    plan = peer.plan
    if plan is None:
        return "-"
    if plan.limit_bytes is None:
        return f"{format_bytes(plan.used_bytes)} (no limit)"
    return f"{format_bytes(plan.used_bytes)} / {format_bytes(plan.limit_bytes)}"


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, bool, Style], int]] = {
    "plan": cmd_plan,
    "events": cmd_events,
    "status": cmd_status,
    "peers": cmd_peers,
    "peer": cmd_peer,
    "history": cmd_history,
    "sample": cmd_sample,
    "reset": cmd_reset,
    "metrics": cmd_metrics,
}


def emit(result: Any, code: int = EXIT_OK) -> int:
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return code


def show(text: str) -> int:
    print(text)
    return EXIT_OK


def confirm(key: str, interface: str | None) -> None:
    where = f" on {interface}" if interface else ""
    ask(f"Zero this period's usage of {key}{where}? [y/N] ", "not reset")


def ask(question: str, refused: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(f"{refused}: give --yes when not on a terminal")
    if input(question).strip().lower() not in ("y", "yes"):
        raise UsageError(refused)


def resolve(client: Client, given: str, interface: str | None) -> tuple[str, str | None]:
    """A full key as is; a prefix of at least 8 characters when it matches one key."""
    if len(given) == KEY_CHARS:
        if not is_public_key(given):
            raise UsageError(f"{given!r} is not a public key: {key_problem(given)}")
        return given, interface
    if len(given) < MIN_PREFIX:
        raise UsageError(f"give the whole public key or at least {MIN_PREFIX} characters of it")
    listing = TrafficList.from_json(client.call("traffic.list", limit=10000, sort="public_key"))
    matches = {p.public_key for p in listing.peers if p.public_key.startswith(given)}
    if len(matches) == 1:
        return matches.pop(), interface
    if not matches:
        raise RemoteError(-32001, f"no peer's key starts with {given}")
    raise UsageError(f"{len(matches)} peers' keys start with {given}: give more characters")


# ---- rendering --------------------------------------------------------------------------------


def fmt_time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def visible(text: str) -> int:
    """The width a cell takes on the terminal: colour codes take none."""
    return len(re.sub(r"\033\[[0-9;]*m", "", text))


def table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    """Aligned columns; widths from the visible text (colour codes do not count)."""
    widths = [max([visible(h)] + [visible(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = []
    for row in [headers, *rows]:
        cells = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - visible(cell))
            cells.append(pad + cell if i in right else cell + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def terminal_width() -> int | None:
    """$COLUMNS, else the terminal's width; None (no limit) for a pipe without $COLUMNS, so
    that a script reading the table gets every column. Never less than MIN_WIDTH."""
    if os.environ.get("COLUMNS", "").strip().isdigit():
        return max(MIN_WIDTH, int(os.environ["COLUMNS"]))
    if not sys.stdout.isatty():
        return None
    return max(MIN_WIDTH, shutil.get_terminal_size().columns)


def fitted_table(
    headers: list[str],
    rows: list[list[str]],
    right: set[str],
    width: int | None,
    *,
    drop: Sequence[str] = (),
    shorten: str | None = None,
) -> str:
    """A table `width` columns wide at most: the columns named in `drop` go first, in that
    order, then the cells of column `shorten` are cut (with "…") down to 8 characters."""
    names = list(headers)
    cells = [list(row) for row in rows]

    def width_now() -> int:
        return sum(max([visible(n)] + [visible(r[i]) for r in cells]) for i, n in enumerate(names)) + 2 * (
            len(names) - 1
        )

    if width is not None:
        for column in drop:
            if width_now() <= width:
                break
            if column in names:
                index = names.index(column)
                del names[index]
                for row in cells:
                    del row[index]
        if shorten in names and width_now() > width:
            index = names.index(shorten)
            longest = max([visible(shorten)] + [visible(r[index]) for r in cells])
            keep = max(8, longest - (width_now() - width))
            for row in cells:
                if visible(row[index]) > keep:
                    row[index] = row[index][: keep - 1] + "…"
    return table(names, cells, {i for i, n in enumerate(names) if n in right})


def render_status(status: ServerStatus, style: Style) -> str:
    health = style.good("healthy") if status.healthy else style.bad("UNHEALTHY")
    sampler = status.sampler
    lines = [
        f"awgd {status.version}: {health}",
        f"up {format_ago(status.started_at).removesuffix(' ago')}, tool {status.tool or '-'}, "
        f"timezone {status.timezone}, tracking since {fmt_time(status.tracking_since)}",
        f"period {fmt_time(status.period.start)} -> {fmt_time(status.period.end)} "
        f"(resets {format_ago(status.period.end)})",
        f"sampler {sampler.schedule}: last sample {format_ago(sampler.last_success_at)}, "
        f"next {format_ago(sampler.next_sample_at)}, {plural(sampler.consecutive_failures, 'failure')} in a row",
    ]
    if sampler.last_error:
        lines.append(style.bad(f"last error: {sampler.last_error}"))
    rows = []
    for iface in status.interfaces:
        state = style.good("up") if iface.up else style.bad("down" if iface.exists else "missing")
        rows.append(
            [
                iface.name,
                state,
                str(iface.listen_port or "-"),
                str(iface.peers),
                str(iface.peers_online),
                style.bad(str(iface.peers_stalled)) if iface.peers_stalled else "0",
                format_bytes(iface.period.rx_bytes),
                format_bytes(iface.period.tx_bytes),
            ]
        )
    lines.append("")
    if rows:
        headers = ["INTERFACE", "STATE", "PORT", "PEERS", "ONLINE", "STALLED", "RX", "TX"]
        lines.append(table(headers, rows, {2, 3, 4, 5, 6, 7}))
        lines.append(style.dim(LEGEND))
        if any(iface.peers_stalled for iface in status.interfaces):
            lines.append(style.dim(STALLED_LEGEND))
    else:
        lines.append("no interfaces")
    return "\n".join(lines)


# RX and TX are the server's, as WireGuard counts them: say which way each goes for users.
LEGEND = "RX: received from the peer (its upload) · TX: sent to it (its download)"
STALLED_LEGEND = (
    "STALLED: devices that keep connecting and get no traffic (a config whose obfuscation "
    "parameters differ from the server's): `awgctl peers` shows which"
)
# The peers table's columns, and which go first when the terminal is narrow: the least
# needed to tell who uses what.
PEER_COLUMNS = ["KEY", "LABEL", "INTERFACE", "STATE", "PLAN", "LIMIT", "HANDSHAKE", "ENDPOINT", "RX", "TX"]
PEER_COLUMNS += ["TOTAL", "LIFETIME", "RATE"]
PEER_DROP_ORDER = ("ENDPOINT", "LIFETIME", "RATE", "HANDSHAKE", "INTERFACE", "TOTAL", "LIMIT", "PLAN")


def online_text(peer: PeerTraffic, style: Style) -> str:
    if not peer.present:
        return style.dim("removed")
    return style.good("online") if peer.online else "offline"


def blocked_text(peer: PeerTraffic, style: Style) -> str:
    return style.bad(",".join(peer.blocked)) if peer.blocked else "-"


def blocked_state(peer: PeerTraffic, style: Style) -> str:
    return style.bad("blocked: " + ", ".join(peer.blocked)) if peer.blocked else style.good("not blocked")


def state_text(peer: PeerTraffic, style: Style) -> str:
    """What matters first: blocked (and why), then slowed, then stalled (its device connects
    and gets no traffic), then online."""
    if peer.blocked:
        return style.bad("blocked:" + ",".join(peer.blocked))
    if peer.plan is not None and peer.plan.throttling:
        return style.bad("slowed")
    if peer.stalled and peer.present:
        return style.bad("stalled")
    return online_text(peer, style)


def render_peers(listing: TrafficList, style: Style, width: int | None = None) -> str:
    rows = [
        [
            p.public_key[:SHORT_KEY] + "…",
            p.label or "-",
            p.interface,
            state_text(p, style),
            plan_text(p),
            limit_text(p),
            format_ago(p.latest_handshake),
            p.endpoint or "-",
            format_bytes(p.period.rx_bytes),
            format_bytes(p.period.tx_bytes),
            format_bytes(p.period.total_bytes),
            format_bytes(p.lifetime.total_bytes),
            rate_text(p),
        ]
        for p in listing.peers
    ]
    shown = len(listing.peers)
    count = plural(listing.total, "peer") if shown == listing.total else f"{shown} of {plural(listing.total, 'peer')}"
    head = f"period {fmt_time(listing.period.start)} -> {fmt_time(listing.period.end)}; {count}"
    if not rows:
        return head
    right = {"RX", "TX", "TOTAL", "LIFETIME", "RATE"}
    columns = PEER_COLUMNS
    if all(p.rate_limit is None for p in listing.peers):  # no peer is limited: no column for it
        index = columns.index("LIMIT")
        columns = columns[:index] + columns[index + 1 :]
        rows = [row[:index] + row[index + 1 :] for row in rows]
    body = fitted_table(columns, rows, right, width, drop=PEER_DROP_ORDER, shorten="LABEL")
    return f"{head}\n\n{body}\n{style.dim(LEGEND)}"


def limit_text(peer: PeerTraffic) -> str:
    """The speed limit as down/up: "10M/5M", "2M/-"; "-" when not limited."""
    limit = peer.rate_limit
    return "-" if limit is None else f"{format_rate(limit.down_kbit)}/{format_rate(limit.up_kbit)}"


def rate_text(peer: PeerTraffic) -> str:
    """rx + tx per second now (between the daemon's last two samples)."""
    if peer.rate is None:
        return "-"
    return f"{format_bytes(peer.rate.rx_bytes_per_second + peer.rate.tx_bytes_per_second)}/s"


def render_peer(peer: PeerTraffic, history: History, style: Style) -> str:
    lines = [
        f"peer       {peer.public_key}",
        f"label      {peer.label or '-'}",
        f"interface  {peer.interface}",
        f"allowed    {', '.join(peer.allowed_ips) or '-'}",
        f"blocked    {blocked_text(peer, style)}",
        f"plan       {plan_line(peer)}",
        f"speed      {limit_line(peer)}",
        f"state      {online_text(peer, style)}; last handshake {format_ago(peer.latest_handshake)}",
        *(
            [style.bad("stalled    its device keeps connecting and gets no traffic: give the user the config again")]
            if peer.stalled and peer.present
            else []
        ),
        f"endpoint   {peer.endpoint or '-'}",
        f"session    {format_bytes(peer.session.rx_bytes)} received, {format_bytes(peer.session.tx_bytes)} sent",
        f"period     {format_bytes(peer.period.rx_bytes)} received, {format_bytes(peer.period.tx_bytes)} sent "
        f"({fmt_time(peer.period.start)} -> {fmt_time(peer.period.end)})",
        f"lifetime   {format_bytes(peer.lifetime.total_bytes)} since {fmt_time(peer.lifetime.since)}",
        "",
        render_history(history, style),
    ]
    return "\n".join(lines)


def plan_line(peer: PeerTraffic) -> str:
    plan = peer.plan
    if plan is None:
        return "-"
    left = "" if plan.remaining_bytes is None else f", {format_bytes(plan.remaining_bytes)} left"
    renews = "never renews" if plan.end is None else f"renews {fmt_time(plan.end)}"
    expires = f", expires {fmt_time(plan.expires_at)}" if plan.expires_at is not None else ""
    over = f", then {format_rate(plan.throttle_kbit)}bit/s" if plan.over_quota == "throttle" else ""
    return f"{plan_text(peer)}{left} ({plan.reset}; {renews}{expires}{over})"


def render_history(history: History, style: Style) -> str:
    """One row per period, day or hour, with its usage drawn as a bar against the largest
    shown. Hours carry their UTC offset: an hour a clock change repeats is two rows, told
    apart by it."""
    peak = max((b.total_bytes for b in history.buckets), default=0)
    hours = history.granularity == "hour"
    rows = [
        [
            b.start.strftime("%Y-%m-%d %H:%M %z") if hours else fmt_time(b.start),
            b.end.strftime("%H:%M") if hours else fmt_time(b.end),
            format_bytes(b.rx_bytes),
            format_bytes(b.tx_bytes),
            format_bytes(b.total_bytes),
            bar(b.total_bytes, peak, unicode=style.enabled),
        ]
        for b in history.buckets
    ]
    unit = {"day": "DAY", "hour": "HOUR"}.get(history.granularity, "PERIOD")
    return table([f"{unit} START", "END", "RX", "TX", "TOTAL", "USAGE"], rows, {2, 3, 4})
