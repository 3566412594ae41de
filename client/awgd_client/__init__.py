"""awgd_client: talk to awgd over its Unix socket (standard library only; orjson if present).

from awgd_client import Client, format_bytes
with Client() as awgd:
    peer = awgd.traffic("PUBLIC_KEY=", fresh=True)
    print(format_bytes(peer.period.tx_bytes), "downloaded this period")
"""

from awgd_client.async_client import AsyncClient
from awgd_client.errors import (
    AmbiguousPeer,
    AwgdError,
    AwgdTimeout,
    Conflict,
    DaemonUnavailable,
    InvalidParams,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    SamplingFailed,
    SocketPermissionDenied,
    ToolFailed,
    UnknownInterface,
    UnknownPeer,
)
from awgd_client.formatting import format_ago, format_bytes, format_duration
from awgd_client.models import (
    AddedPeer,
    Event,
    EventList,
    History,
    HistoryBucket,
    InterfaceStatus,
    LedgerStatus,
    LifetimeUsage,
    PeerTraffic,
    Period,
    PeriodUsage,
    Plan,
    Rate,
    RateLimit,
    RemovedPeer,
    ResetResult,
    SampleResult,
    SamplerStatus,
    ServerStatus,
    TrafficList,
    Usage,
)
from awgd_client.sync_client import Client

__version__ = "0.1.0"

__all__ = [
    "AddedPeer",
    "AmbiguousPeer",
    "AsyncClient",
    "AwgdError",
    "AwgdTimeout",
    "Client",
    "Conflict",
    "DaemonUnavailable",
    "Event",
    "EventList",
    "History",
    "HistoryBucket",
    "InterfaceStatus",
    "InvalidParams",
    "LedgerStatus",
    "LifetimeUsage",
    "PeerTraffic",
    "Period",
    "PeriodUsage",
    "PermissionDenied",
    "Plan",
    "ProtocolError",
    "Rate",
    "RateLimit",
    "RemoteError",
    "RemovedPeer",
    "ResetResult",
    "SampleResult",
    "SamplerStatus",
    "SamplingFailed",
    "ServerStatus",
    "SocketPermissionDenied",
    "ToolFailed",
    "TrafficList",
    "UnknownInterface",
    "UnknownPeer",
    "Usage",
    "format_ago",
    "format_bytes",
    "format_duration",
]
