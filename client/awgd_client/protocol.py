"""JSON-RPC 2.0 over newline-delimited JSON, without any I/O (sans-IO, as h11 does HTTP).

Shared by the daemon and both clients: bytes go in through `LineBuffer.feed`, messages
come out; `encode` turns a message into one line. Nothing here touches a socket.
orjson is used when installed, the standard library's json otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

_orjson: ModuleType | None
try:  # orjson is optional: Debian 12 does not package it
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

JSONRPC: Final = "2.0"

# One line may hold a whole batch of 100 requests with 10 kB strings in them; a MiB is far
# beyond any legitimate request and bounds what one client can make the daemon buffer
# (API.md "Limits").
MAX_LINE_BYTES: Final = 1024 * 1024
MAX_BATCH: Final = 100

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SERVER_BUSY: Final = -32000
UNKNOWN_PEER: Final = -32001
PERMISSION_DENIED: Final = -32002
SAMPLING_FAILED: Final = -32003
AMBIGUOUS_PEER: Final = -32004
CONFLICT: Final = -32005
TOOL_FAILED: Final = -32006

Id = str | int | None


class ProtocolError(Exception):
    """A message that cannot be understood; `code` is the JSON-RPC error to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LineTooLong(ProtocolError):
    def __init__(self) -> None:
        super().__init__(INVALID_REQUEST, "request too large")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode(line: bytes) -> Any:
    """One line to a JSON value, or ProtocolError(-32700). Never anything else."""
    try:
        if _orjson is not None:
            return _orjson.loads(line)
        return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:  # stdlib json on deeply nested input
        raise ProtocolError(PARSE_ERROR, "parse error: nested too deeply") from None
    except (ValueError, UnicodeDecodeError, TypeError):  # orjson.JSONDecodeError is a ValueError
        raise ProtocolError(PARSE_ERROR, "parse error") from None


def dumps(value: Any) -> bytes:
    """A JSON value as compact UTF-8, without the newline that ends a message."""
    if _orjson is not None:
        return bytes(_orjson.dumps(value))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode(message: Any) -> bytes:
    """One message to one line, newline included."""
    return dumps(message) + b"\n"


class LineBuffer:
    """Splits a byte stream into lines of at most MAX_LINE_BYTES (newline excluded)."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        """Lines completed by `data`; raises LineTooLong once a line passes the limit."""
        self._buffer += data
        lines: list[bytes] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            if end - start > self._max_line:
                raise LineTooLong
            lines.append(bytes(self._buffer[start:end]))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self._max_line:
            raise LineTooLong
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line (a client that closes here sent a partial request)."""
        return len(self._buffer)


# ---- the server's side ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: Mapping[str, Any]
    id: Id
    notification: bool  # no "id": no response, even on error


def parse_requests(message: Any) -> tuple[list[Request | dict[str, Any]], bool]:
    """A decoded message -> (requests or ready error responses, whether it was a batch)."""
    if isinstance(message, list):
        if not message:
            return [error_response(None, INVALID_REQUEST, "invalid request: empty batch")], False
        if len(message) > MAX_BATCH:
            return [error_response(None, INVALID_REQUEST, f"invalid request: batch of more than {MAX_BATCH}")], False
        return [_parse_one(item) for item in message], True
    return [_parse_one(message)], False


def _parse_one(item: Any) -> Request | dict[str, Any]:
    if not isinstance(item, dict):
        return error_response(None, INVALID_REQUEST, "invalid request: not an object")
    raw_id = item.get("id")
    notification = "id" not in item
    valid_id = raw_id is None or isinstance(raw_id, str) or (isinstance(raw_id, int) and not isinstance(raw_id, bool))
    answer_id = raw_id if valid_id else None
    if not valid_id:
        return error_response(None, INVALID_REQUEST, "invalid request: id must be a string, an integer or null")
    if item.get("jsonrpc") != JSONRPC:
        return error_response(answer_id, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    method = item.get("method")
    if not isinstance(method, str):
        return error_response(answer_id, INVALID_REQUEST, "invalid request: method must be a string")
    params = item.get("params", {})
    if isinstance(params, list) and not params:
        params = {}
    if not isinstance(params, dict):
        return error_response(answer_id, INVALID_PARAMS, "invalid params: params must be an object")
    return Request(method, params, answer_id, notification)


def result_response(request_id: Id, result: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": request_id, "result": result}


def result_prefix(request_id: Id) -> bytes:
    """The start of a result response whose result is written after it, piece by piece
    (then closed with `}`): a large answer need not be built whole before it is sent."""
    return b'{"jsonrpc":"2.0","id":' + dumps(request_id) + b',"result":'


def error_response(request_id: Id, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": JSONRPC, "id": request_id, "error": error}


# ---- the client's side ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    id: Id
    result: Any = None
    error: Mapping[str, Any] | None = None


def request_message(request_id: int, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": JSONRPC, "id": request_id, "method": method}
    if params:
        message["params"] = dict(params)
    return message


def notification_message(method: str, params: Any) -> dict[str, Any]:
    """A message the daemon sends unasked (events.subscribe's `event`): no id, no answer."""
    return {"jsonrpc": JSONRPC, "method": method, "params": params}


def notified(message: Any, method: str) -> tuple[bool, Any]:
    """(True, params) when a decoded line is a notification of `method`, else (False, None)."""
    if isinstance(message, dict) and "id" not in message and message.get("method") == method:
        return True, message.get("params")
    return False, None


def parse_response(message: Any) -> Response:
    """A decoded line from the daemon -> Response, or ProtocolError if it is not one."""
    if not isinstance(message, dict) or message.get("jsonrpc") != JSONRPC:
        raise ProtocolError(INVALID_REQUEST, "not a JSON-RPC 2.0 response")
    error = message.get("error")
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise ProtocolError(INVALID_REQUEST, "malformed error object")
        return Response(message.get("id"), None, error)
    if "result" not in message:
        raise ProtocolError(INVALID_REQUEST, "response has neither result nor error")
    return Response(message.get("id"), message["result"])
