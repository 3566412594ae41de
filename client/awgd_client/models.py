"""Typed results: frozen dataclasses whose field names are those of the API (docs/API.md).

Times are tz-aware datetimes (in the daemon's configured zone), byte counts ints,
"unknown" is None. `from_json` takes the decoded `result` of the matching method and checks
every field it reads: anything missing or of the wrong type raises ProtocolError (an
AwgdError), never a bare KeyError or TypeError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar

from awgd_client.errors import ProtocolError

T = TypeVar("T")


class Fields:
    """Typed, checked access to one JSON object of an answer; `where` names it in errors."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ProtocolError(f"malformed answer from awgd: {where} is not an object")
        self._data = data
        self._where = where

    def _fault(self, name: str, expected: str) -> ProtocolError:
        return ProtocolError(f"malformed answer from awgd: {self._where}.{name} is not {expected}")

    def _get(self, name: str, optional: bool) -> Any:
        if name not in self._data:
            if optional:
                return None
            raise ProtocolError(f"malformed answer from awgd: {self._where}.{name} is missing")
        return self._data[name]

    def integer(self, name: str) -> int:
        value = self._get(name, False)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fault(name, "an integer")
        return value

    def optional_integer(self, name: str) -> int | None:
        value = self._get(name, True)
        return None if value is None else self.integer(name)

    def number(self, name: str) -> float | None:
        value = self._get(name, True)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fault(name, "a number")
        return float(value)

    def boolean(self, name: str) -> bool:
        value = self._get(name, False)
        if not isinstance(value, bool):
            raise self._fault(name, "true or false")
        return value

    def optional_boolean(self, name: str) -> bool:
        """False when absent (a field an older awgd does not send)."""
        return False if self._get(name, True) is None else self.boolean(name)

    def optional_count(self, name: str) -> int:
        """0 when absent (a field an older awgd does not send)."""
        return 0 if self._get(name, True) is None else self.integer(name)

    def string(self, name: str) -> str:
        value = self._get(name, False)
        if not isinstance(value, str):
            raise self._fault(name, "a string")
        return value

    def optional_string(self, name: str) -> str | None:
        value = self._get(name, True)
        return None if value is None else self.string(name)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(name, True)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fault(name, "a list of strings")
        return tuple(value)

    def time(self, name: str) -> datetime:
        value = self.optional_time(name)
        if value is None:
            raise self._fault(name, "a time")
        return value

    def optional_time(self, name: str) -> datetime | None:
        value = self._get(name, True)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fault(name, "an ISO 8601 time")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self._fault(name, "an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise self._fault(name, "a time with its UTC offset")
        return parsed

    def raw(self, name: str) -> Any:
        return self._get(name, True)

    def object(self, name: str, parse: Callable[[Fields], T]) -> T:
        return parse(Fields(self._get(name, False), f"{self._where}.{name}"))

    def optional_object(self, name: str, parse: Callable[[Fields], T]) -> T | None:
        value = self._get(name, True)
        return None if value is None else self.object(name, parse)

    def objects(self, name: str, parse: Callable[[Fields], T]) -> tuple[T, ...]:
        value = self._get(name, False)
        if not isinstance(value, list):
            raise self._fault(name, "a list")
        return tuple(parse(Fields(item, f"{self._where}.{name}[{index}]")) for index, item in enumerate(value))


class Model:
    """A result type: `from_json(result)` checks and converts, `read(fields)` does the work."""

    __slots__ = ()

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return cls.read(Fields(data, "result"))

    @classmethod
    def read(cls, fields: Fields) -> Self:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Usage(Model):
    rx_bytes: int  # received from the peer: the user's upload
    tx_bytes: int  # sent to the peer: the user's download
    total_bytes: int

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.integer("rx_bytes"), fields.integer("tx_bytes"), fields.integer("total_bytes"))


@dataclass(frozen=True, slots=True)
class Period(Model):
    start: datetime
    end: datetime

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.time("start"), fields.time("end"))


