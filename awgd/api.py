"""The RPC methods (docs/API.md): params, access, results, and the RPC error codes.

The methods see the daemon through `View`, a narrow, read-only view: the books, the
sampler's and the ledger's health, the config, and the few actions a method may ask for.
Reads are answered from the books (`server.status`, `traffic.get`, `traffic.list`); only
history, reset and a traffic.changes reader that fell behind (awgd.change_feed) touch the
ledger. Nothing from a request reaches a command line: keys and
interface names are checked against the API's rules (awgd_client.names) before anything else.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from awgd import __version__, change_feed, openrpc
from awgd.addresses import AddressError, normalize_cidrs
from awgd.bookkeeper import Bookkeeper, BucketRows
from awgd.books import Books, InterfaceBook, PeerBook, online
from awgd.buckets import Bucket
from awgd.config import Config
from awgd.entry import day_number
from awgd.event_feed import EventFeed, Subscriber
from awgd.events import MAX_LIST_LIMIT as MAX_EVENTS_LIMIT
from awgd.events import TYPES as EVENT_TYPES
from awgd.events import Event
from awgd.fleet_sync import BadFleet, parse_sync
from awgd.ledger import LedgerError
from awgd.peer_admin import BadChange, ChangeError, Conflict, NotThere, PeerAdmin, ToolRefused
from awgd.periods import Period, day_bounds, hour_bounds, hour_start, local_day
from awgd.plans import BadPlan, lifetime, parse_plan, plan_json
from awgd.quota import Plan
from awgd.sampling import Health, SamplingFailed
from awgd.shaping import MAX_KBIT, MIN_KBIT, RateLimit, effective, is_kbit
from awgd.wg_config import MAX_LABEL_CHARS
from awgd_client import protocol as rpc
from awgd_client.change_rows import COLUMNS
from awgd_client.names import LIST_SORTS, interface_name_problem, is_public_key, key_problem

T = TypeVar("T")


MAX_LIST_LIMIT = 10000
DEFAULT_CHANGES_LIMIT = 1000
# traffic.changes pages that carry closed periods and days from the ledger (a reader behind
# by a day or more, or after a restart) list at most this many peers, whatever the limit: with
# a year of day rows each, such a page is about 15 MiB of JSON, and its ledger query as big.
CLOSED_CHANGES_LIMIT = 500
CHANGE_COLUMNS = list(COLUMNS)  # written in every traffic.changes answer
MAX_HISTORY_LIMIT = 1000
DEFAULT_HISTORY_LIMIT = {"period": 12, "day": 31, "hour": 24}
# traffic.list is written this many peers at a time: about a millisecond of work each, so a
# listing of 10,000 peers never holds the event loop for long.
LIST_CHUNK = 256
# Peers whose sort keys are computed between two yields to the event loop.
SORT_CHUNK = 4096
# The same few instants (the period's bounds, the last sample's time, handshakes) are
# formatted for every answer; formatting is most of the cost of a traffic.get.
FORMATTED_TIMES = 65536


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def invalid(message: str, data: dict[str, Any] | None = None) -> RpcError:
    return RpcError(rpc.INVALID_PARAMS, f"invalid params: {message}", data)


@dataclass(frozen=True, slots=True)
class Caller:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


@dataclass(slots=True)
class LedgerHealth:
    checked_at: datetime | None = None  # the last quick_check of the file
    error: str | None = None  # what it found wrong; None = sound (or not checked yet)


class View(Protocol):
    """What the methods see of the daemon."""

    @property
    def config(self) -> Config: ...

    @property
    def books(self) -> Books: ...

    @property
    def health(self) -> Health: ...

    @property
    def ledger_health(self) -> LedgerHealth: ...

    @property
    def started_at(self) -> datetime: ...

    @property
    def admin_gids(self) -> frozenset[int]: ...

    @property
    def fleet_gids(self) -> frozenset[int]:
        """rpc.fleet_groups: who may pass the central database's fleet plans on (fleet.sync)."""

    def next_sample_at(self) -> datetime | None: ...

    async def sample(self, *, rate_limited: bool) -> datetime:
        """A sample now (joined), or, rate-limited, fresh's rule. Raises SamplingFailed."""

    @property
    def bookkeeper(self) -> Bookkeeper:
        """The books with the ledger: history and closed buckets, read against the running
        totals (awgd.bookkeeper)."""

    @property
    def instance(self) -> str:
        """This run of the daemon (traffic.changes' cursors name it)."""

    @property
    def admin(self) -> PeerAdmin:
        """The changes to the server's peers (awgd.peer_admin)."""

    async def events(self, since: int, limit: int, types: tuple[str, ...] | None) -> tuple[list[Event], int]: ...

    @property
    def feed(self) -> EventFeed:
        """Where stored events are published (events.subscribe)."""


def is_admin(caller: Caller, admin_gids: frozenset[int]) -> bool:
    return caller.uid == 0 or bool(({caller.gid} | caller.groups) & admin_gids)


def _rate_limit(limit: RateLimit | None) -> dict[str, int | None] | None:
    return None if limit is None else {"down_kbit": limit.down_kbit, "up_kbit": limit.up_kbit}


