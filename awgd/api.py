"""The RPC methods of API.md: parameter checks, access, and results from the state.

Reads are answered from in-memory state (`server.status`, `traffic.get`, `traffic.list`);
only history and reset touch the ledger. Nothing from a request reaches a command line:
keys and interface names are checked against strict patterns before anything else.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from awgd import __version__
from awgd.config import Config
from awgd.ledger import Ledger, LedgerError, day_number
from awgd.periods import day_bounds, local_day
from awgd.state import PeerState, State
from awgd_client import protocol as rpc

KEY_RE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=", re.ASCII)
IFNAME_RE = re.compile(r"[A-Za-z0-9_.@=+-]{1,15}", re.ASCII)
LIST_SORTS = ("total", "rx", "tx", "handshake", "public_key")
MAX_LIST_LIMIT = 10000
MAX_HISTORY_LIMIT = 1000
DEFAULT_HISTORY_LIMIT = {"period": 12, "day": 31}
# traffic.list is written this many peers at a time: about a millisecond of work each, so a
# listing of 10,000 peers never holds the event loop for long.
LIST_CHUNK = 256
# Peers whose sort keys are computed between two yields to the event loop.
SORT_CHUNK = 4096


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Caller:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


class Streamed:
    """A result too large to build at once. Its generator yields the result's other fields
    first (a dict), then the items of its list `field` in chunks; the server writes each
    chunk as it comes, so only one chunk is ever built at a time."""

    def __init__(self, field: str, generator: AsyncGenerator[Any, None]) -> None:
        self.field = field
        self._generator = generator

    async def open(self) -> tuple[dict[str, Any], AsyncIterator[list[Any]]]:
        head = await anext(self._generator)
        assert isinstance(head, dict) and head and self.field not in head
        return head, self._generator

    async def discard(self) -> None:
        await self._generator.aclose()


class Daemon(Protocol):
    """What the methods need from the daemon."""

    config: Config
    state: State
    ledger: Ledger
    started_at: datetime
    admin_gids: frozenset[int]

    async def sample_now(self) -> datetime: ...

    async def sample_fresh(self) -> datetime: ...

    def next_sample_at(self) -> datetime | None: ...


Handler = Callable[["Daemon", "Params", Caller], Awaitable[Any]]


class Params:
    """Typed access to a request's params; every mistake is -32602 naming the param."""

    def __init__(self, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for name in raw:
            if name not in allowed:
                shown = name if len(name) <= 40 and name.isprintable() else "(unprintable)"
                raise invalid(f"unknown param {shown!r}")
        self.raw = raw

    def key(self) -> str:
        value = self.raw.get("public_key")
        if value is None:
            raise invalid("public_key is required")
        if not isinstance(value, str) or not KEY_RE.fullmatch(value):
            raise invalid("public_key must be a 44-character base64 key")
        return value

    def interface(self) -> str | None:
        value = self.raw.get("interface")
        if value is None:
            return None
        if not isinstance(value, str) or not IFNAME_RE.fullmatch(value):
            raise invalid("interface must be an interface name (1-15 characters)")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if not isinstance(value, bool):
            raise invalid(f"{name} must be true or false")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise invalid(f"{name} must be an integer from {low} to {high}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw.get(name, default)
        if value not in choices:
            raise invalid(f"{name} must be one of {', '.join(choices)}")
        return str(value)


def invalid(message: str) -> RpcError:
    return RpcError(rpc.INVALID_PARAMS, f"invalid params: {message}")


def iso(instant: datetime | None, zone: ZoneInfo) -> str | None:
    return None if instant is None else _iso(instant, zone)


# The same few instants (the period's bounds, the last sample's time) are formatted for every
# answer; formatting is most of the cost of a traffic.get.
@functools.lru_cache(maxsize=4096)
def _iso(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=65536)
def _iso_ts(timestamp: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(timestamp, zone).isoformat(timespec="seconds")


def usage(rx: int, tx: int) -> dict[str, int]:
    return {"rx_bytes": rx, "tx_bytes": tx, "total_bytes": rx + tx}


def peer_traffic(daemon: Daemon, peer: PeerState, now: float) -> dict[str, Any]:
    zone = daemon.config.zone
    period = daemon.state.period
    handshake = peer.latest_handshake
    return {
        "interface": peer.interface,
        "public_key": peer.public_key,
        "present": peer.present,
        "online": daemon.state.online(peer, now, daemon.config.online_window),
        "latest_handshake": _iso_ts(handshake, zone) if handshake else None,
        "endpoint": peer.endpoint if peer.present else None,
        "sampled_at": iso(daemon.state.sampled_at(peer), zone),
        "session": usage(peer.session_rx, peer.session_tx),
        "period": {
            "start": iso(period.start, zone),
            "end": iso(period.end, zone),
            **usage(peer.period_rx, peer.period_tx),
        },
        "lifetime": {"since": iso(peer.first_seen, zone), **usage(peer.lifetime_rx, peer.lifetime_tx)},
    }


def find_peer(daemon: Daemon, public_key: str, interface: str | None) -> PeerState:
    interfaces = daemon.state.by_key.get(public_key, [])
    if interface is not None:
        if interface not in interfaces:
            raise RpcError(rpc.UNKNOWN_PEER, "unknown peer", {"public_key": public_key})
        return daemon.state.peers[(interface, public_key)]
    if not interfaces:
        raise RpcError(rpc.UNKNOWN_PEER, "unknown peer", {"public_key": public_key})
    if len(interfaces) > 1:
        raise RpcError(
            rpc.AMBIGUOUS_PEER,
            "ambiguous peer: the key is on several interfaces; pass interface",
            {"interfaces": sorted(interfaces)},
        )
    return daemon.state.peers[(interfaces[0], public_key)]


# ---- the methods ----------------------------------------------------------------------------


async def server_status(daemon: Daemon, params: Params, caller: Caller) -> dict[str, Any]:
    state, config, zone = daemon.state, daemon.config, daemon.config.zone
    interfaces = []
    for name in sorted(state.interfaces):
        iface = state.interfaces[name]
        rx, tx, online = state.summary.get(name, (0, 0, 0))
        interfaces.append(
            {
                "name": name,
                "exists": iface.exists,
                "up": iface.up,
                "public_key": iface.public_key,
                "listen_port": iface.listen_port,
                "peers": iface.peers,
                "peers_online": online,
                "period": usage(rx, tx),
            }
        )
    sampler = state.sampler
    healthy = (
        sampler.last_error is None
        and sampler.last_success_at is not None
        and state.ledger.error is None
        and all(i["exists"] and i["up"] for i in interfaces)
    )
    return {
        "version": __version__,
        "started_at": iso(daemon.started_at, zone),
        "uptime_seconds": int((datetime.now(UTC) - daemon.started_at).total_seconds()),
        "healthy": healthy,
        "tool": sampler.tool,
        "timezone": config.zone_name,
        "tracking_since": iso(daemon.ledger.tracking_since, zone),
        "period": {"start": iso(state.period.start, zone), "end": iso(state.period.end, zone)},
        "sampler": {
            "schedule": config.sampling_schedule,
            "last_sample_at": iso(sampler.last_sample_at, zone),
            "last_success_at": iso(sampler.last_success_at, zone),
            "next_sample_at": iso(daemon.next_sample_at(), zone),
            "consecutive_failures": sampler.consecutive_failures,
            "last_error": sampler.last_error,
        },
        "ledger": {"checked_at": iso(state.ledger.checked_at, zone), "error": state.ledger.error},
        "interfaces": interfaces,
    }


async def traffic_get(daemon: Daemon, params: Params, caller: Caller) -> dict[str, Any]:
    public_key, interface = params.key(), params.interface()
    fresh = params.boolean("fresh", False)
    if fresh:
        # Before the lookup: a peer added since the last sample is found by this one. The
        # rate limit (one sample per 5 s) keeps made-up keys from costing more tool runs.
        await daemon.sample_fresh()
    return peer_traffic(daemon, find_peer(daemon, public_key, interface), time.time())


async def traffic_list(daemon: Daemon, params: Params, caller: Caller) -> Streamed:
    interface = params.interface()
    sort = params.choice("sort", "total", LIST_SORTS)
    limit = params.integer("limit", 1000, 1, MAX_LIST_LIMIT)
    offset = params.integer("offset", 0, 0, 2**31)
    present_only = params.boolean("present_only", False)
    chosen = _listing(daemon, interface=interface, sort=sort, limit=limit, offset=offset, present_only=present_only)
    return Streamed("peers", chosen)


_ORDER: dict[str, Callable[[PeerState], Any]] = {
    "total": lambda p: (-(p.period_rx + p.period_tx), p.public_key, p.interface),
    "rx": lambda p: (-p.period_rx, p.public_key, p.interface),
    "tx": lambda p: (-p.period_tx, p.public_key, p.interface),
    "handshake": lambda p: (-p.latest_handshake, p.public_key, p.interface),
    "public_key": lambda p: (p.public_key, p.interface),
}


async def _listing(
    daemon: Daemon, *, interface: str | None, sort: str, limit: int, offset: int, present_only: bool
) -> AsyncGenerator[Any, None]:
    """traffic.list, produced when the connection is ready to write it (see Streamed)."""
    everyone = list(daemon.state.peers.values())
    order = _ORDER[sort]
    keyed: list[tuple[Any, PeerState]] = []
    for start in range(0, len(everyone), SORT_CHUNK):
        keyed += [
            (order(p), p)
            for p in everyone[start : start + SORT_CHUNK]
            if (interface is None or p.interface == interface) and (p.present or not present_only)
        ]
        await asyncio.sleep(0)
    keyed.sort(key=_first)  # keys are unique: peers are never compared
    zone = daemon.config.zone
    period = daemon.state.period
    yield {"period": {"start": iso(period.start, zone), "end": iso(period.end, zone)}, "total": len(keyed)}
    chosen = keyed[offset : offset + limit]
    del everyone, keyed
    for start in range(0, len(chosen), LIST_CHUNK):
        now = time.time()
        yield [peer_traffic(daemon, p, now) for _, p in chosen[start : start + LIST_CHUNK]]


def _first(pair: tuple[Any, PeerState]) -> Any:
    return pair[0]


async def traffic_history(daemon: Daemon, params: Params, caller: Caller) -> dict[str, Any]:
    public_key, interface = params.key(), params.interface()
    granularity = params.choice("granularity", "period", ("period", "day"))
    limit = params.integer("limit", DEFAULT_HISTORY_LIMIT[granularity], 1, MAX_HISTORY_LIMIT)
    peer = find_peer(daemon, public_key, interface)
    rows = await asyncio.to_thread(daemon.ledger.history, peer.interface, public_key, granularity, limit)
    zone = daemon.config.zone
    buckets: list[dict[str, Any]] = []
    if granularity == "period":
        current = daemon.state.period
        stored = {row.start: row for row in rows}
        start_ts = int(current.start.timestamp())
        if start_ts not in stored:  # the open period is always shown, even before any traffic
            buckets.append(_bucket(current.start, current.end, peer.period_rx, peer.period_tx, zone))
        for stored_row in rows:
            row = stored_row
            rx, tx = (peer.period_rx, peer.period_tx) if row.start == start_ts else (row.rx, row.tx)
            buckets.append(
                _bucket(datetime.fromtimestamp(row.start, UTC), datetime.fromtimestamp(row.end, UTC), rx, tx, zone)
            )
    else:
        # Days are contiguous: a day without traffic is a zero bucket, back to the first day seen.
        days = {row.start: row for row in rows}
        today = local_day(datetime.now(UTC), zone)
        first = local_day(peer.first_seen, zone)
        for offset in range(limit):
            day = today - timedelta(days=offset)
            if day < first:
                break
            found = days.get(day_number(day))
            bounds = day_bounds(day, zone)
            buckets.append(_bucket(bounds.start, bounds.end, found.rx if found else 0, found.tx if found else 0, zone))
    return {
        "interface": peer.interface,
        "public_key": public_key,
        "granularity": granularity,
        "buckets": buckets[:limit],
    }


def _bucket(start: datetime, end: datetime, rx: int, tx: int, zone: ZoneInfo) -> dict[str, Any]:
    return {"start": iso(start, zone), "end": iso(end, zone), **usage(rx, tx)}


async def traffic_sample(daemon: Daemon, params: Params, caller: Caller) -> dict[str, Any]:
    # Root and admins order a sample now; anyone else gets fresh's rule (one tool run per
    # 5 s, joined), so a member of the socket's group cannot keep the tool running.
    admin = is_admin(caller, daemon.admin_gids)
    sampled_at = await (daemon.sample_now() if admin else daemon.sample_fresh())
    return {
        "sampled_at": iso(sampled_at, daemon.config.zone),
        "interfaces": sum(1 for i in daemon.state.interfaces.values() if i.read),
        "peers": daemon.state.sampler.peers_seen,
    }


async def traffic_reset(daemon: Daemon, params: Params, caller: Caller) -> dict[str, Any]:
    public_key, interface = params.key(), params.interface()
    peer = find_peer(daemon, public_key, interface)
    at = datetime.now(UTC)
    period = daemon.state.period
    try:
        removed = await asyncio.to_thread(daemon.ledger.reset, peer.interface, public_key, at=at, period=period)
    except KeyError:  # seen by a reading but never booked: nothing to remove
        removed = (0, 0)
    daemon.state.reset((peer.interface, public_key))
    return {
        "interface": peer.interface,
        "public_key": public_key,
        "reset_at": iso(at, daemon.config.zone),
        "removed": usage(*removed),
    }


@dataclass(frozen=True, slots=True)
class Method:
    handler: Handler
    params: tuple[str, ...]
    admin: bool = False
    # Answered from memory alone, small, never waiting on the tool or the ledger, so the
    # server answers it in its read loop without a task (traffic.get only waits when asked
    # for `fresh` figures).
    inline: bool = False


METHODS: dict[str, Method] = {
    "server.status": Method(server_status, (), inline=True),
    "traffic.get": Method(traffic_get, ("public_key", "interface", "fresh"), inline=True),
    "traffic.list": Method(traffic_list, ("interface", "sort", "limit", "offset", "present_only")),
    "traffic.history": Method(traffic_history, ("public_key", "interface", "granularity", "limit")),
    "traffic.sample": Method(traffic_sample, ()),
    "traffic.reset": Method(traffic_reset, ("public_key", "interface"), admin=True),
}


def answered_inline(message: Any) -> bool:
    """Whether every request of a decoded message is answered at once and small (Method.inline)."""
    for item in message if isinstance(message, list) else [message]:
        if not isinstance(item, dict):
            continue  # an error answer, made at once
        name = item.get("method")
        method = METHODS.get(name) if isinstance(name, str) else None
        if method is not None and not method.inline:
            return False
        params = item.get("params")
        if isinstance(params, dict) and params.get("fresh", False) is not False:
            return False
    return True


def is_admin(caller: Caller, admin_gids: frozenset[int]) -> bool:
    return caller.uid == 0 or bool(({caller.gid} | caller.groups) & admin_gids)


async def dispatch(daemon: Daemon, request: rpc.Request, caller: Caller) -> Any:
    """Run one request; raises RpcError for every failure a client should see."""
    method = METHODS.get(request.method)
    if method is None:
        shown = request.method if len(request.method) <= 64 and request.method.isprintable() else "(unprintable)"
        raise RpcError(rpc.METHOD_NOT_FOUND, f"method not found: {shown}")
    if method.admin and not is_admin(caller, daemon.admin_gids):
        raise RpcError(rpc.PERMISSION_DENIED, "permission denied: admin method", {"method": request.method})
    try:
        return await method.handler(daemon, Params(request.params, method.params), caller)
    except LedgerError as exc:
        raise RpcError(rpc.INTERNAL_ERROR, f"internal error: {exc}") from None