@dataclass(frozen=True, slots=True)
class PeriodUsage(Model):
    start: datetime
    end: datetime
    rx_bytes: int
    tx_bytes: int
    total_bytes: int
    # API v3: of total_bytes, what was booked while the peer was blocked (not plan usage).
    blocked_bytes: int = 0

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            fields.time("start"),
            fields.time("end"),
            fields.integer("rx_bytes"),
            fields.integer("tx_bytes"),
            fields.integer("total_bytes"),
            fields.optional_integer("blocked_bytes") or 0,
        )


@dataclass(frozen=True, slots=True)
class LifetimeUsage(Model):
    since: datetime | None
    rx_bytes: int
    tx_bytes: int
    total_bytes: int

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            fields.optional_time("since"),
            fields.integer("rx_bytes"),
            fields.integer("tx_bytes"),
            fields.integer("total_bytes"),
        )


@dataclass(frozen=True, slots=True)
class Rate(Model):
    """Bytes per second between the daemon's last two samples."""

    rx_bytes_per_second: int
    tx_bytes_per_second: int

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.integer("rx_bytes_per_second"), fields.integer("tx_bytes_per_second"))


@dataclass(frozen=True, slots=True)
class RateLimit(Model):
    """A peer's speed limit (peer.limit), kbit/s each way; None: not limited that way."""

    down_kbit: int | None  # server to user: the user's download
    up_kbit: int | None  # user to server: the user's upload

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.optional_integer("down_kbit"), fields.optional_integer("up_kbit"))


@dataclass(frozen=True, slots=True)
class Plan(Model):
    """A peer's plan (plan.set) and where it stands in its current window."""

    limit_bytes: int | None  # None: no limit
    reset: str  # period, month, week, day, none
    anchor: str  # YYYY-MM-DD
    expires_at: datetime | None
    warn_at: tuple[float, ...]
    start: datetime  # the current window
    end: datetime | None  # None: never renewed (reset "none")
    used_bytes: int
    remaining_bytes: int | None  # None without a limit; never negative
    over_quota: str = "block"  # what a used-up quota does: "block" or "throttle" (API v3)
    throttle_kbit: int | None = None  # the speed while a throttle plan's quota is used up

    def plan_set_args(self) -> dict[str, Any]:
        """plan_set's keyword arguments that set this plan again: a top-up changes
        `limit_bytes` alone (`**plan.plan_set_args() | {"limit_bytes": more}`)."""
        return {
            "limit_bytes": self.limit_bytes,
            "reset": self.reset,
            "anchor": self.anchor,
            "expires_at": self.expires_at,
            "warn_at": list(self.warn_at),
            "over_quota": self.over_quota,
            "throttle_kbit": self.throttle_kbit,
        }

    @property
    def throttling(self) -> bool:
        """A throttle plan whose quota is used up: the peer is slowed, not cut off."""
        return self.over_quota == "throttle" and self.limit_bytes is not None and self.used_bytes >= self.limit_bytes

    @classmethod
    def read(cls, fields: Fields) -> Self:
        warn = fields.raw("warn_at")
        if not isinstance(warn, list) or any(isinstance(f, bool) or not isinstance(f, int | float) for f in warn):
            raise ProtocolError("malformed answer from awgd: plan.warn_at is not a list of numbers")
        return cls(
            fields.optional_integer("limit_bytes"),
            fields.string("reset"),
            fields.string("anchor"),
            fields.optional_time("expires_at"),
            tuple(float(f) for f in warn),
            fields.time("start"),
            fields.optional_time("end"),
            fields.integer("used_bytes"),
            fields.optional_integer("remaining_bytes"),
            fields.optional_string("over_quota") or "block",
            fields.optional_integer("throttle_kbit"),
        )


