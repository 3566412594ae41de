"""Faults of the RPC layer (issue 26, D13 and D14) on a real awgd: instants no zone can show
are refused at parse time, a plan a ledger already holds with one is clamped, bad cursors are
-32602, an answer that fails while it streams closes its connection, and repeated internal
errors are logged once per interval."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from conftest import ScriptedTool, dump, key

from awgd import rpc_server
from awgd.api import Streamed
from awgd.rpc_server import Connection, InternalErrors

A, B = key("A"), key("B")
FAR = "9999-12-31T23:59:59Z"  # east of UTC this is in year 10000


@pytest.fixture
def running(daemons, scripted_tool: ScriptedTool):  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1000, 2000), B: (10, 20)}}))
    daemon = daemons(scripted_tool.path).start()  # periods.timezone Europe/Moscow: UTC+3
    daemon.result("traffic.sample")
    return daemon


def test_instants_no_zone_can_show_are_refused(running) -> None:  # type: ignore[no-untyped-def]
    for bad in ({"expires_at": FAR}, {"expires_at": "2200-01-01T00:00:01Z"}, {"anchor": "9999-12-31"}):
        error = running.call("plan.set", interface="wg0", public_key=A, limit_bytes=None, **bad)["error"]
        assert error["code"] == -32602 and ("expires_at" in error["message"] or "anchor" in error["message"])
    fine = running.result("plan.set", interface="wg0", public_key=A, limit_bytes=None, expires_at="2199-12-31T23:00Z")
    assert fine["plan"]["expires_at"] == "2200-01-01T02:00:00+03:00"
    listed = running.result("traffic.list")
    assert listed["total"] == 2


def test_a_plan_stored_with_such_an_instant_is_clamped_at_load(running) -> None:  # type: ignore[no-untyped-def]
    running.result("plan.set", interface="wg0", public_key=A, limit_bytes=None)
    running.stop()
    with sqlite3.connect(running.ledger) as conn:  # as a ledger written before the bound holds it
        (plan,) = conn.execute("SELECT plan FROM peer_settings WHERE public_key = ?", (A,)).fetchone()
        stored = {**json.loads(plan), "expires_at": "9999-12-31T23:59:59+00:00"}
        conn.execute("UPDATE peer_settings SET plan = ? WHERE public_key = ?", (json.dumps(stored), A))
    running.start()
    listed = running.result("traffic.list")
    assert listed["total"] == 2
    shown = next(p for p in listed["peers"] if p["public_key"] == A)["plan"]["expires_at"]
    assert shown.startswith("2200-01-01")
    assert running.result("server.status")["healthy"] is True  # the connection still answers


def test_bad_cursors_are_invalid_params_not_internal_errors(running) -> None:  # type: ignore[no-untyped-def]
    for cursor in ("abc.\u0661.2.3", "abc." + "9" * 40 + ".2.3", "0123456789abcdef.1.2.99999999999"):
        assert running.call("traffic.changes", cursor=cursor)["error"]["code"] == -32602, cursor
    assert running.call("traffic.changes", after=2**70)["error"]["code"] == -32602
    assert "internal error" not in running.log_text()


class FailingApi:
    """Just enough of awgd.api.Api for a Connection: every request answers a streamed list
    whose second chunk fails, as a bug would."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def inline(self, items: list[Any]) -> bool:
        return False

    async def dispatch(self, request: Any, caller: Any) -> Any:
        self.asked.append(request.method)

        async def produce() -> AsyncGenerator[Any, None]:
            yield {"total": 2}
            yield [{"n": 1}]
            raise ValueError("year 10000 is out of range")

        return Streamed("peers", produce())


def test_an_answer_that_fails_while_it_streams_closes_its_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "s.sock")
    api = FailingApi()

    async def scenario() -> bytes:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await Connection(api, reader, writer, None).serve()  # type: ignore[arg-type]
            except ConnectionError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_unix_server(serve, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b'{"jsonrpc":"2.0","id":1,"method":"traffic.list"}\n')
            await writer.drain()
            received = await asyncio.wait_for(reader.read(), 10)  # until the server closes
            writer.close()
            return received

    with caplog.at_level(logging.ERROR, logger="awgd.rpc"):
        received = asyncio.run(scenario())
    assert received.startswith(b'{"jsonrpc":"2.0","id":1,"result":{"total":2,"peers":[{"n":1}')
    assert not received.endswith(b"\n")  # never completed by anything else
    assert [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()] == [
        "internal error while streaming peers"
    ]


def test_repeated_internal_errors_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(rpc_server.time, "monotonic", lambda: clock[0])
    errors = InternalErrors()
    with caplog.at_level(logging.ERROR, logger="awgd.rpc"):
        for _ in range(20_000):
            try:
                raise ValueError("bad")
            except ValueError:
                errors.log("traffic.changes")
        clock[0] += rpc_server.INTERNAL_ERROR_LOG_SECONDS
        try:
            raise ValueError("bad")
        except ValueError:
            errors.log("traffic.changes")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["internal error in traffic.changes", "internal error in traffic.changes (19999 more not logged)"]
