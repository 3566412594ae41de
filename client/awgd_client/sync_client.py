"""The blocking client: one connection, shared safely between threads."""

from __future__ import annotations

import errno
import grp
import itertools
import os
import socket
import threading
import time
from datetime import date, datetime
from typing import Any

from awgd_client import methods
from awgd_client import protocol as rpc
from awgd_client.errors import AwgdTimeout, DaemonUnavailable, ProtocolError, SocketPermissionDenied, from_error
from awgd_client.models import (
    AddedPeer,
    EventList,
    History,
    PeerTraffic,
    RemovedPeer,
    ResetResult,
    SampleResult,
    ServerStatus,
    TrafficList,
)

# Answers can be far larger than requests: traffic.list of 10,000 peers is about 7 MB.
MAX_ANSWER_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 256 * 1024


class _ConnectionLost(Exception):
    pass


def connect_error(path: str, exc: OSError) -> Exception:
    """The exception for a failed connect, with what to do about it."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        group = socket_group(path)
        return SocketPermissionDenied(
            -32002, f"no permission to use {path}: add your user to group {group}", {"socket": path, "group": group}
        )
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
        return DaemonUnavailable(f"awgd is not answering on {path}: is awgd running?")
    return DaemonUnavailable(f"cannot connect to {path}: {exc.strerror}")


def socket_group(path: str) -> str:
    """The group whose members may connect: the socket file's own (the daemon's
    `rpc.group`), else its directory's when the refusal came there (awgd's runtime directory
    is 0750 with the same group), by name, or by number when the group has none."""
    for candidate in (path, os.path.dirname(path) or "."):
        try:
            gid = os.stat(candidate).st_gid
        except OSError:
            continue
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)
    return "the socket's group (rpc.group in awgd's config)"


class Client:
    """`with Client() as awgd: awgd.traffic(key)` — or keep one for the life of the program."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = methods.DEFAULT_TIMEOUT) -> None:
        self.socket_path = methods.socket_path(socket_path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = rpc.LineBuffer(MAX_ANSWER_BYTES)
        self._lines: list[bytes] = []
        self._ids = itertools.count(1)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ---- one method per RPC method -------------------------------------------------------

    def discover(self) -> dict[str, Any]:
        """rpc.discover: the daemon's API as an OpenRPC document (its methods and params)."""
        found = self.call("rpc.discover")
        if not isinstance(found, dict) or not isinstance(found.get("methods"), list):
            raise ProtocolError("rpc.discover did not answer an OpenRPC document")
        return found

    def server_status(self) -> ServerStatus:
        return ServerStatus.from_json(self.call("server.status"))

    def traffic(self, public_key: str, interface: str | None = None, fresh: bool = False) -> PeerTraffic:
        return PeerTraffic.from_json(
            self.call("traffic.get", **methods.params(public_key=public_key, interface=interface, fresh=fresh or None))
        )

    def traffic_list(
        self,
        *,
        interface: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        present_only: bool | None = None,
    ) -> TrafficList:
        given = methods.params(interface=interface, sort=sort, limit=limit, offset=offset, present_only=present_only)
        return TrafficList.from_json(self.call("traffic.list", **given))

    def history(
        self, public_key: str, *, interface: str | None = None, granularity: str | None = None, limit: int | None = None
    ) -> History:
        given = methods.params(public_key=public_key, interface=interface, granularity=granularity, limit=limit)
        return History.from_json(self.call("traffic.history", **given))

    def sample(self) -> SampleResult:
        return SampleResult.from_json(self.call("traffic.sample"))

    def reset(self, public_key: str, interface: str | None = None) -> ResetResult:
        return ResetResult.from_json(
            self.call("traffic.reset", **methods.params(public_key=public_key, interface=interface))
        )

    def add_peer(
        self,
        interface: str,
        public_key: str,
        *,
        allowed_ips: list[str] | None = None,
        preshared_key: str | None = None,
        persistent_keepalive: int | None = None,
        label: str | None = None,
        outside_subnets: bool = False,
    ) -> AddedPeer:
        """peer.add; without allowed_ips the daemon picks the next free address. Raises
        Conflict (-32005), ToolFailed (-32006), or InvalidParams for allowed IPs outside the
        interface's subnets unless `outside_subnets` (the peer routes them: a site)."""
        given = methods.add_params(
            interface,
            public_key,
            allowed_ips=allowed_ips,
            preshared_key=preshared_key,
            persistent_keepalive=persistent_keepalive,
            label=label,
            outside_subnets=outside_subnets,
        )
        return AddedPeer.from_json(self.change("peer.add", given))

    def remove_peer(self, interface: str, public_key: str) -> RemovedPeer:
        return RemovedPeer.from_json(self.change("peer.remove", {"interface": interface, "public_key": public_key}))

    def update_peer(
        self,
        interface: str,
        public_key: str,
        *,
        label: str | methods.Unset | None = methods.UNSET,
        allowed_ips: list[str] | None = None,
        persistent_keepalive: int | None = None,
        outside_subnets: bool = False,
    ) -> PeerTraffic:
        """peer.update: only what is given changes; label=None removes the label."""
        given = methods.update_params(
            public_key, interface, label, allowed_ips, persistent_keepalive, outside_subnets=outside_subnets
        )
        return PeerTraffic.from_json(self.change("peer.update", given))

    def rekey_peer(
        self, interface: str, public_key: str, new_public_key: str, *, preshared_key: str | None = None
    ) -> PeerTraffic:
        """peer.rekey: the peer's keys replaced, everything else kept; answers the new key's
        figures. The old key's history answers `replaced_by`. Raises Conflict when the new
        key is already a peer. For a user's new device config, see awgd_client.new_device."""
        given = methods.rekey_params(interface, public_key, new_public_key, preshared_key)
        return PeerTraffic.from_json(self.change("peer.rekey", given))

    def limit_peer(
        self, interface: str, public_key: str, *, down_kbit: int | None = None, up_kbit: int | None = None
    ) -> PeerTraffic:
        """peer.limit: the peer's speed limit each way in kbit/s (None: no limit that way;
        both None lifts it). Applied with tc at once, and again whenever it goes missing."""
        given = methods.limit_params(interface, public_key, down_kbit, up_kbit)
        return PeerTraffic.from_json(self.change("peer.limit", given))

    def block_peer(self, interface: str, public_key: str) -> PeerTraffic:
        return PeerTraffic.from_json(self.change("peer.block", {"interface": interface, "public_key": public_key}))

    def unblock_peer(self, interface: str, public_key: str) -> PeerTraffic:
        return PeerTraffic.from_json(self.change("peer.unblock", {"interface": interface, "public_key": public_key}))

    def plan_set(
        self,
        interface: str,
        public_key: str,
        *,
        limit_bytes: int | None = None,
        reset: str | None = None,
        anchor: date | str | None = None,
        expires_at: datetime | str | None = None,
        warn_at: list[float] | None = None,
        over_quota: str | None = None,
        throttle_kbit: int | None = None,
    ) -> PeerTraffic:
        """plan.set: replaces the peer's whole plan; it takes effect at once. `over_quota`
        "throttle" slows the peer to `throttle_kbit` both ways when its quota is used up,
        instead of cutting it off ("block", the default)."""
        given = methods.plan_params(
            interface,
            public_key,
            limit_bytes=limit_bytes,
            reset=reset,
            anchor=anchor,
            expires_at=expires_at,
            warn_at=warn_at,
            over_quota=over_quota,
            throttle_kbit=throttle_kbit,
        )
        return PeerTraffic.from_json(self.change("plan.set", given))

    def plan_clear(self, interface: str, public_key: str) -> PeerTraffic:
        given = {"interface": interface, "public_key": public_key}
        return PeerTraffic.from_json(self.change("plan.clear", given))

    def events(
        self, since: int | None = None, *, limit: int | None = None, types: list[str] | None = None
    ) -> EventList:
        return EventList.from_json(self.call("events.list", **methods.params(since=since, limit=limit, types=types)))

    # ---- raw access ------------------------------------------------------------------------

    def call(self, method: str, **params: Any) -> Any:
        """Call any method; returns the decoded `result` or raises an AwgdError."""
        return self._call(method, params, self.timeout)

    def change(self, method: str, params: dict[str, Any]) -> Any:
        """Call a method that changes the server's peers: it may take longer than a read."""
        return self._call(method, params, max(self.timeout, methods.CHANGE_TIMEOUT))

    def _call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        with self._lock:
            request_id = next(self._ids)
            line = rpc.encode(rpc.request_message(request_id, method, params))
            for attempt in (1, 2):
                sock = self._connected()
                try:
                    sock.sendall(line)
                    return self._receive(sock, request_id, timeout)
                except AwgdTimeout:
                    self._drop()  # its late answer must not be read as the next call's
                    raise
                except rpc.ProtocolError:
                    self._drop()
                    raise ProtocolError("awgd sent an answer that is not JSON-RPC 2.0") from None
                except (_ConnectionLost, OSError):
                    self._drop()
                    if attempt == 1 and method in methods.IDEMPOTENT:
                        continue
                    raise DaemonUnavailable("the connection to awgd was lost") from None
            raise AssertionError("unreachable")  # pragma: no cover

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                sock.close()
                raise connect_error(self.socket_path, exc) from None
            self._sock = sock
            self._buffer = rpc.LineBuffer(MAX_ANSWER_BYTES)
            self._lines = []
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _receive(self, sock: socket.socket, request_id: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            while self._lines:
                response = rpc.parse_response(rpc.decode(self._lines.pop(0)))
                # Answers to earlier calls that timed out carry their own ids and are dropped.
                # An error without an id is the daemon's answer to a line it could not read,
                # and only this call's line is unanswered.
                if response.id == request_id or (response.id is None and response.error is not None):
                    if response.error is not None:
                        raise from_error(response.error)
                    return response.result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AwgdTimeout(f"no answer from awgd within {timeout:g} s")
            sock.settimeout(remaining)
            try:
                data = sock.recv(_READ_CHUNK)
            except TimeoutError:
                raise AwgdTimeout(f"no answer from awgd within {timeout:g} s") from None
            if not data:
                raise _ConnectionLost
            self._lines.extend(self._buffer.feed(data))