class Params:
    """Typed access to a request's params; every mistake is -32602 naming the param."""

    def __init__(
        self, raw: Mapping[str, Any], allowed: tuple[str, ...], interfaces: Mapping[str, InterfaceBook] | None = None
    ) -> None:
        for name in raw:
            if name not in allowed:
                shown = name if len(name) <= 40 and name.isprintable() else "(unprintable)"
                raise invalid(f"unknown param {shown!r}")
        self.raw = raw
        self._interfaces = interfaces

    def key(self) -> str:
        value = self.raw.get("public_key")
        if value is None:
            raise invalid("public_key is required")
        if not is_public_key(value):
            raise invalid(f"public_key is not a key: {key_problem(value)}")
        return str(value)

    def interface(self) -> str | None:
        value = self.raw.get("interface")
        if value is None:
            return None
        problem = interface_name_problem(value)
        if problem is not None:
            raise invalid(f"interface {problem} (an interface name: 1-15 bytes, no /, :, whitespace)")
        if self._interfaces is not None and value not in self._interfaces:
            # wg0 asked of an awg0 server is the usual mistake: name what there is, rather
            # than "unknown peer" or an empty list.
            known = sorted(name for name, book in self._interfaces.items() if book.listed) or sorted(self._interfaces)
            there = f"this server has {', '.join(known)}" if known else "this server has no interface yet"
            raise invalid(f"unknown interface {value!r}: {there}", {"interface": value, "interfaces": known})
        return str(value)

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

    def kbit(self, name: str) -> int | None:
        """A speed limit in kbit/s, or None (absent or null: no limit that way)."""
        value = self.raw.get(name)
        if value is None:
            return None
        if not is_kbit(value):
            raise invalid(f"{name} must be null or an integer from {MIN_KBIT} to {MAX_KBIT} (kbit/s)")
        return value

    def required_interface(self) -> str:
        interface = self.interface()
        if interface is None:
            raise invalid("interface is required")
        return interface

    def optional_key(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if not is_public_key(value):  # a preshared key has the same shape: base64 of 32 bytes
            raise invalid(f"{name} is not a key: {key_problem(value)}")
        return str(value)

    def allowed_ips(self) -> tuple[str, ...] | None:
        value = self.raw.get("allowed_ips")
        if value is None:
            return None
        if not isinstance(value, list):
            raise invalid("allowed_ips must be a list of CIDR strings")
        try:
            return normalize_cidrs(value)
        except AddressError as exc:
            raise invalid(f"allowed_ips: {exc}") from None

    def keepalive(self, low: int) -> int | None:
        value = self.raw.get("persistent_keepalive")
        if value is None:
            return None
        return self.integer("persistent_keepalive", 0, low, 65535)

    def label(self) -> str | None:
        value = self.raw.get("label")
        if value is None:
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_LABEL_CHARS:
            raise invalid(f"label must be a string of 1 to {MAX_LABEL_CHARS} characters, or null")
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in value) or value != value.strip():
            raise invalid("label must not contain control characters or start or end with spaces")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw.get(name, default)
        if value not in choices:
            raise invalid(f"{name} must be one of {', '.join(choices)}")
        return str(value)


@dataclass(frozen=True, slots=True)
class Subscription:
    """events.subscribe's result: the server answers `{"last_id"}` and then pushes the
    stored events after `since` and the new ones, as notifications (awgd.rpc_server)."""

    subscriber: Subscriber
    since: int | None
    last_id: int
    types: tuple[str, ...] | None


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


def usage(rx: int, tx: int) -> dict[str, int]:
    return {"rx_bytes": rx, "tx_bytes": tx, "total_bytes": rx + tx}


# A method's handler: a coroutine function, or, for an inline method, a plain function.
Handler = Callable[["Api", Params, Caller], Awaitable[Any] | Any]


@dataclass(frozen=True, slots=True)
class Method:
    handler: Handler
    params: tuple[str, ...]
    admin: bool = False
    # Only root and rpc.fleet_groups (awgd-mirror) may call it: not the admins, whose bot
    # would otherwise decide a fleet user's blocks on one node alone.
    fleet: bool = False
    required: tuple[str, ...] = ()  # of params: refused with -32602 when missing
    summary: str = ""  # one line, for rpc.discover (awgd.openrpc)
    # Answered from memory alone, small, never waiting on the tool or the ledger, so the
    # server answers it in its read loop, without a task or a coroutine (unless asked for
    # `fresh` figures: then a sample is taken first).
    inline: bool = False


