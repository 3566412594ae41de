"""The asyncio client: many coroutines share one connection, answers matched by id."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

from awgd_client import methods
from awgd_client import protocol as rpc
from awgd_client.errors import (
    AwgdError,
    AwgdTimeout,
    DaemonUnavailable,
    ProtocolError,
    SocketPermissionDenied,
    from_error,
)
from awgd_client.models import (
    AddedPeer,
    Event,
    EventList,
    Fields,
    History,
    PeerTraffic,
    RemovedPeer,
    ResetResult,
    SampleResult,
    ServerStatus,
    TrafficList,
)
from awgd_client.sync_client import MAX_ANSWER_BYTES, connect_error


class AsyncClient:
    """`async with AsyncClient() as awgd: await awgd.traffic(key)`."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = methods.DEFAULT_TIMEOUT) -> None:
        self.socket_path = methods.socket_path(socket_path)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[rpc.Response]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._disconnect(DaemonUnavailable("the client was closed"))

    # ---- one method per RPC method -------------------------------------------------------

    async def discover(self) -> dict[str, Any]:
        """rpc.discover: the daemon's API as an OpenRPC document (its methods and params)."""
        found = await self.call("rpc.discover")
        if not isinstance(found, dict) or not isinstance(found.get("methods"), list):
            raise ProtocolError("rpc.discover did not answer an OpenRPC document")
        return found

    async def server_status(self) -> ServerStatus:
        return ServerStatus.from_json(await self.call("server.status"))

    async def traffic(self, public_key: str, interface: str | None = None, fresh: bool = False) -> PeerTraffic:
        given = methods.params(public_key=public_key, interface=interface, fresh=fresh or None)
        return PeerTraffic.from_json(await self.call("traffic.get", **given))

    async def traffic_list(
        self,
        *,
        interface: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        present_only: bool | None = None,
    ) -> TrafficList:
        given = methods.params(interface=interface, sort=sort, limit=limit, offset=offset, present_only=present_only)
        return TrafficList.from_json(await self.call("traffic.list", **given))

    async def history(
        self, public_key: str, *, interface: str | None = None, granularity: str | None = None, limit: int | None = None
    ) -> History:
        given = methods.params(public_key=public_key, interface=interface, granularity=granularity, limit=limit)
        return History.from_json(await self.call("traffic.history", **given))

    async def sample(self) -> SampleResult:
        return SampleResult.from_json(await self.call("traffic.sample"))

    async def reset(self, public_key: str, interface: str | None = None) -> ResetResult:
        given = methods.params(public_key=public_key, interface=interface)
        return ResetResult.from_json(await self.call("traffic.reset", **given))

    async def add_peer(
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
        return AddedPeer.from_json(await self.change("peer.add", given))

    async def remove_peer(self, interface: str, public_key: str) -> RemovedPeer:
        given = {"interface": interface, "public_key": public_key}
        return RemovedPeer.from_json(await self.change("peer.remove", given))

    async def update_peer(
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
        return PeerTraffic.from_json(await self.change("peer.update", given))

    async def rekey_peer(
        self, interface: str, public_key: str, new_public_key: str, *, preshared_key: str | None = None
    ) -> PeerTraffic:
        """peer.rekey: the peer's keys replaced, everything else kept; answers the new key's
        figures. The old key's history answers `replaced_by`. Raises Conflict when the new
        key is already a peer. For a user's new device config, see awgd_client.new_device."""
        given = methods.rekey_params(interface, public_key, new_public_key, preshared_key)
        return PeerTraffic.from_json(await self.change("peer.rekey", given))

    async def limit_peer(
        self, interface: str, public_key: str, *, down_kbit: int | None = None, up_kbit: int | None = None
    ) -> PeerTraffic:
        """peer.limit: the peer's speed limit each way in kbit/s (None: no limit that way;
        both None lifts it). Applied with tc at once, and again whenever it goes missing."""
        given = methods.limit_params(interface, public_key, down_kbit, up_kbit)
        return PeerTraffic.from_json(await self.change("peer.limit", given))

    async def block_peer(self, interface: str, public_key: str) -> PeerTraffic:
        given = {"interface": interface, "public_key": public_key}
        return PeerTraffic.from_json(await self.change("peer.block", given))

    async def unblock_peer(self, interface: str, public_key: str) -> PeerTraffic:
        given = {"interface": interface, "public_key": public_key}
        return PeerTraffic.from_json(await self.change("peer.unblock", given))

    async def plan_set(
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
        return PeerTraffic.from_json(await self.change("plan.set", given))

    async def plan_clear(self, interface: str, public_key: str) -> PeerTraffic:
        given = {"interface": interface, "public_key": public_key}
        return PeerTraffic.from_json(await self.change("plan.clear", given))

    async def events(
        self, since: int | None = None, *, limit: int | None = None, types: list[str] | None = None
    ) -> EventList:
        given = methods.params(since=since, limit=limit, types=types)
        return EventList.from_json(await self.call("events.list", **given))

    async def subscribe(
        self,
        since: int | None = None,
        types: list[str] | None = None,
        *,
        give_up: float | None = None,
    ) -> AsyncIterator[Event]:
        """events.subscribe as an async iterator: the stored events after `since` (if given),
        then each new one as it happens. On its own connection; when that is lost (awgd
        restarted, the client dropped for not reading) it reconnects by itself and resumes
        after the last id it yielded, so no event is lost or repeated. A refusal (bad params)
        raises; so does a socket that refuses this user (SocketPermissionDenied, at once) or
        that stays missing or refusing for `give_up` seconds (DaemonUnavailable; by default
        methods.RESUBSCRIBE_GIVE_UP_SECONDS)."""
        give_up = methods.RESUBSCRIBE_GIVE_UP_SECONDS if give_up is None else give_up
        last = since
        delay = methods.RESUBSCRIBE_FIRST_DELAY
        failing_since: float | None = None  # when connecting began to fail
        while True:
            try:
                try:
                    reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_ANSWER_BYTES)
                except OSError as exc:
                    error = connect_error(self.socket_path, exc)
                    now = time.monotonic()
                    failing_since = now if failing_since is None else failing_since
                    if isinstance(error, SocketPermissionDenied) or now - failing_since >= give_up:
                        raise error from None
                    raise
                failing_since = None
                try:
                    request = rpc.request_message(1, "events.subscribe", methods.params(since=last, types=types))
                    writer.write(rpc.encode(request))
                    await writer.drain()
                    while line := await reader.readline():
                        message = rpc.decode(line)
                        is_event, params = rpc.notified(message, "event")
                        if not is_event:
                            response = rpc.parse_response(message)
                            if response.error is not None:
                                raise from_error(response.error)
                            if last is None:
                                last = Fields(response.result, "result").integer("last_id")
                            continue
                        event = Event.from_json(params)
                        if last is None or event.id > last:
                            last = event.id
                            delay = methods.RESUBSCRIBE_FIRST_DELAY
                            yield event
                finally:
                    writer.close()
            except (OSError, ValueError, rpc.ProtocolError, asyncio.LimitOverrunError):
                pass  # not there, or lost: again after a pause
            await asyncio.sleep(delay)
            delay = min(delay * 2, methods.RESUBSCRIBE_MAX_DELAY)

    # ---- raw access ------------------------------------------------------------------------

    async def call(self, method: str, **params: Any) -> Any:
        """Call any method; returns the decoded `result` or raises an AwgdError."""
        return await self._call(method, params, self.timeout)

    async def change(self, method: str, params: dict[str, Any]) -> Any:
        """Call a method that changes the server's peers: it may take longer than a read."""
        return await self._call(method, params, max(self.timeout, methods.CHANGE_TIMEOUT))

    async def _call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        request_id = next(self._ids)
        line = rpc.encode(rpc.request_message(request_id, method, params))
        future: asyncio.Future[rpc.Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                writer = await self._connected()
                try:
                    writer.write(line)
                    await writer.drain()
                except OSError:
                    self._disconnect(DaemonUnavailable("the connection to awgd was lost"))
                    writer = await self._connected()  # one reconnect
                    writer.write(line)
                    await writer.drain()
                response = await future
        except TimeoutError:
            raise AwgdTimeout(f"no answer from awgd within {timeout:g} s") from None
        except OSError:
            raise DaemonUnavailable("the connection to awgd was lost") from None
        finally:
            # A late answer finds no future and is dropped: it never reaches another caller.
            self._pending.pop(request_id, None)
        if response.error is not None:
            raise from_error(response.error)
        return response.result

    async def _connected(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                try:
                    reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_ANSWER_BYTES)
                except OSError as exc:
                    raise connect_error(self.socket_path, exc) from None
                self._writer = writer
                self._reader_task = asyncio.ensure_future(self._read(reader, writer))
            return self._writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reason: AwgdError = DaemonUnavailable("the connection to awgd was lost")
        try:
            while line := await reader.readline():
                try:
                    response = rpc.parse_response(rpc.decode(line))
                except rpc.ProtocolError:
                    reason = ProtocolError("awgd sent an answer that is not JSON-RPC 2.0")
                    break
                future = self._pending.get(response.id) if isinstance(response.id, int) else None
                if future is None and response.id is None and response.error is not None and len(self._pending) == 1:
                    future = next(iter(self._pending.values()))  # an unreadable line: only one was sent
                if future is not None and not future.done():
                    future.set_result(response)
        except (OSError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            if self._writer is writer:
                self._disconnect(reason)

    def _disconnect(self, reason: AwgdError) -> None:
        """Fail every pending call; the next call reconnects."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