@dataclass(frozen=True, slots=True)
class PeerTraffic(Model):
    interface: str
    public_key: str
    present: bool
    online: bool
    latest_handshake: datetime | None
    endpoint: str | None
    sampled_at: datetime | None
    session: Usage
    period: PeriodUsage
    lifetime: LifetimeUsage
    # API v2; absent from older daemons.
    label: str | None = None  # the name operators know the peer by
    allowed_ips: tuple[str, ...] = ()  # its own, also while it is blocked
    blocked: tuple[str, ...] = ()  # why it is blocked ("admin", "quota", "expired"); () = not blocked
    plan: Plan | None = None
    rate: Rate | None = None  # an awgd addition; absent from older daemons
    replaced_by: str | None = None  # the key that took its place (peer.rekey)
    rate_limit: RateLimit | None = None  # its speed limit (API v3); None: not limited
    # Its device keeps starting handshakes that never make a session (API v3): "connected,
    # but no traffic", nearly always a config whose obfuscation parameters differ from the server's.
    stalled: bool = False

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            replaced_by=fields.optional_string("replaced_by"),
            rate_limit=fields.optional_object("rate_limit", RateLimit.read),
            stalled=fields.optional_boolean("stalled"),
            interface=fields.string("interface"),
            public_key=fields.string("public_key"),
            label=fields.optional_string("label"),
            allowed_ips=fields.strings("allowed_ips"),
            blocked=fields.strings("blocked"),
            present=fields.boolean("present"),
            online=fields.boolean("online"),
            latest_handshake=fields.optional_time("latest_handshake"),
            endpoint=fields.optional_string("endpoint"),
            sampled_at=fields.optional_time("sampled_at"),
            session=fields.object("session", Usage.read),
            period=fields.object("period", PeriodUsage.read),
            lifetime=fields.object("lifetime", LifetimeUsage.read),
            plan=fields.optional_object("plan", Plan.read),
            rate=fields.optional_object("rate", Rate.read),
        )


@dataclass(frozen=True, slots=True)
class DeviceDefaults(Model):
    """What the operator's `[clients]` settings tell a user's device on this interface."""

    endpoint: str | None  # host:port ([v6]:port); None: the operator set none
    dns: tuple[str, ...]
    mtu: int | None
    allowed_ips: tuple[str, ...]
    persistent_keepalive: int  # 0: off

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            endpoint=fields.optional_string("endpoint"),
            dns=fields.strings("dns"),
            mtu=fields.optional_integer("mtu"),
            allowed_ips=fields.strings("allowed_ips"),
            persistent_keepalive=fields.integer("persistent_keepalive"),
        )


@dataclass(frozen=True, slots=True)
class InterfaceStatus(Model):
    name: str
    exists: bool
    up: bool
    public_key: str | None
    listen_port: int | None
    peers: int
    peers_online: int
    period: Usage
    address: tuple[str, ...] = ()  # its own addresses (API v2)
    awg: dict[str, int | str] | None = None  # AmneziaWG's obfuscation parameters; None on WireGuard
    client: DeviceDefaults | None = None  # None from an awgd before API v3
    peers_stalled: int = 0  # peers stalled (PeerTraffic.stalled); API v3

    @classmethod
    def read(cls, fields: Fields) -> Self:
        awg = fields.raw("awg")
        if awg is not None and (
            not isinstance(awg, dict)
            or not all(isinstance(v, int | str) and not isinstance(v, bool) for v in awg.values())
        ):
            raise ProtocolError(
                "malformed answer from awgd: an interface's awg is not an object of numbers and strings"
            )
        return cls(
            address=fields.strings("address"),
            awg=None if awg is None else dict(awg),
            name=fields.string("name"),
            exists=fields.boolean("exists"),
            up=fields.boolean("up"),
            public_key=fields.optional_string("public_key"),
            listen_port=fields.optional_integer("listen_port"),
            peers=fields.integer("peers"),
            peers_online=fields.integer("peers_online"),
            period=fields.object("period", Usage.read),
            client=fields.optional_object("client", DeviceDefaults.read),
            peers_stalled=fields.optional_count("peers_stalled"),
        )


@dataclass(frozen=True, slots=True)
class SamplerStatus(Model):
    schedule: str
    last_sample_at: datetime | None
    last_success_at: datetime | None
    next_sample_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    last_duration_seconds: float | None = None  # the last good sample's, start to booked (API v2)

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            schedule=fields.string("schedule"),
            last_sample_at=fields.optional_time("last_sample_at"),
            last_success_at=fields.optional_time("last_success_at"),
            next_sample_at=fields.optional_time("next_sample_at"),
            consecutive_failures=fields.integer("consecutive_failures"),
            last_error=fields.optional_string("last_error"),
            last_duration_seconds=fields.number("last_duration_seconds"),
        )


