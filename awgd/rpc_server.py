"""The JSON-RPC server on the Unix socket: connections, limits, credentials, framing, output.

Framing and encoding are the shared sans-IO `awgd_client.protocol`; the methods are in
`awgd.api`. This module moves bytes and enforces the limits (docs/API.md "Limits"):

- every request holds one of its connection's MAX_IN_FLIGHT_PER_CONNECTION slots while
  it is answered; with none free the connection is not read;
- answers are written as they are produced, and a connection whose unsent output is above
  OUTPUT_HIGH_WATER_BYTES is not read until it drains; one that stays above it for
  WRITE_TIMEOUT_SECONDS is dropped;
- a large answer (traffic.list) is produced and written in chunks, so the event loop is
  never held for long, and it is produced only once the connection's writer is free, so
  a connection holds at most one such answer in memory at a time.
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
from collections import Counter
from typing import Any

from awgd.api import Api, Caller, RpcError, Streamed, Subscription, is_admin
from awgd.event_feed import Dropped, Subscriber
from awgd.trusted_path import ensure_trusted_directory
from awgd_client import protocol as rpc

log = logging.getLogger(__name__)

# docs/API.md "Limits".
MAX_CONNECTIONS = 256
# Of those, the last few are kept for root and admins: a group member who opens connections
# until the limit is reached must not lock out the operator who comes to look.
RESERVED_FOR_ADMINS = 8
IDLE_TIMEOUT_SECONDS = 600.0
# For tests only: shorter timeouts, so that closing idle and stuck connections can be seen.
IDLE_TIMEOUT_ENV = "AWGD_TEST_IDLE_TIMEOUT"
WRITE_TIMEOUT_ENV = "AWGD_TEST_WRITE_TIMEOUT"
# Requests of one connection being worked on at once. A client that pipelines more waits:
# its socket is not read, so a flood costs bounded memory, never an unbounded queue.
MAX_IN_FLIGHT_PER_CONNECTION = 32
# Unsent output per connection above which it is not read. A few traffic.list answers of
# thousands of peers; far above what a client that reads its answers ever leaves behind.
OUTPUT_HIGH_WATER_BYTES = 4 * 1024 * 1024
# Answers produced at once for one read are written together up to this size: one system
# call for a pipelined burst, not one per answer.
COALESCE_BYTES = 64 * 1024
# On shutdown, requests already being answered get this long to finish.
SHUTDOWN_GRACE_SECONDS = 5.0
# A client that stops reading its answers is dropped after this long, freeing its slots.
WRITE_TIMEOUT_SECONDS = 60.0
# asyncio listens with a backlog of 100 unless told otherwise, and a burst of clients
# connecting at once then gets EAGAIN; the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 4096
# An internal error (a bug) is logged with its traceback at most once per this many seconds
# per method; the rest are counted into the next line. A client that repeats the request that
# trips it must not flood journald (20,000 lines in 2.4 s tripped its rate limit: D14).
INTERNAL_ERROR_LOG_SECONDS = 60.0
# events.subscribe reads the stored events after `since` this many at a time.
EVENT_PAGE = 1000
SOCKET_UMASK = 0o117  # the socket is created 0660: owner and group may connect
_READ_CHUNK = 64 * 1024
_PEERCRED = struct.Struct("3i")
# Not in Python's socket module; the kernel records the groups at connect() (Linux 4.13).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_GROUPS_FIRST_TRY = 64
_NGROUPS_MAX = 65536


class InternalErrors:
    """Logs internal errors: each method's first at once, then at most one a minute."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()

    def log(self, method: str, what: str = "in") -> None:
        now = time.monotonic()
        if now - self._last.get(method, -INTERNAL_ERROR_LOG_SECONDS) < INTERNAL_ERROR_LOG_SECONDS:
            self._quiet[method] += 1
            return
        self._last[method] = now
        more = self._quiet.pop(method, 0)
        shown = method if len(method) <= 64 and method.isprintable() else "(unprintable)"
        log.exception("internal error %s %s%s", what, shown, f" ({more} more not logged)" if more else "")


_INTERNAL = InternalErrors()


class SocketInUse(Exception):
    """Another awgd answers on the socket, the path is not a socket, or its directory is not
    one only root controls."""


