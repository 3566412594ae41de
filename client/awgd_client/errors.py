"""Exceptions: every failure a caller can meet, named, with AwgdError as the base."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from awgd_client import protocol as rpc


class AwgdError(Exception):
    """Base of everything this library raises."""


class DaemonUnavailable(AwgdError):
    """The socket is missing or refuses, or the connection was lost and one reconnect failed."""


class ProtocolError(AwgdError):
    """What came back is not what the API defines: not JSON-RPC 2.0, or a result with fields
    missing or of the wrong type. Whatever answers on the socket is not an awgd this library
    understands (awgctl exits 3, as when awgd is unreachable)."""


class AwgdTimeout(AwgdError, TimeoutError):
    """No answer within the client's timeout (a late answer is dropped, never misdelivered)."""


class RemoteError(AwgdError):
    """The daemon answered with an error; `code` and `data` are those of JSON-RPC."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class PermissionDenied(RemoteError):
    """An admin method called by a non-admin (-32002), or no permission on the socket itself."""


class SocketPermissionDenied(PermissionDenied):
    """The kernel refused the connection (EACCES): the user is not in the socket's group."""


class UnknownPeer(RemoteError):
    """-32001: no peer with that key (on that interface)."""


class AmbiguousPeer(RemoteError):
    """-32004: the key is on several interfaces; `interfaces` lists them."""

    @property
    def interfaces(self) -> list[str]:
        return list(self.data.get("interfaces", [])) if isinstance(self.data, dict) else []


class InvalidParams(RemoteError):
    """-32602: the message names the param."""


class UnknownInterface(InvalidParams):
    """-32602 for an interface the server does not have; `interfaces` lists those it has
    (the usual mistake: wg0 on an Amnezia server, whose interface is awg0)."""

    @property
    def interfaces(self) -> list[str]:
        return list(self.data.get("interfaces", [])) if isinstance(self.data, dict) else []


class SamplingFailed(RemoteError):
    """-32003: the tool is missing, failed, timed out or printed garbage; `reason` says which."""

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", self.message)) if isinstance(self.data, dict) else self.message


class Conflict(RemoteError):
    """-32005: the peer already exists on the interface, an allowed IP belongs to another
    peer (`data` has `allowed_ip` and `owner`), or the interface's subnet is full."""


class ToolFailed(RemoteError):
    """-32006: the tool (or the config file's write) refused a change; `reason` says why."""

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", self.message)) if isinstance(self.data, dict) else self.message


_BY_CODE: dict[int, type[RemoteError]] = {
    rpc.PERMISSION_DENIED: PermissionDenied,
    rpc.UNKNOWN_PEER: UnknownPeer,
    rpc.AMBIGUOUS_PEER: AmbiguousPeer,
    rpc.INVALID_PARAMS: InvalidParams,
    rpc.SAMPLING_FAILED: SamplingFailed,
    rpc.CONFLICT: Conflict,
    rpc.TOOL_FAILED: ToolFailed,
}


def from_error(error: Mapping[str, Any]) -> RemoteError:
    code = int(error["code"])
    data = error.get("data")
    kind = _BY_CODE.get(code, RemoteError)
    if kind is InvalidParams and isinstance(data, dict) and "interfaces" in data and "interface" in data:
        kind = UnknownInterface
    return kind(code, str(error.get("message", "")), data)