@dataclass(frozen=True, slots=True)
class LedgerStatus(Model):
    checked_at: datetime | None  # the last check of the ledger's file
    error: str | None  # what that check found wrong; None = sound

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.optional_time("checked_at"), fields.optional_string("error"))


@dataclass(frozen=True, slots=True)
class ServerStatus(Model):
    version: str
    started_at: datetime
    uptime_seconds: int
    healthy: bool
    tool: str | None
    timezone: str
    tracking_since: datetime | None
    period: Period
    sampler: SamplerStatus
    interfaces: tuple[InterfaceStatus, ...]
    ledger: LedgerStatus | None = None  # absent from older daemons

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            version=fields.string("version"),
            started_at=fields.time("started_at"),
            uptime_seconds=fields.integer("uptime_seconds"),
            healthy=fields.boolean("healthy"),
            tool=fields.optional_string("tool"),
            timezone=fields.string("timezone"),
            tracking_since=fields.optional_time("tracking_since"),
            period=fields.object("period", Period.read),
            sampler=fields.object("sampler", SamplerStatus.read),
            interfaces=fields.objects("interfaces", InterfaceStatus.read),
            ledger=fields.optional_object("ledger", LedgerStatus.read),
        )


@dataclass(frozen=True, slots=True)
class TrafficList(Model):
    period: Period
    total: int
    peers: tuple[PeerTraffic, ...]

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            fields.object("period", Period.read), fields.integer("total"), fields.objects("peers", PeerTraffic.read)
        )


@dataclass(frozen=True, slots=True)
class HistoryBucket(PeriodUsage):
    """One bucket of traffic.history: a billing period or a local day."""


@dataclass(frozen=True, slots=True)
class History(Model):
    interface: str
    public_key: str
    granularity: str
    buckets: tuple[HistoryBucket, ...]  # newest first, the open bucket included

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            fields.string("interface"),
            fields.string("public_key"),
            fields.string("granularity"),
            fields.objects("buckets", HistoryBucket.read),
        )


@dataclass(frozen=True, slots=True)
class SampleResult(Model):
    sampled_at: datetime
    interfaces: int
    peers: int

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.time("sampled_at"), fields.integer("interfaces"), fields.integer("peers"))


@dataclass(frozen=True, slots=True)
class ResetResult(Model):
    interface: str
    public_key: str
    reset_at: datetime
    removed: Usage

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(
            fields.string("interface"),
            fields.string("public_key"),
            fields.time("reset_at"),
            fields.object("removed", Usage.read),
        )


@dataclass(frozen=True, slots=True)
class AddedPeer(PeerTraffic):
    """peer.add's answer: the new peer, and whether its interface's config file has it."""

    persisted: bool = False

    @classmethod
    def read(cls, fields: Fields) -> Self:
        peer = PeerTraffic.read(fields)
        return cls(
            **{name: getattr(peer, name) for name in PeerTraffic.__dataclass_fields__},
            persisted=fields.boolean("persisted"),
        )


@dataclass(frozen=True, slots=True)
class RemovedPeer(Model):
    interface: str
    public_key: str
    removed_at: datetime

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.string("interface"), fields.string("public_key"), fields.time("removed_at"))


@dataclass(frozen=True, slots=True)
class Event(Model):
    id: int
    at: datetime
    type: str
    interface: str | None
    public_key: str | None
    data: dict[str, Any]

    @classmethod
    def read(cls, fields: Fields) -> Self:
        data = fields.raw("data")
        if not isinstance(data, dict):
            raise ProtocolError("malformed answer from awgd: an event's data is not an object")
        return cls(
            fields.integer("id"),
            fields.time("at"),
            fields.string("type"),
            fields.optional_string("interface"),
            fields.optional_string("public_key"),
            dict(data),
        )


@dataclass(frozen=True, slots=True)
class EventList(Model):
    events: tuple[Event, ...]  # oldest first
    last_id: int  # the newest id the daemon has: resume from here

    @classmethod
    def read(cls, fields: Fields) -> Self:
        return cls(fields.objects("events", Event.read), fields.integer("last_id"))