class RpcServer:
    def __init__(self, api: Api, path: str, group: str) -> None:
        self._api = api
        self._path = path
        self._group = group
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], Caller] = {}
        self._per_uid: Counter[int] = Counter()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        sock = bind_socket(self._path, self._group)
        self._server = await asyncio.start_unix_server(self._accept, sock=sock, backlog=LISTEN_BACKLOG)

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

    def _refusal(self, caller: Caller) -> str | None:
        """Why this caller may not have another connection now, or None."""
        view = self._api.view
        admin = is_admin(caller, view.admin_gids)
        limit = MAX_CONNECTIONS if admin else MAX_CONNECTIONS - RESERVED_FOR_ADMINS
        if len(self._connections) >= limit:
            return "too many connections"
        if caller.uid != 0 and self._per_uid[caller.uid] >= view.config.max_connections_per_uid:
            return "too many connections from this user"
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            caller = peer_credentials(writer.get_extra_info("socket"))
        except OSError:
            writer.close()
            return
        refusal = self._refusal(caller)
        if refusal is not None:
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(rpc.encode(rpc.error_response(None, rpc.SERVER_BUSY, refusal)))
                await writer.drain()
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = caller
        self._per_uid[caller.uid] += 1
        try:
            await Connection(self._api, reader, writer, caller).serve()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # gone, dropped, or cancelled at shutdown: nothing more to do for it
        finally:
            del self._connections[task]
            self._per_uid[caller.uid] -= 1
            if not self._per_uid[caller.uid]:
                del self._per_uid[caller.uid]
            await _close(writer)


