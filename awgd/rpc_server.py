"""The JSON-RPC server on the Unix socket: connections, limits, credentials, framing.

Framing and encoding are the shared sans-IO `awgd_client.protocol`; the methods are in
`awgd.api`. This module only moves bytes and enforces API.md's limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import socket
import stat
import struct
import time
from typing import Any

from awgd.api import Caller, Daemon, RpcError, answered_at_once, dispatch
from awgd_client import protocol as rpc

log = logging.getLogger("awgd.rpc")

# API.md "Limits".
MAX_CONNECTIONS = 256
IDLE_TIMEOUT_SECONDS = 600.0
# For tests only: a shorter idle timeout, so that closing idle connections can be seen.
IDLE_TIMEOUT_ENV = "AWGD_TEST_IDLE_TIMEOUT"
# Requests of one connection being worked on at once. A client that pipelines more waits:
# we stop reading its socket, so a flood costs bounded memory, never an unbounded queue.
MAX_IN_FLIGHT_PER_CONNECTION = 32
# On shutdown, requests already being answered get this long to finish.
SHUTDOWN_GRACE_SECONDS = 5.0
# A client that stops reading its answers is dropped after this long, freeing its slots.
WRITE_TIMEOUT_SECONDS = 60.0
SOCKET_MODE = 0o660
_READ_CHUNK = 64 * 1024
_PEERCRED = struct.Struct("3i")


class SocketInUse(Exception):
    """Another awgd answers on the socket, or the path is not a socket."""


class RpcServer:
    def __init__(self, daemon: Daemon, path: str, group: str) -> None:
        self._daemon = daemon
        self._path = path
        self._group = group
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        sock = bind_socket(self._path, self._group)
        self._server = await asyncio.start_unix_server(self._accept, sock=sock)

    async def close(self) -> None:
        """Stop accepting, let running requests finish (bounded), then drop every connection."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        if self._connections:
            _, pending = await asyncio.wait(self._connections, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            with contextlib.suppress(ConnectionError):
                writer.write(rpc.encode(rpc.error_response(None, rpc.SERVER_BUSY, "too many connections")))
                await writer.drain()
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await Connection(self._daemon, reader, writer).serve()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


class Connection:
    def __init__(self, daemon: Daemon, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._daemon = daemon
        self._reader = reader
        self._writer = writer
        self._caller = peer_credentials(writer.get_extra_info("socket"))
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        self._idle_timeout = float(os.environ.get(IDLE_TIMEOUT_ENV) or IDLE_TIMEOUT_SECONDS)
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        buffer = rpc.LineBuffer()
        last_request = time.monotonic()
        try:
            while True:
                idle_left = self._idle_timeout - (time.monotonic() - last_request)
                try:
                    async with asyncio.timeout(max(idle_left, 0)):
                        data = await self._reader.read(_READ_CHUNK)
                except TimeoutError:
                    return  # idle: clients reconnect
                if not data:
                    return  # EOF, or half-closed: what was asked is still answered (see finally)
                try:
                    lines = buffer.feed(data)
                except rpc.LineTooLong as exc:
                    await self._send(rpc.error_response(None, exc.code, exc.message))
                    return
                ready: list[bytes] = []
                for line in lines:
                    if not line.strip():
                        continue
                    last_request = time.monotonic()
                    message = _decode(line)
                    if answered_at_once(message):
                        # Answered from memory without waiting on anything: no task, and the
                        # answers to one read are written together.
                        response = await self._respond(message)
                        if response is not None:
                            ready.append(_encode(response))
                        continue
                    await self._slots.acquire()  # backpressure: stop reading while full
                    task = asyncio.ensure_future(self._answer(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if ready:
                    await self._write(b"".join(ready))
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _answer(self, message: Any) -> None:
        try:
            response = await self._respond(message)
            if response is not None:
                await self._write(_encode(response))
        except (ConnectionError, RuntimeError):
            pass  # the client went away; nothing to answer
        finally:
            self._slots.release()

    async def _respond(self, message: Any) -> Any:
        if isinstance(message, rpc.ProtocolError):
            return rpc.error_response(None, message.code, message.message)
        items, batch = rpc.parse_requests(message)
        responses = []
        for item in items:
            answer = await self._one(item)
            if answer is not None:
                responses.append(answer)
        if not responses:
            return None
        return responses if batch else responses[0]

    async def _one(self, item: rpc.Request | dict[str, Any]) -> dict[str, Any] | None:
        if isinstance(item, dict):
            return item  # already an error response
        try:
            result = await dispatch(self._daemon, item, self._caller)
            response = rpc.result_response(item.id, result)
        except RpcError as exc:
            response = rpc.error_response(item.id, exc.code, exc.message, exc.data)
        except Exception:
            log.exception("internal error in %s", item.method)
            response = rpc.error_response(item.id, rpc.INTERNAL_ERROR, "internal error")
        return None if item.notification else response

    async def _send(self, message: Any) -> None:
        await self._write(_encode(message))

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                await self._writer.drain()
        except TimeoutError:
            self._writer.transport.abort()
            raise ConnectionResetError("client stopped reading") from None


def _decode(line: bytes) -> Any:
    """The decoded message, or the ProtocolError to answer with."""
    try:
        return rpc.decode(line)
    except rpc.ProtocolError as exc:
        return exc


def _encode(message: Any) -> bytes:
    try:
        return rpc.encode(message)
    except (TypeError, ValueError):
        log.error("internal error: an answer could not be encoded")
        return rpc.encode(rpc.error_response(None, rpc.INTERNAL_ERROR, "internal error"))


def peer_credentials(sock: socket.socket | None) -> Caller:
    """The caller's pid, uid, gid from the kernel, and its groups from /proc/PID/status."""
    if sock is None:  # pragma: no cover - asyncio always provides it for Unix sockets
        return Caller(0, -1, -1, frozenset())
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Caller(pid, uid, gid, process_groups(pid))


def process_groups(pid: int) -> frozenset[int]:
    if pid <= 0:
        return frozenset()
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:] if g.isdigit())
    except OSError:
        pass
    return frozenset()


def bind_socket(path: str, group: str) -> socket.socket:
    """Bind the listening socket 0660 and group-owned, replacing a stale socket file."""
    check_socket_free(path)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # never a moment with wider permissions than 0660
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.warning("group %s does not exist: the socket keeps group %d", group, os.getgid())
        else:
            if os.stat(path).st_gid != gid:
                try:
                    os.chown(path, -1, gid)
                except PermissionError:
                    log.warning("cannot give the socket to group %s: not permitted", group)
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def check_socket_free(path: str) -> None:
    """Raise SocketInUse if a live awgd answers on `path`; remove a stale socket file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketInUse(f"{path}: cannot check whether another awgd uses it ({exc.strerror})") from None
    else:
        raise SocketInUse(f"another awgd is already answering on {path}")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
