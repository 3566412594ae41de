"""Typed results: frozen dataclasses whose field names are those of API.md.

Times are tz-aware datetimes (in the daemon's configured zone), byte counts ints,
"unknown" is None. `from_json` takes the decoded `result` of the matching method.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required_time(value: Any) -> datetime:
    return datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Usage:
    rx_bytes: int  # received from the peer: the user's upload
    tx_bytes: int  # sent to the peer: the user's download
    total_bytes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(data["rx_bytes"], data["tx_bytes"], data["total_bytes"])


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Period:
        return cls(_required_time(data["start"]), _required_time(data["end"]))


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    start: datetime
    end: datetime
    rx_bytes: int
    tx_bytes: int
    total_bytes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            _required_time(data["start"]),
            _required_time(data["end"]),
            data["rx_bytes"],
            data["tx_bytes"],
            data["total_bytes"],
        )


@dataclass(frozen=True, slots=True)
class LifetimeUsage:
    since: datetime | None
    rx_bytes: int
    tx_bytes: int
    total_bytes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LifetimeUsage:
        return cls(_time(data.get("since")), data["rx_bytes"], data["tx_bytes"], data["total_bytes"])


@dataclass(frozen=True, slots=True)
class PeerTraffic:
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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerTraffic:
        return cls(
            interface=data["interface"],
            public_key=data["public_key"],
            present=data["present"],
            online=data["online"],
            latest_handshake=_time(data.get("latest_handshake")),
            endpoint=data.get("endpoint"),
            sampled_at=_time(data.get("sampled_at")),
            session=Usage.from_json(data["session"]),
            period=PeriodUsage.from_json(data["period"]),
            lifetime=LifetimeUsage.from_json(data["lifetime"]),
        )


@dataclass(frozen=True, slots=True)
class InterfaceStatus:
    name: str
    exists: bool
    up: bool
    public_key: str | None
    listen_port: int | None
    peers: int
    peers_online: int
    period: Usage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InterfaceStatus:
        return cls(
            name=data["name"],
            exists=data["exists"],
            up=data["up"],
            public_key=data.get("public_key"),
            listen_port=data.get("listen_port"),
            peers=data["peers"],
            peers_online=data["peers_online"],
            period=Usage.from_json(data["period"]),
        )


@dataclass(frozen=True, slots=True)
class SamplerStatus:
    schedule: str
    last_sample_at: datetime | None
    last_success_at: datetime | None
    next_sample_at: datetime | None
    consecutive_failures: int
    last_error: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SamplerStatus:
        return cls(
            schedule=data["schedule"],
            last_sample_at=_time(data.get("last_sample_at")),
            last_success_at=_time(data.get("last_success_at")),
            next_sample_at=_time(data.get("next_sample_at")),
            consecutive_failures=data["consecutive_failures"],
            last_error=data.get("last_error"),
        )


@dataclass(frozen=True, slots=True)
class ServerStatus:
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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerStatus:
        return cls(
            version=data["version"],
            started_at=_required_time(data["started_at"]),
            uptime_seconds=data["uptime_seconds"],
            healthy=data["healthy"],
            tool=data.get("tool"),
            timezone=data["timezone"],
            tracking_since=_time(data.get("tracking_since")),
            period=Period.from_json(data["period"]),
            sampler=SamplerStatus.from_json(data["sampler"]),
            interfaces=tuple(InterfaceStatus.from_json(i) for i in data["interfaces"]),
        )


@dataclass(frozen=True, slots=True)
class TrafficList:
    period: Period
    total: int
    peers: tuple[PeerTraffic, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrafficList:
        return cls(
            Period.from_json(data["period"]), data["total"], tuple(PeerTraffic.from_json(p) for p in data["peers"])
        )


@dataclass(frozen=True, slots=True)
class HistoryBucket(PeriodUsage):
    """One bucket of traffic.history: a billing period or a local day."""


@dataclass(frozen=True, slots=True)
class History:
    interface: str
    public_key: str
    granularity: str
    buckets: tuple[HistoryBucket, ...]  # newest first, the open bucket included

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        return cls(
            data["interface"],
            data["public_key"],
            data["granularity"],
            tuple(HistoryBucket.from_json(b) for b in data["buckets"]),
        )


@dataclass(frozen=True, slots=True)
class SampleResult:
    sampled_at: datetime
    interfaces: int
    peers: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SampleResult:
        return cls(_required_time(data["sampled_at"]), data["interfaces"], data["peers"])


@dataclass(frozen=True, slots=True)
class ResetResult:
    interface: str
    public_key: str
    reset_at: datetime
    removed: Usage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResetResult:
        return cls(
            data["interface"], data["public_key"], _required_time(data["reset_at"]), Usage.from_json(data["removed"])
        )