class Connection:
    def __init__(self, api: Api, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, caller: Caller) -> None:
        self._api = api
        self._reader = reader
        self._writer = writer
        self._caller = caller
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        self._output = asyncio.Lock()  # one answer written at a time: lines never interleave
        self._idle_timeout = float(os.environ.get(IDLE_TIMEOUT_ENV) or IDLE_TIMEOUT_SECONDS)
        self._write_timeout = float(os.environ.get(WRITE_TIMEOUT_ENV) or WRITE_TIMEOUT_SECONDS)
        self._tasks: set[asyncio.Task[None]] = set()
        # events.subscribe: the connection's one subscriber and the task that pushes its
        # events. The subscriber is unsubscribed here, on replacement and on close, never
        # only in the pusher's `finally`: a task cancelled before it first ran never runs
        # its body, and a batch of subscribes replaced each one so (the review's D7).
        self._subscriber: Subscriber | None = None
        self._pusher: asyncio.Task[None] | None = None
        writer.transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER_BYTES)

    async def serve(self) -> None:
        buffer = rpc.LineBuffer()
        last_request = time.monotonic()
        try:
            while True:
                await self._drain()  # unsent output above the high-water mark: do not read
                idle_left = self._idle_timeout - (time.monotonic() - last_request)
                if self._pusher is not None and not self._pusher.done():
                    idle_left = float("inf")  # docs/API.md: a subscribed connection never idles out
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
                    await self._write(rpc.encode(rpc.error_response(None, exc.code, exc.message)))
                    return
                ready = bytearray()
                for line in lines:
                    if not line.strip():
                        continue
                    last_request = time.monotonic()
                    items, batch = _requests(line)
                    if self._api.inline(items):
                        # Answered from memory, small, and never waiting on anything: no task,
                        # and no slot held, since nothing else runs until it is answered; but
                        # with every slot taken it waits like any other request.
                        if self._slots.locked():
                            async with self._slots:
                                pass
                        if batch:
                            response = _combined([self._now(item) for item in items], batch)
                        else:
                            response = self._now(items[0])
                        if response is not None:
                            ready += _encode(response)
                            if len(ready) >= COALESCE_BYTES:
                                await self._write(bytes(ready))
                                ready.clear()
                        continue
                    await self._slots.acquire()  # backpressure: stop reading while full
                    task = asyncio.ensure_future(self._answer(items, batch))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if ready:
                    await self._write(bytes(ready))
        except BaseException:
            # Dropped or shut down: the requests still being answered have nobody to go to.
            # (At EOF they are still answered: a client may half-close and then read.)
            for task in self._tasks:
                task.cancel()
            raise
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._unsubscribe()
            if self._pusher is not None:
                await asyncio.gather(self._pusher, return_exceptions=True)

    async def _answer(self, items: list[rpc.Request | dict[str, Any]], batch: bool) -> None:
        subscriptions: list[Subscription] = []
        try:
            response = _combined([await self._one(item, subscriptions) for item in items], batch)
            if response is not None:
                await self._send(response)
            for subscription in subscriptions:  # after the answer: notifications follow it
                self._subscribe(subscription)
            subscriptions.clear()
        except (ConnectionError, RuntimeError):
            pass  # the client went away, or stopped reading and was dropped
        finally:
            for subscription in subscriptions:  # never started
                self._api.view.feed.unsubscribe(subscription.subscriber)
            self._slots.release()

    def _subscribe(self, subscription: Subscription) -> None:
        """Start pushing events; a new subscription on the connection replaces the old."""
        self._unsubscribe()
        self._subscriber = subscription.subscriber
        self._pusher = asyncio.ensure_future(self._push(subscription))

    def _unsubscribe(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
        if self._subscriber is not None:
            self._api.view.feed.unsubscribe(self._subscriber)
            self._subscriber = None

    async def _push(self, subscription: Subscription) -> None:
        view = self._api.view
        subscriber = subscription.subscriber
        sent = subscription.last_id if subscription.since is None else subscription.since
        try:
            if subscription.since is not None:
                while True:  # the stored events after `since`, a page at a time
                    found, _ = await view.events(sent, EVENT_PAGE, subscription.types)
                    for event in found:
                        await self._notify(event)
                        sent = event.id or sent
                    if len(found) < EVENT_PAGE:
                        break
            while True:
                for event in await subscriber.next_batch():
                    if event.id is not None and event.id > sent:
                        await self._notify(event)
                        sent = event.id
        except Dropped:
            log.info("dropped an events subscriber (uid %d) that fell behind", self._caller.uid)
            self._writer.transport.abort()
        except (ConnectionError, RuntimeError):
            pass  # gone, or dropped for not reading
        except Exception:
            log.exception("events subscription failed")
            self._writer.transport.abort()
        finally:
            view.feed.unsubscribe(subscriber)

    async def _notify(self, event: Any) -> None:
        await self._write(_encode(rpc.notification_message("event", self._api.event(event))))

    def _now(self, item: rpc.Request | dict[str, Any]) -> dict[str, Any] | None:
        """The answer to an inline request (Api.inline), made without waiting."""
        if isinstance(item, dict):
            return item  # already an error response
        try:
            response = rpc.result_response(item.id, self._api.answer_now(item, self._caller))
        except RpcError as exc:
            response = rpc.error_response(item.id, exc.code, exc.message, exc.data)
        except Exception:
            _INTERNAL.log(item.method)
            response = rpc.error_response(item.id, rpc.INTERNAL_ERROR, "internal error")
        return None if item.notification else response

    async def _one(
        self, item: rpc.Request | dict[str, Any], subscriptions: list[Subscription]
    ) -> dict[str, Any] | None:
        if isinstance(item, dict):
            return item  # already an error response
        try:
            result = await self._api.dispatch(item, self._caller)
            if isinstance(result, Subscription):
                subscriptions.append(result)
                result = {"last_id": result.last_id}
            response = rpc.result_response(item.id, result)
        except RpcError as exc:
            response = rpc.error_response(item.id, exc.code, exc.message, exc.data)
        except Exception:
            _INTERNAL.log(item.method)
            response = rpc.error_response(item.id, rpc.INTERNAL_ERROR, "internal error")
        if item.notification:
            result = response.get("result")
            if isinstance(result, Streamed):
                await result.discard()
            return None
        return response

    # ---- output -------------------------------------------------------------------------------

    async def _send(self, response: Any) -> None:
        """Write one response (or batch), streaming any result too large to build at once."""
        parts = response if isinstance(response, list) else [response]
        if not any(isinstance(part.get("result"), Streamed) for part in parts):
            await self._write(_encode(response))
            return
        async with self._output:
            if isinstance(response, list):
                await self._put(b"[")
            for index, part in enumerate(parts):
                if index:
                    await self._put(b",")
                result = part.get("result")
                if isinstance(result, Streamed):
                    try:
                        await self._stream(part["id"], result)
                    except (ConnectionError, asyncio.CancelledError):
                        raise
                    except Exception:
                        # Part of a line is out: nothing can finish it, and the next answer
                        # must not be glued onto it. The client sees the connection close.
                        _INTERNAL.log(str(result.field), "while streaming")
                        self._writer.transport.abort()
                        raise ConnectionResetError("an answer failed while it was streamed") from None
                else:
                    await self._put(rpc.dumps(part))
            await self._put(b"]\n" if isinstance(response, list) else b"\n")

    async def _stream(self, request_id: rpc.Id, result: Streamed) -> None:
        try:
            head, items = await result.open()
            field = rpc.dumps(result.field)
            await self._put(rpc.result_prefix(request_id) + rpc.dumps(head)[:-1] + b"," + field + b":[")
            first = True
            async for chunk in items:
                if chunk:
                    encoded = rpc.dumps(chunk)[1:-1]
                    await self._put(encoded if first else b"," + encoded)
                    first = False
                await asyncio.sleep(0)  # let everyone else run between chunks
            await self._put(b"]}}")
        finally:
            await result.discard()

    async def _write(self, data: bytes) -> None:
        async with self._output:
            await self._put(data)

    async def _put(self, data: bytes) -> None:
        """Write, then wait while the unsent output is above the high-water mark."""
        if self._writer.is_closing():
            raise ConnectionResetError("connection closed")
        self._writer.write(data)
        await self._drain()

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self._write_timeout):
                await self._writer.drain()
        except TimeoutError:
            if not self._writer.is_closing():
                log.info("dropped a client (uid %d) that stopped reading its answers", self._caller.uid)
            self._writer.transport.abort()
            raise ConnectionResetError("client stopped reading") from None


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close after what is left to send has gone, unless the client does not take it."""
    writer.close()
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE_SECONDS):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except (ConnectionError, OSError):
        pass


def _requests(line: bytes) -> tuple[list[rpc.Request | dict[str, Any]], bool]:
    """One line's requests (or the error answers ready for them), and whether it was a batch."""
    try:
        return rpc.parse_requests(rpc.decode(line))
    except rpc.ProtocolError as exc:
        return [rpc.error_response(None, exc.code, exc.message)], False


