"""The real awgd process over its real socket: every method, every error, the limits."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import PRIVATE_KEY, ScriptedTool, dump, key

A, B, C = key("A"), key("B"), key("C")


@pytest.fixture
def running(daemons, scripted_tool: ScriptedTool):  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1000, 2000), B: (10, 20)}, "wg1": {B: (5, 5), C: (0, 0)}}))
    daemon = daemons(scripted_tool.path).start()
    scripted_tool.set(dump({"wg0": {A: (1500, 2600), B: (10, 20)}, "wg1": {B: (5, 5), C: (7, 9)}}))
    daemon.result("traffic.sample")
    return daemon


def test_server_status(running) -> None:  # type: ignore[no-untyped-def]
    status = running.result("server.status")
    assert status["version"] == "0.1.0"
    assert status["healthy"] is True
    assert status["tool"] == "awg"
    assert status["timezone"] == "Europe/Moscow"
    assert status["period"]["start"].endswith("+03:00")
    assert status["sampler"]["consecutive_failures"] == 0 and status["sampler"]["last_error"] is None
    names = {i["name"]: i for i in status["interfaces"]}
    assert set(names) == {"wg0", "wg1"}
    assert names["wg0"]["period"] == {"rx_bytes": 500, "tx_bytes": 600, "total_bytes": 1100}
    assert names["wg1"]["period"] == {"rx_bytes": 7, "tx_bytes": 9, "total_bytes": 16}
    assert names["wg0"]["peers"] == 2 and names["wg0"]["peers_online"] == 2
    assert names["wg0"]["exists"] and names["wg0"]["up"]
    assert PRIVATE_KEY not in json.dumps(status)


def test_traffic_get(running) -> None:  # type: ignore[no-untyped-def]
    peer = running.result("traffic.get", public_key=A)
    assert peer["interface"] == "wg0" and peer["present"] and peer["online"]
    assert peer["session"] == {"rx_bytes": 1500, "tx_bytes": 2600, "total_bytes": 4100}
    assert peer["period"]["rx_bytes"] == 500 and peer["period"]["tx_bytes"] == 600
    assert peer["lifetime"]["total_bytes"] == 1100
    assert peer["endpoint"] == "198.51.0.2:50002"
    assert peer["period"]["end"].startswith("2026-12-01T00:00:00") or peer["period"]["end"] > peer["period"]["start"]


def test_ambiguous_and_unknown_peers(running) -> None:  # type: ignore[no-untyped-def]
    error = running.call("traffic.get", public_key=B)["error"]
    assert error["code"] == -32004 and error["data"] == {"interfaces": ["wg0", "wg1"]}
    assert running.result("traffic.get", public_key=B, interface="wg1")["period"]["total_bytes"] == 0
    error = running.call("traffic.get", public_key=key("Q"))["error"]
    assert error["code"] == -32001 and error["data"] == {"public_key": key("Q")}
    error = running.call("traffic.get", public_key=A, interface="wg1")["error"]
    assert error["code"] == -32001


@pytest.mark.parametrize(
    ("method", "params", "names"),
    [
        ("traffic.get", {}, "public_key"),
        ("traffic.get", {"public_key": 5}, "public_key"),
        ("traffic.get", {"public_key": "x; rm -rf /"}, "public_key"),
        ("traffic.get", {"public_key": A, "interface": "../etc"}, "interface"),
        ("traffic.get", {"public_key": A, "interface": "a" * 10000}, "interface"),
        ("traffic.get", {"public_key": A, "interface": "wg0\u0000"}, "interface"),
        ("traffic.get", {"public_key": A, "fresh": "yes"}, "fresh"),
        ("traffic.list", {"sort": "size"}, "sort"),
        ("traffic.list", {"limit": 0}, "limit"),
        ("traffic.list", {"limit": 10001}, "limit"),
        ("traffic.list", {"limit": True}, "limit"),
        ("traffic.list", {"offset": -1}, "offset"),
        ("traffic.list", {"present_only": 1}, "present_only"),
        ("traffic.history", {"public_key": A, "granularity": "week"}, "granularity"),
        ("traffic.history", {"public_key": A, "limit": 1001}, "limit"),
        ("traffic.get", {"public_key": A, "bogus": 1}, "bogus"),
        ("traffic.reset", {"public_key": None}, "public_key"),
    ],
)
def test_invalid_params_name_the_param(running, method: str, params: dict, names: str) -> None:  # type: ignore[no-untyped-def,type-arg]
    error = running.raw({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})["error"]
    assert error["code"] == -32602
    assert names in error["message"]


def test_traffic_list(running) -> None:  # type: ignore[no-untyped-def]
    listing = running.result("traffic.list")
    assert listing["total"] == 4
    assert [(p["interface"], p["public_key"]) for p in listing["peers"]] == [
        ("wg0", A),
        ("wg1", C),
        ("wg0", B),
        ("wg1", B),
    ]
    assert [p["public_key"] for p in running.result("traffic.list", sort="public_key", limit=2)["peers"]] == [A, B]
    assert running.result("traffic.list", interface="wg1", offset=1)["peers"][0]["public_key"] == B
    assert running.result("traffic.list", sort="rx", limit=1)["peers"][0]["public_key"] == A


def test_history_includes_the_open_period(running) -> None:  # type: ignore[no-untyped-def]
    history = running.result("traffic.history", public_key=A)
    assert history["granularity"] == "period"
    assert history["buckets"][0]["total_bytes"] == 1100
    days = running.result("traffic.history", public_key=A, granularity="day", limit=3)
    assert days["buckets"][0]["total_bytes"] == 1100
    fresh_peer = running.result("traffic.history", public_key=C, interface="wg1")
    assert fresh_peer["buckets"][0]["total_bytes"] == 16


def test_reset_as_root_is_allowed_and_recorded(running) -> None:  # type: ignore[no-untyped-def]
    reset = running.result("traffic.reset", public_key=A)
    assert reset["removed"] == {"rx_bytes": 500, "tx_bytes": 600, "total_bytes": 1100}
    peer = running.result("traffic.get", public_key=A)
    assert peer["period"]["total_bytes"] == 0 and peer["lifetime"]["total_bytes"] == 1100


def test_protocol_errors(running) -> None:  # type: ignore[no-untyped-def]
    answers = running.raw_lines(
        [
            b"{not json",
            b"[]",
            json.dumps([{"jsonrpc": "2.0", "id": i, "method": "server.status"} for i in range(101)]).encode(),
            b'{"jsonrpc": "2.0", "id": 1, "method": "no.such"}',
            b'{"jsonrpc": "1.0", "id": 2, "method": "server.status"}',
            b'{"jsonrpc": "2.0", "id": 3, "method": "server.status", "params": 5}',
            b'"just a string"',
            b"\xff\xfe",
            b'{"jsonrpc": "2.0", "id": 4, "method": "traffic.list", "params": {"limit": NaN}}',
            b'{"jsonrpc": "2.0", "id": 5, "method": ["server.status"]}',
            b'{"jsonrpc": "2.0", "id": 6, "method": {"a": 1}, "params": {"fresh": true}}',
        ]
    )
    # Pipelined answers come back as they are ready, not necessarily in order.
    codes = sorted(json.loads(a)["error"]["code"] for a in answers)
    assert codes == sorted([-32700, -32600, -32600, -32601, -32600, -32602, -32600, -32700, -32700, -32600, -32600])
    by_id = {json.loads(a)["id"]: json.loads(a)["error"]["code"] for a in answers}
    assert (by_id[1], by_id[2], by_id[3]) == (-32601, -32600, -32602)  # readable ids are kept


def test_batch_notifications_and_pipelining(running) -> None:  # type: ignore[no-untyped-def]
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "traffic.get", "params": {"public_key": A}},
        {"jsonrpc": "2.0", "method": "server.status"},  # a notification: no answer
        {"jsonrpc": "2.0", "id": "b", "method": "no.such"},
        5,
    ]
    (answer,) = running.raw_lines([json.dumps(batch).encode()])
    responses = json.loads(answer)
    assert [r.get("id") for r in responses] == ["a", "b", None]
    assert "result" in responses[0] and responses[1]["error"]["code"] == -32601
    assert running.raw_lines([b'{"jsonrpc":"2.0","method":"server.status"}'], expect=0) == []
    many = [json.dumps({"jsonrpc": "2.0", "id": i, "method": "server.status"}).encode() for i in range(200)]
    ids = sorted(json.loads(a)["id"] for a in running.raw_lines(many))
    assert ids == list(range(200))


def test_oversized_line_is_refused_and_closed(running) -> None:  # type: ignore[no-untyped-def]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(running.socket)
        with contextlib.suppress(BrokenPipeError):
            sock.sendall(b"[" + b" " * (1024 * 1024) + b"]\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    answer = json.loads(data.split(b"\n")[0])
    assert answer["error"] == {"code": -32600, "message": "request too large"}
    assert running.result("server.status")["healthy"] is True


def test_line_of_exactly_the_limit_is_accepted(running) -> None:  # type: ignore[no-untyped-def]
    body = b'{"jsonrpc":"2.0","id":1,"method":"server.status"}'
    line = body + b" " * (1024 * 1024 - len(body))
    (answer,) = running.raw_lines([line])
    assert "result" in json.loads(answer)


def test_too_many_connections(running) -> None:  # type: ignore[no-untyped-def]
    held = []
    try:
        for _ in range(256):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(running.socket)
            held.append(sock)
        # The first 256 are served: one request on the first proves the server accepted them all.
        held[0].sendall(b'{"jsonrpc":"2.0","id":1,"method":"server.status"}\n')
        held[0].settimeout(10)
        assert b'"result"' in held[0].recv(65536)
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.settimeout(10)
        extra.connect(running.socket)
        refused = extra.recv(4096)
        assert json.loads(refused)["error"] == {"code": -32000, "message": "too many connections"}
        assert extra.recv(4096) == b""
        extra.close()
    finally:
        for sock in held:
            sock.close()
    assert running.result("server.status")["healthy"] is True


def test_socat_as_a_client(running) -> None:  # type: ignore[no-untyped-def]
    socat = shutil.which("socat")
    assert socat, "socat is installed by tests/run.sh"
    out = subprocess.run(
        [socat, "-", f"UNIX-CONNECT:{running.socket}"],
        input=b'{"jsonrpc":"2.0","id":1,"method":"server.status"}\n',
        capture_output=True,
        timeout=20,
        check=True,
    ).stdout
    assert json.loads(out)["result"]["healthy"] is True


def test_socket_is_0660(running) -> None:  # type: ignore[no-untyped-def]
    assert Path(running.socket).stat().st_mode & 0o777 == 0o660


def test_fresh_requests_share_one_tool_run(running, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    time.sleep(5.2)  # let the rate-limit window of the last sample pass: the rule is about elapsed time
    before = scripted_tool.calls
    request = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "traffic.get", "params": {"public_key": A, "fresh": True}}
    )
    results: list[bytes] = []

    def ask() -> None:
        results.extend(running.raw_lines([request.encode()]))

    threads = [threading.Thread(target=ask) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 100 and all(b'"result"' in r for r in results)
    assert scripted_tool.calls - before == 1
    running.raw_lines([request.encode()] * 20)  # within 5 s of that sample: no new run
    assert scripted_tool.calls - before == 1


def test_traffic_sample_joins_a_running_sample(running, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    (scripted_tool.dir / "sleep").write_text("1")
    before = scripted_tool.calls
    request = b'{"jsonrpc":"2.0","id":1,"method":"traffic.sample"}'
    answers = running.raw_lines([request] * 10)
    assert all(b'"sampled_at"' in a for a in answers)
    assert scripted_tool.calls - before == 1
    (scripted_tool.dir / "sleep").unlink()
    running.raw_lines([request])
    assert scripted_tool.calls - before == 2  # no rate limit on an explicit order


def test_idle_connections_are_closed(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path, env={"AWGD_TEST_IDLE_TIMEOUT": "1"}).start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(daemon.socket)
        sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"server.status"}\n')
        assert b'"result"' in sock.recv(65536)
        sock.sendall(b'{"jsonrpc":"2.0"')  # a partial line is not a request: the timer keeps running
        assert sock.recv(65536) == b""  # closed by the daemon
    assert daemon.result("server.status")["healthy"] is True


def test_in_flight_requests_are_answered_at_shutdown(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path).start()
    (scripted_tool.dir / "sleep").write_text("2")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(daemon.socket)
        calls = scripted_tool.calls
        sock.sendall(b'{"jsonrpc":"2.0","id":9,"method":"traffic.sample"}\n')
        while scripted_tool.calls == calls:  # wait until the sample is really under way
            time.sleep(0.05)
        daemon.process.send_signal(signal.SIGTERM)
        answer = json.loads(sock.recv(65536))
    assert answer["id"] == 9 and "sampled_at" in answer["result"]
    assert daemon.process.wait(timeout=30) == 0


def test_fresh_finds_a_peer_added_since_the_last_sample(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path).start()
    new = key("N")
    scripted_tool.set(dump({"wg0": {A: (1, 1), new: (0, 0)}}))
    assert daemon.call("traffic.get", public_key=new)["error"]["code"] == -32001  # not sampled yet
    time.sleep(5.2)  # past the rate limit of the start-up sample: the rule is about elapsed time
    peer = daemon.result("traffic.get", public_key=new, fresh=True)
    assert peer["present"] is True and peer["interface"] == "wg0"


# ---- rpc.discover ------------------------------------------------------------------------------

# A valid value of each param a method may require, for the calls that leave one out.
VALID = {
    "public_key": A,
    "interface": "wg0",
    "new_public_key": "N" * 42 + "A=",
    "users": [],
    "as_of": "2026-12-07T00:00:00Z",
}


def test_rpc_discover_describes_the_daemon_it_runs_in(running) -> None:  # type: ignore[no-untyped-def]
    from awgd_client import Client

    found = running.result("rpc.discover")
    assert found["openrpc"].startswith("1.2") and found["info"]["version"] == "0.1.0"
    methods = {m["name"]: m for m in found["methods"]}
    root = Path(__file__).resolve().parent.parent
    if (root / "docs" / "API.md").exists():  # the docs name exactly these methods
        documented = re.findall(r"^### `([a-z_.]+)`", (root / "docs" / "API.md").read_text(), re.MULTILINE)
        assert sorted(documented) == sorted(methods)
    assert methods["plan.set"]["x-admin"] is True and methods["traffic.get"]["x-admin"] is False
    assert methods["fleet.sync"]["x-fleet"] is True and methods["fleet.sync"]["x-admin"] is False
    with Client(running.socket) as client:
        assert client.discover() == found
    # What the document says is required is what the daemon refuses without it, and nothing else.
    for name, method in methods.items():
        if name in ("events.subscribe", "rpc.discover"):
            continue  # a subscription keeps the connection; discover has no params
        required = [p["name"] for p in method["params"] if p["required"]]
        for param in method["params"]:
            given = {p: VALID[p] for p in required if p != param["name"]}
            answer = running.call(name, **given)
            missing = "error" in answer and f"{param['name']} is required" in answer["error"]["message"]
            assert missing == param["required"], (name, param["name"], answer)
            if param["required"]:
                assert answer["error"]["code"] == -32602
