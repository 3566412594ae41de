"""The sans-IO JSON-RPC codec, with orjson and with the standard library's json."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from awgd_client import protocol as rpc

BACKENDS = ["json"] + (["orjson"] if importlib.util.find_spec("orjson") else [])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "json":
        monkeypatch.setattr(rpc, "_orjson", None)
    yield request.param


def test_round_trip(backend: str) -> None:
    message = {"jsonrpc": "2.0", "id": 1, "result": {"name": "awg0", "bytes": 2**62, "ok": True, "none": None}}
    line = rpc.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert rpc.decode(line[:-1]) == message


@pytest.mark.parametrize(
    "line",
    [b"{", b"\xff\xfe", b"NaN", b'{"a": Infinity}', b"[" * 100_000 + b"]" * 100_000, b"1" * 5000, b""],
)
def test_parse_errors_are_always_minus_32700(backend: str, line: bytes) -> None:
    with pytest.raises(rpc.ProtocolError) as caught:
        rpc.decode(line)
    assert caught.value.code == rpc.PARSE_ERROR


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape(data: bytes) -> None:
    try:
        rpc.decode(data)
    except rpc.ProtocolError as exc:
        assert exc.code == rpc.PARSE_ERROR


def test_line_buffer_splits_and_limits() -> None:
    buffer = rpc.LineBuffer(max_line=10)
    assert buffer.feed(b"ab") == []
    assert buffer.feed(b"c\nde\n\nf") == [b"abc", b"de", b""]
    assert buffer.pending == 1
    assert buffer.feed(b"123456789\n") == [b"f123456789"]  # exactly 10: accepted
    with pytest.raises(rpc.LineTooLong):
        buffer.feed(b"12345678901")  # 11 without a newline: refused before it ends
    with pytest.raises(rpc.LineTooLong):
        rpc.LineBuffer(max_line=10).feed(b"12345678901\n")


def test_parse_requests() -> None:
    (request,), batch = rpc.parse_requests({"jsonrpc": "2.0", "id": 5, "method": "server.status"})
    assert request == rpc.Request("server.status", {}, 5, False) and not batch
    (note,), _ = rpc.parse_requests({"jsonrpc": "2.0", "method": "m", "params": {"a": 1}})
    assert isinstance(note, rpc.Request) and note.notification
    items, batch = rpc.parse_requests([{"jsonrpc": "2.0", "id": 1, "method": "m"}, 5])
    assert batch and isinstance(items[0], rpc.Request) and items[1]["error"]["code"] == rpc.INVALID_REQUEST
    (empty,), batch = rpc.parse_requests([])
    assert not batch and empty["error"]["code"] == rpc.INVALID_REQUEST
    (big,), _ = rpc.parse_requests([{}] * (rpc.MAX_BATCH + 1))
    assert big["error"]["code"] == rpc.INVALID_REQUEST
    (bad_id,), _ = rpc.parse_requests({"jsonrpc": "2.0", "id": {"x": 1}, "method": "m"})
    assert bad_id["error"]["code"] == rpc.INVALID_REQUEST and bad_id["id"] is None
    (bool_id,), _ = rpc.parse_requests({"jsonrpc": "2.0", "id": True, "method": "m"})
    assert bool_id["error"]["code"] == rpc.INVALID_REQUEST
    (positional,), _ = rpc.parse_requests({"jsonrpc": "2.0", "id": 1, "method": "m", "params": [1]})
    assert positional["error"]["code"] == rpc.INVALID_PARAMS


def test_parse_response() -> None:
    assert rpc.parse_response({"jsonrpc": "2.0", "id": 3, "result": [1]}) == rpc.Response(3, [1])
    error = rpc.parse_response(rpc.error_response(4, rpc.UNKNOWN_PEER, "unknown peer", {"public_key": "k"}))
    assert error.error == {"code": -32001, "message": "unknown peer", "data": {"public_key": "k"}}
    for bad in ({"id": 1, "result": 1}, {"jsonrpc": "2.0", "id": 1}, {"jsonrpc": "2.0", "error": "x"}, [1]):
        with pytest.raises(rpc.ProtocolError):
            rpc.parse_response(bad)


def test_request_message() -> None:
    assert rpc.request_message(1, "traffic.get", {"public_key": "k"}) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "traffic.get",
        "params": {"public_key": "k"},
    }
    assert "params" not in rpc.request_message(2, "server.status")