def _combined(answers: list[dict[str, Any] | None], batch: bool) -> Any:
    """The response line's content: one answer, a batch's list, or None for notifications only."""
    given = [answer for answer in answers if answer is not None]
    if not given:
        return None
    return given if batch else given[0]


def _encode(message: Any) -> bytes:
    try:
        return rpc.encode(message)
    except (TypeError, ValueError):
        log.error("internal error: an answer could not be encoded")
        return rpc.encode(rpc.error_response(None, rpc.INTERNAL_ERROR, "internal error"))


# ---- who is calling --------------------------------------------------------------------------


def peer_credentials(sock: socket.socket | None) -> Caller:
    """The caller's pid, uid, gid and groups, as the kernel recorded them at connect().

    Never read from /proc/PID afterwards: by then that process may have exited and its pid
    been reused by someone else's process.
    """
    if sock is None:  # pragma: no cover - asyncio always provides it for Unix sockets
        return Caller(0, -1, -1, frozenset())
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Caller(pid, uid, gid, peer_groups(sock))


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The supplementary groups of the connecting process at connect() (SO_PEERGROUPS)."""
    for count in (_GROUPS_FIRST_TRY, _NGROUPS_MAX):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * count)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue  # more groups than the first try holds
            raise
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    raise OSError(errno.ERANGE, "too many supplementary groups")


# ---- the socket file ------------------------------------------------------------------------


def prepare_socket_path(path: str) -> None:
    """Check, before anything else happens, that the socket can be ours: its directory and
    every one above it are root's alone (created 0755 where missing), and no live awgd
    answers on it. Raises SocketInUse with the reason."""
    try:
        ensure_trusted_directory(os.path.dirname(path))
    except OSError as exc:
        raise SocketInUse(f"{path}: cannot create its directory ({exc.strerror})") from None
    except Exception as exc:  # UntrustedPath
        raise SocketInUse(f"refusing the socket {path}: {exc}") from None
    check_socket_free(path)


def bind_socket(path: str, group: str) -> socket.socket:
    """Bind the listening socket 0660 and group-owned, replacing a stale socket file."""
    prepare_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(SOCKET_UMASK)  # the mode comes from bind() itself: never a chmod
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    if group:
        _give_to_group(path, group)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def _give_to_group(path: str, group: str) -> None:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("group %s does not exist: the socket keeps group %d", group, os.getegid())
        return
    if os.lstat(path).st_gid == gid:
        return  # the unit's Group= made it so at bind()
    try:
        # The directory is root's alone (prepare_socket_path), so the name is still our socket;
        # and lchown would not follow a symbolic link even if it were not.
        os.chown(path, -1, gid, follow_symlinks=False)
    except PermissionError:
        log.warning("cannot give the socket to group %s: not permitted", group)


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