class Api:
    """The methods of docs/API.md over one daemon's View."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.books = view.books  # the same object for the daemon's life
        self._iso = lru_cache(maxsize=FORMATTED_TIMES)(self._format)
        self._iso_ts = lru_cache(maxsize=FORMATTED_TIMES)(self._format_timestamp)
        self._period_shown: tuple[Period | None, ZoneInfo | None, str, str] = (None, None, "", "")
        self._orders: tuple[int, dict[tuple[str, str | None, bool], list[PeerBook]]] = (-1, {})
        self._status: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._changed: tuple[int, int, list[PeerBook]] = (-1, -1, [])
        self._discovered: dict[str, Any] | None = None

    # ---- dispatch -------------------------------------------------------------------------

    def _method(self, request: rpc.Request, caller: Caller) -> tuple[Method, Params]:
        method = METHODS.get(request.method)
        if method is None:
            name = request.method
            shown = name if len(name) <= 64 and name.isprintable() else "(unprintable)"
            raise RpcError(rpc.METHOD_NOT_FOUND, f"method not found: {shown}")
        if method.admin and not is_admin(caller, self.view.admin_gids):
            # Says which setting grants what: the socket's group reads, rpc.admin_groups manages.
            groups = list(self.view.config.admin_groups)
            raise RpcError(
                rpc.PERMISSION_DENIED,
                f"permission denied: {request.method} manages the server; root and members of "
                f"rpc.admin_groups ({', '.join(groups) or 'none set'}) may call it, the socket's group only reads",
                {"method": request.method, "admin_groups": groups},
            )
        if method.fleet and not is_admin(caller, self.view.fleet_gids):
            groups = list(self.view.config.fleet_groups)
            raise RpcError(
                rpc.PERMISSION_DENIED,
                f"permission denied: {request.method} passes the fleet's plans on; root and members of "
                f"rpc.fleet_groups ({', '.join(groups) or 'none set'}) may call it",
                {"method": request.method, "fleet_groups": groups},
            )
        return method, Params(request.params, method.params, self.books.interfaces)

    async def dispatch(self, request: rpc.Request, caller: Caller) -> Any:
        """Run one request; raises RpcError for every failure a client should see."""
        try:
            method, params = self._method(request, caller)
            if "fresh" in method.params and params.boolean("fresh", False):
                # Before the method: a peer added since the last sample is found by this one.
                # The rate limit (one sample per 5 s) keeps made-up keys from costing tool runs.
                await self.view.sample(rate_limited=True)
            result = method.handler(self, params, caller)
            return await result if inspect.isawaitable(result) else result
        except SamplingFailed as exc:
            raise RpcError(rpc.SAMPLING_FAILED, f"sampling failed: {exc}", {"reason": str(exc)}) from None
        except ChangeError as exc:
            raise RpcError(_CHANGE_CODES[type(exc)], exc.message, exc.data) from None
        except LedgerError as exc:
            raise RpcError(rpc.INTERNAL_ERROR, f"internal error: {exc}") from None

    def answer_now(self, request: rpc.Request, caller: Caller) -> Any:
        """Run one request that `inline` said is answered at once (no await anywhere)."""
        method, params = self._method(request, caller)
        assert method.inline
        return method.handler(self, params, caller)

    @staticmethod
    def inline(items: list[rpc.Request | dict[str, Any]]) -> bool:
        """Whether every request is answered from memory at once, and small (Method.inline)."""
        for item in items:
            if isinstance(item, dict):
                continue  # an error answer, made at once
            method = METHODS.get(item.method)
            if method is not None and (not method.inline or item.params.get("fresh", False) is not False):
                return False
        return True

    # ---- shaping answers ----------------------------------------------------------------

    def _format(self, instant: datetime, zone: ZoneInfo) -> str:
        return instant.astimezone(zone).isoformat(timespec="seconds")

    def _format_timestamp(self, timestamp: int, zone: ZoneInfo) -> str:
        return datetime.fromtimestamp(timestamp, zone).isoformat(timespec="seconds")

    def iso(self, instant: datetime | None) -> str | None:
        return None if instant is None else self._iso(instant, self.view.config.zone)

    def peer_traffic(self, book: PeerBook, now: float) -> dict[str, Any]:
        """A PeerTraffic. Built for every peer of a traffic.list and for every traffic.get, so
        its dicts are written out rather than assembled from helpers."""
        books, config = self.books, self.view.config
        zone = config.zone
        period = books.period
        shown = self._period_shown
        if shown[0] is not period or shown[1] is not zone:
            shown = (period, zone, self._format(period.start, zone), self._format(period.end, zone))
            self._period_shown = shown
        start, end = shown[2], shown[3]
        present, line = book.present, book.line
        if line is None:
            handshake = session_rx = session_tx = 0
        else:
            handshake = line.latest_handshake
            session_rx, session_tx = (line.rx_bytes, line.tx_bytes) if present else (0, 0)
        period_rx, period_tx = books.period_usage(book)
        lifetime_rx, lifetime_tx = book.lifetime_rx, book.lifetime_tx
        rate_rx, rate_tx = books.rate(book)
        settings = book.settings
        blocked = settings.blocked
        # PeerBook.allowed_ips and .label, written out (tuples are encoded as JSON arrays).
        allowed_ips = book.allowed_ips if blocked or not present or line is None else line.allowed_ips
        return {
            "interface": book.interface,
            "public_key": book.public_key,
            "label": settings.label or book.found_name,
            "allowed_ips": allowed_ips,
            "blocked": blocked,
            "plan": None if settings.plan is None else self._plan(book, settings.plan),
            "present": present,
            "online": online(book, now, config.online_window),
            "stalled": books.stalled(book),
            "latest_handshake": self._iso_ts(handshake, zone) if handshake else None,
            "endpoint": line.endpoint if present and line is not None else None,
            "sampled_at": self.iso(books.sampled_at(book)),
            "session": {"rx_bytes": session_rx, "tx_bytes": session_tx, "total_bytes": session_rx + session_tx},
            "period": {
                "start": start,
                "end": end,
                "rx_bytes": period_rx,
                "tx_bytes": period_tx,
                "total_bytes": period_rx + period_tx,
                "blocked_bytes": book.blocked_bytes,
            },
            "lifetime": {
                "since": self._iso(book.first_seen, zone),
                "rx_bytes": lifetime_rx,
                "tx_bytes": lifetime_tx,
                "total_bytes": lifetime_rx + lifetime_tx,
            },
            "rate": {"rx_bytes_per_second": rate_rx, "tx_bytes_per_second": rate_tx},
            "replaced_by": book.replaced_by,
            "rate_limit": _rate_limit(effective(settings.rate_limit, settings.throttle)),
        }

    def _plan(self, book: PeerBook, plan: Plan) -> dict[str, Any]:
        shown = plan_json(plan)
        zone = self.view.config.zone
        if plan.expires_at is not None:
            shown["expires_at"] = self._iso_ts(plan.expires_at, zone)
        state = self.books.plans.get(book.key)
        if state is None:  # pragma: no cover - a plan always has its progress
            return {**shown, "start": None, "end": None, "used_bytes": 0, "remaining_bytes": plan.limit_bytes}
        used = state.progress.used(lifetime(book))
        window = state.window
        return {
            **shown,
            "start": self._iso(window.start, zone),
            "end": None if window.end is None else self._iso(window.end, zone),
            "used_bytes": used,
            "remaining_bytes": None if plan.limit_bytes is None else max(0, plan.limit_bytes - used),
        }

    def find(self, public_key: str, interface: str | None) -> PeerBook:
        found = self.books.find(public_key)
        if len(found) == 1 and (interface is None or found[0].interface == interface):
            return found[0]
        if interface is not None:
            found = [book for book in found if book.interface == interface]
        if not found:
            raise RpcError(rpc.UNKNOWN_PEER, "unknown peer", {"public_key": public_key})
        if len(found) > 1:
            raise RpcError(
                rpc.AMBIGUOUS_PEER,
                "ambiguous peer: the key is on several interfaces; pass interface",
                {"interfaces": sorted(book.interface for book in found)},
            )
        return found[0]

    # ---- the methods ------------------------------------------------------------------------

    def server_status(self, params: Params, caller: Caller) -> dict[str, Any]:
        # Asked on every press of a bot's status button: the answer is kept for as long as
        # nothing in it can have changed (within the same second).
        view = self.view
        health, ledger = view.health, view.ledger_health
        key = (
            view.books.version,
            health.last_sample_at,
            health.consecutive_failures,
            ledger.checked_at,
            view.next_sample_at(),
            id(view.config),
            int(time.time()),
        )
        if self._status is not None and self._status[0] == key:
            return self._status[1]
        answer = self._server_status()
        self._status = (key, answer)
        return answer

    def _server_status(self) -> dict[str, Any]:
        view = self.view
        books, config, health = view.books, view.config, view.health
        summary = books.summary(config.online_window)
        stalled = books.stalled_counts()
        interfaces = []
        for name in sorted(books.interfaces):
            iface = books.interfaces[name]
            if not iface.listed:
                continue
            figures = summary.get(name)
            interfaces.append(
                {
                    "name": name,
                    "exists": iface.exists,
                    "up": iface.up,
                    "reader": iface.reader,
                    "public_key": iface.public_key,
                    "listen_port": iface.listen_port,
                    "peers": iface.peers,
                    "peers_online": figures.online if figures else 0,
                    "peers_stalled": stalled.get(name, 0),
                    "period": usage(figures.period_rx, figures.period_tx) if figures else usage(0, 0),
                    "address": list(iface.addresses),
                    "awg": None if iface.awg is None else dict(iface.awg),
                    "client": config.clients.of(name).shown(iface.listen_port or 0),
                }
            )
        ledger = view.ledger_health
        healthy = (
            health.last_error is None
            and health.last_success_at is not None
            and ledger.error is None
            and all(i["exists"] and i["up"] for i in interfaces)
        )
        return {
            "version": __version__,
            "started_at": self.iso(view.started_at),
            "uptime_seconds": int((datetime.now(UTC) - view.started_at).total_seconds()),
            "healthy": healthy,
            "tool": health.tool,
            "reader": {"setting": config.reader, "problem": health.reader_problem},
            "timezone": config.zone_name,
            "tracking_since": self.iso(books.tracking_since),
            "period": {"start": self.iso(books.period.start), "end": self.iso(books.period.end)},
            "sampler": {
                "schedule": config.sampling_schedule,
                "last_sample_at": self.iso(health.last_sample_at),
                "last_success_at": self.iso(health.last_success_at),
                "next_sample_at": self.iso(view.next_sample_at()),
                "consecutive_failures": health.consecutive_failures,
                "last_error": health.last_error,
                "last_duration_seconds": None if health.last_duration is None else round(health.last_duration, 6),
            },
            "ledger": {"checked_at": self.iso(ledger.checked_at), "error": ledger.error},
            "interfaces": interfaces,
        }

    async def traffic_changes(self, params: Params, caller: Caller) -> dict[str, Any]:
        raw_cursor = params.raw.get("cursor")
        if raw_cursor is not None and not isinstance(raw_cursor, str):
            raise invalid("cursor must be a string or null")
        try:
            cursor = None if raw_cursor is None else change_feed.Cursor.parse(raw_cursor)
        except change_feed.BadCursor as exc:
            raise invalid(str(exc)) from None
        after = self._after(params.raw.get("after"))
        limit = params.integer("limit", DEFAULT_CHANGES_LIMIT, 1, MAX_LIST_LIMIT)
        view = self.view
        books, instance = self.books, view.instance
        answer = change_feed.scope(cursor, instance, books)
        position = change_feed.position(instance, books).encode()
        cached = self._changed
        if cached[:2] == (answer.since, books.changes):
            found = cached[2]
        else:
            found = change_feed.changed(books, answer.since)
            self._changed = (answer.since, books.changes, found)
        first_start = answer.first_start
        if first_start is not None:
            limit = min(limit, CLOSED_CHANGES_LIMIT)
        chosen, more = change_feed.page(found, after, limit)
        if first_start is None:
            page = change_feed.page_rows(chosen, books)
        else:
            ids = [book.id for book in chosen if book.id is not None]

            def shape(periods: BucketRows, days: BucketRows) -> change_feed.Page:
                return change_feed.page_rows(chosen, books, change_feed.closed_rows(chosen, periods, days))

            page = await view.bookkeeper.closed_buckets(ids, first_start, answer.first_day, shape)
        last = chosen[-1] if chosen and more else None
        return {
            "cursor": position,
            "full": answer.since == 0,
            "more": more,
            "next": None if last is None else last.serial,
            "online_window": view.config.online_window,
            "period": page.period,
            "day": page.day,
            "columns": CHANGE_COLUMNS,
            "rows": page.rows,
            "periods": page.periods,
            "days": page.days,
        }

    @staticmethod
    def _after(raw: Any) -> int | None:
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < 2**63:
            raise invalid("after must be null or the `next` of the page before")
        return raw

    def traffic_get(self, params: Params, caller: Caller) -> dict[str, Any]:
        public_key, interface = params.key(), params.interface()
        if "fresh" in params.raw:
            params.boolean("fresh", False)  # checked; the sample it asks for was taken first (dispatch)
        return self.peer_traffic(self.find(public_key, interface), time.time())

    async def traffic_list(self, params: Params, caller: Caller) -> Streamed:
        interface = params.interface()
        sort = params.choice("sort", "total", LIST_SORTS)
        limit = params.integer("limit", 1000, 1, MAX_LIST_LIMIT)
        offset = params.integer("offset", 0, 0, 2**31)
        present_only = params.boolean("present_only", False)
        listing = self._listing(interface=interface, sort=sort, limit=limit, offset=offset, present_only=present_only)
        return Streamed("peers", listing)

    async def _listing(
        self, *, interface: str | None, sort: str, limit: int, offset: int, present_only: bool
    ) -> AsyncGenerator[Any, None]:
        """traffic.list, produced when the connection is ready to write it (see Streamed)."""
        ordered = await self._ordered(interface, sort, present_only)
        period = self.view.books.period
        yield {"period": {"start": self.iso(period.start), "end": self.iso(period.end)}, "total": len(ordered)}
        chosen = ordered[offset : offset + limit]
        for start in range(0, len(chosen), LIST_CHUNK):
            now = time.time()
            yield [self.peer_traffic(book, now) for book in chosen[start : start + LIST_CHUNK]]

    async def _ordered(self, interface: str | None, sort: str, present_only: bool) -> list[PeerBook]:
        """The books listed in this order; kept until the books change, so that a bot paging
        through 50,000 peers, or a flood of the same request, sorts them once."""
        books = self.view.books
        version, cache = self._orders
        if version != books.version:
            cache = {}
            self._orders = (books.version, cache)
        wanted = (sort, interface, present_only)
        ordered = cache.get(wanted)
        if ordered is not None:
            return ordered
        everyone = list(books)
        order = _ORDER[sort]
        keyed: list[tuple[Any, PeerBook]] = []
        for start in range(0, len(everyone), SORT_CHUNK):
            keyed += [
                (order(books, book), book)
                for book in everyone[start : start + SORT_CHUNK]
                if (interface is None or book.interface == interface) and (book.present or not present_only)
            ]
            await asyncio.sleep(0)
        keyed.sort(key=_first)  # keys are unique: books are never compared
        ordered = [book for _, book in keyed]
        if self._orders[0] == books.version:  # unless a sample changed them meanwhile
            cache[wanted] = ordered
        return ordered

    async def traffic_history(self, params: Params, caller: Caller) -> dict[str, Any]:
        public_key, interface = params.key(), params.interface()
        granularity = params.choice("granularity", "period", ("period", "day", "hour"))
        limit = params.integer("limit", DEFAULT_HISTORY_LIMIT[granularity], 1, MAX_HISTORY_LIMIT)
        book = self.find(public_key, interface)
        if granularity == "hour" and self.view.config.hour_retention_days == 0:
            raise RpcError(
                rpc.INVALID_PARAMS,
                "hourly history is off on this server (ledger.hour_retention_days = 0)",
                {"granularity": granularity},
            )
        rows = await self.view.bookkeeper.history(book, granularity, limit) if book.id is not None else []
        books, zone = self.view.books, self.view.config.zone
        buckets: list[dict[str, Any]] = []
        if granularity == "period":
            current = books.period
            start_ts = int(current.start.timestamp())
            rx, tx = books.period_usage(book)
            if all(row.start != start_ts for row in rows):  # the open period, even before any traffic
                buckets.append(self._bucket(current.start, current.end, rx, tx))
            for row in rows:
                row_rx, row_tx = (rx, tx) if row.start == start_ts else (row.rx, row.tx)
                start, end = datetime.fromtimestamp(row.start, UTC), datetime.fromtimestamp(row.end, UTC)
                buckets.append(self._bucket(start, end, row_rx, row_tx))
        elif granularity == "day":
            # Days are contiguous: a day without traffic is a zero bucket, back to the first day
            # seen, or the oldest day kept.
            days = {row.start: row for row in rows}
            today = local_day(datetime.now(UTC), zone)
            first: date = max(
                local_day(book.first_seen, zone), today - timedelta(days=self.view.config.day_retention_days - 1)
            )
            for back in range(limit):
                day = today - timedelta(days=back)
                if day < first:
                    break
                found = days.get(day_number(day))
                bounds = day_bounds(day, zone)
                buckets.append(
                    self._bucket(bounds.start, bounds.end, found.rx if found else 0, found.tx if found else 0)
                )
        else:
            buckets = self._hours(book, {row.start: row for row in rows}, limit)
        return {
            "interface": book.interface,
            "public_key": public_key,
            "granularity": granularity,
            "buckets": buckets[:limit],
        }

    def _hours(self, book: PeerBook, rows: dict[int, Bucket], limit: int) -> list[dict[str, Any]]:
        """Local hours, newest first, contiguous like days (an hour without traffic is a zero
        bucket) back to the hour the peer was first seen in, or the oldest hour kept. Each
        hour as it happened: one a clock change repeats is there twice, one it skips not at all."""
        config = self.view.config
        zone = config.zone
        now = datetime.now(UTC)
        oldest = max(book.first_seen, now - timedelta(days=config.hour_retention_days))
        first = hour_start(oldest, zone)
        buckets: list[dict[str, Any]] = []
        start = hour_start(now, zone)
        while len(buckets) < limit and start >= first:
            found = rows.get(int(start.timestamp()))
            bounds = hour_bounds(start, zone)
            buckets.append(self._bucket(bounds.start, bounds.end, found.rx if found else 0, found.tx if found else 0))
            start = hour_start(start - timedelta(seconds=1), zone)
        return buckets

    def _bucket(self, start: datetime, end: datetime, rx: int, tx: int) -> dict[str, Any]:
        return {"start": self.iso(start), "end": self.iso(end), **usage(rx, tx)}

    def rpc_discover(self, params: Params, caller: Caller) -> dict[str, Any]:
        if self._discovered is None:
            self._discovered = openrpc.document(METHODS, __version__)
        return self._discovered

    async def traffic_sample(self, params: Params, caller: Caller) -> dict[str, Any]:
        # Root and admins order a sample now; anyone else gets fresh's rule (one tool run per
        # 5 s, joined), so a member of the socket's group cannot keep the tool running.
        sampled_at = await self.view.sample(rate_limited=not is_admin(caller, self.view.admin_gids))
        books = self.view.books
        return {
            "sampled_at": self.iso(sampled_at),
            "interfaces": sum(1 for i in books.interfaces.values() if i.read),
            "peers": books.peers_seen(),
        }

    async def traffic_reset(self, params: Params, caller: Caller) -> dict[str, Any]:
        book = self.find(params.key(), params.interface())
        at, removed = await self.view.admin.reset(book)
        return {
            "interface": book.interface,
            "public_key": book.public_key,
            "reset_at": self.iso(at),
            "removed": usage(*removed),
        }

    # ---- v2: peers and events ------------------------------------------------------------

    async def peer_add(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        added = await self.view.admin.add(
            interface,
            public_key,
            allowed_ips=params.allowed_ips(),
            preshared_key=params.optional_key("preshared_key"),
            keepalive=params.keepalive(1),
            label=params.label(),
            outside_subnets=params.boolean("outside_subnets", False),
        )
        return {**self.peer_traffic(added.book, time.time()), "persisted": added.persisted}

    async def peer_remove(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        at = await self.view.admin.remove(interface, public_key)
        return {"interface": interface, "public_key": public_key, "removed_at": self.iso(at)}

    async def peer_rekey(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        new_public_key = params.optional_key("new_public_key")
        if new_public_key is None:
            raise invalid("new_public_key is required")
        book = await self.view.admin.rekey(interface, public_key, new_public_key, params.optional_key("preshared_key"))
        return self.peer_traffic(book, time.time())

    async def peer_update(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        book = await self.view.admin.update(
            interface,
            public_key,
            label=params.label(),
            set_label="label" in params.raw,
            allowed_ips=params.allowed_ips(),
            keepalive=params.keepalive(0),
            outside_subnets=params.boolean("outside_subnets", False),
        )
        return self.peer_traffic(book, time.time())

    async def peer_limit(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        limit = RateLimit(params.kbit("down_kbit"), params.kbit("up_kbit"))
        return self.peer_traffic(await self.view.admin.limit(interface, public_key, limit), time.time())

    async def peer_block(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        return self.peer_traffic(await self.view.admin.block(interface, public_key), time.time())

    async def peer_unblock(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        return self.peer_traffic(await self.view.admin.unblock(interface, public_key), time.time())

    async def events_list(self, params: Params, caller: Caller) -> dict[str, Any]:
        since = params.integer("since", 0, 0, 2**63 - 1)
        limit = params.integer("limit", 100, 1, MAX_EVENTS_LIMIT)
        found, last_id = await self.view.events(since, limit, self._event_types(params))
        return {"events": [self.event(event) for event in found], "last_id": last_id}

    async def events_subscribe(self, params: Params, caller: Caller) -> Subscription:
        since = params.raw.get("since")
        if since is not None:
            since = params.integer("since", 0, 0, 2**63 - 1)
        types = self._event_types(params)
        # Subscribed before the newest id is read: whatever is stored meanwhile is queued too.
        subscriber = self.view.feed.subscribe(None if types is None else frozenset(types))
        try:
            _, last_id = await self.view.events(2**63 - 1, 1, None)
        except BaseException:
            self.view.feed.unsubscribe(subscriber)
            raise
        return Subscription(subscriber, since, last_id, types)

    @staticmethod
    def _event_types(params: Params) -> tuple[str, ...] | None:
        types = params.raw.get("types")
        if types is not None and (not isinstance(types, list) or any(t not in EVENT_TYPES for t in types)):
            raise invalid(f"types must be a list of event types ({', '.join(EVENT_TYPES)})")
        return None if types is None else tuple(types)

    # ---- v2: plans ---------------------------------------------------------------------------

    async def plan_set(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        try:
            plan = parse_plan(dict(params.raw), local_day(datetime.now(UTC), self.view.config.zone))
        except BadPlan as exc:
            raise invalid(str(exc)) from None
        return self.peer_traffic(await self.view.admin.set_plan(interface, public_key, plan), time.time())

    async def plan_clear(self, params: Params, caller: Caller) -> dict[str, Any]:
        interface, public_key = params.required_interface(), params.key()
        return self.peer_traffic(await self.view.admin.clear_plan(interface, public_key), time.time())

    # ---- fleet plans (docs/FLEET.md) ----------------------------------------------------------

    async def fleet_sync(self, params: Params, caller: Caller) -> dict[str, Any]:
        for name in ("users", "as_of"):
            if params.raw.get(name) is None:
                raise invalid(f"{name} is required")
        try:
            users, as_of = parse_sync(params.raw.get("users"), params.raw.get("as_of"))
        except BadFleet as exc:
            raise invalid(str(exc)) from None
        more = params.boolean("more", False)
        taken, gathered, books = await self.view.admin.fleet_sync(users, as_of, more=more)
        if more:
            return {"taken": False, "pending": gathered}
        zone = self.view.config.zone
        shares = []
        for key, share in sorted(books.fleet_shares.items()):
            book = books.peers.get(key)
            if book is None:
                continue
            shares.append(
                {
                    "user": share.user,
                    "interface": key[0],
                    "public_key": key[1],
                    "window_start": self._iso_ts(share.window_start, zone),
                    "used_bytes": share.used(lifetime(book)),
                    "blocked": list(book.settings.blocked),
                }
            )
        held = books.fleet_as_of
        return {
            "taken": taken,
            "as_of": None if held is None else datetime.fromtimestamp(held, UTC).isoformat(),
            "users": len(books.fleet_users),
            "usage": shares,
        }

    def event(self, event: Event) -> dict[str, Any]:
        return {
            "id": event.id,
            "at": self._iso_ts(event.at, self.view.config.zone),
            "type": event.type,
            "interface": event.interface,
            "public_key": event.public_key,
            "data": event.data,
        }


_CHANGE_CODES: dict[type[ChangeError], int] = {
    Conflict: rpc.CONFLICT,
    ToolRefused: rpc.TOOL_FAILED,
    BadChange: rpc.INVALID_PARAMS,
    NotThere: rpc.UNKNOWN_PEER,
}


def _first(pair: tuple[Any, PeerBook]) -> Any:
    return pair[0]


def _total(books: Books, book: PeerBook) -> tuple[int, str, str]:
    rx, tx = books.period_usage(book)
    return (-(rx + tx), book.public_key, book.interface)


def _rx(books: Books, book: PeerBook) -> tuple[int, str, str]:
    return (-books.period_usage(book)[0], book.public_key, book.interface)


def _tx(books: Books, book: PeerBook) -> tuple[int, str, str]:
    return (-books.period_usage(book)[1], book.public_key, book.interface)


def _handshake(books: Books, book: PeerBook) -> tuple[int, str, str]:
    return (-book.latest_handshake, book.public_key, book.interface)


def _key(books: Books, book: PeerBook) -> tuple[str, str]:
    return (book.public_key, book.interface)


def _rate(books: Books, book: PeerBook) -> tuple[int, str, str]:
    return (-sum(books.rate(book)), book.public_key, book.interface)


_ORDER: dict[str, Callable[[Books, PeerBook], Any]] = {
    "total": _total,
    "rx": _rx,
    "tx": _tx,
    "handshake": _handshake,
    "public_key": _key,
    "rate": _rate,
}
assert tuple(_ORDER) == LIST_SORTS

_KEY = ("public_key",)
_PEER = ("interface", "public_key")  # changes name the interface: a key may be on several

METHODS: dict[str, Method] = {
    "server.status": Method(
        Api.server_status, (), inline=True, summary="The daemon, the sampler, the ledger, the period, each interface"
    ),
    "traffic.get": Method(
        Api.traffic_get,
        ("public_key", "interface", "fresh"),
        inline=True,
        required=_KEY,
        summary="One peer: its session, period, day and lifetime usage, its plan, whether it is online",
    ),
    "traffic.list": Method(
        Api.traffic_list,
        ("interface", "sort", "limit", "offset", "present_only"),
        summary="Every peer, sorted and paged",
    ),
    "traffic.changes": Method(
        Api.traffic_changes,
        ("cursor", "after", "limit"),
        summary="What changed since a cursor, as rows (for awgd-mirror)",
    ),
    "traffic.history": Method(
        Api.traffic_history,
        ("public_key", "interface", "granularity", "limit"),
        required=_KEY,
        summary="A peer's usage per period, day or local hour, newest first",
    ),
    "traffic.sample": Method(Api.traffic_sample, (), summary="Take a sample now (joining one already running)"),
    "traffic.reset": Method(
        Api.traffic_reset,
        ("public_key", "interface"),
        admin=True,
        required=_KEY,
        summary="Zero a peer's usage in the current period",
    ),
    "peer.add": Method(
        Api.peer_add,
        ("interface", "public_key", "allowed_ips", "preshared_key", "persistent_keepalive", "label", "outside_subnets"),
        admin=True,
        required=_PEER,
        summary="Add a peer to the live interface and its config file",
    ),
    "peer.remove": Method(
        Api.peer_remove,
        ("public_key", "interface"),
        admin=True,
        required=_PEER,
        summary="Remove a peer; its history stays",
    ),
    "peer.rekey": Method(
        Api.peer_rekey,
        ("interface", "public_key", "new_public_key", "preshared_key"),
        admin=True,
        required=(*_PEER, "new_public_key"),
        summary="Give a peer new keys; everything else about it stays",
    ),
    "peer.update": Method(
        Api.peer_update,
        ("public_key", "interface", "label", "allowed_ips", "persistent_keepalive", "outside_subnets"),
        admin=True,
        required=_PEER,
        summary="Change a peer's label, allowed IPs or keepalive",
    ),
    "peer.limit": Method(
        Api.peer_limit,
        ("public_key", "interface", "down_kbit", "up_kbit"),
        admin=True,
        required=_PEER,
        summary="Limit a peer's speed each way, kbit/s (null: no limit), applied with tc",
    ),
    "peer.block": Method(
        Api.peer_block, ("public_key", "interface"), admin=True, required=_PEER, summary="Cut a peer off (reason admin)"
    ),
    "peer.unblock": Method(
        Api.peer_unblock,
        ("public_key", "interface"),
        admin=True,
        required=_PEER,
        summary="Lift the admin's block; the peer passes again when no reason is left",
    ),
    "events.list": Method(
        Api.events_list, ("since", "limit", "types"), summary="Stored events after an id, oldest first"
    ),
    "events.subscribe": Method(
        Api.events_subscribe,
        ("since", "types"),
        summary="Receive each new event on this connection as a notification",
    ),
    "plan.set": Method(
        Api.plan_set,
        (
            "public_key",
            "interface",
            "limit_bytes",
            "reset",
            "anchor",
            "expires_at",
            "warn_at",
            "over_quota",
            "throttle_kbit",
        ),
        admin=True,
        required=_PEER,
        summary="Replace a peer's plan (quota, window, expiry, block or throttle); it takes effect at once",
    ),
    "plan.clear": Method(
        Api.plan_clear,
        ("public_key", "interface"),
        admin=True,
        required=_PEER,
        summary="Remove a peer's plan, and the blocks it held",
    ),
    "fleet.sync": Method(
        Api.fleet_sync,
        ("users", "as_of", "more"),
        fleet=True,
        required=("users", "as_of"),
        summary="The central database's fleet plans for this node's users (awgd-mirror); returns its shares",
    ),
    "rpc.discover": Method(
        Api.rpc_discover, (), inline=True, summary="This API as an OpenRPC document, made from this table"
    ),
}
