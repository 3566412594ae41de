"""The daemon's life: config errors, systemd notifications, signals, reload, tool faults."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from booking import booked_total
from conftest import PRIVATE_KEY, ScriptedTool, dump, key
from daemon import ROOT, Awgd, write_config

A, B = key("A"), key("B")


def awgd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client")])}
    return subprocess.run(
        [sys.executable, "-m", "awgd", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def ledger_period_total(path: Path, public_key: str) -> int:
    """Every byte the ledger booked to any period for this key, read through the ledger."""
    return booked_total(path, public_key)


# ---- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "key_named", "reason"),
    [
        ({"wireguard": {"colour": "red"}}, "wireguard.colour", "unknown key"),
        ({"nonsense": {}}, "nonsense", "unknown section"),
        ({"wireguard": {"online_window": "3 minutes"}}, "wireguard.online_window", "must be an integer"),
        ({"wireguard": {"online_window": True}}, "wireguard.online_window", "must be an integer"),
        ({"wireguard": {"interfaces": "wg0"}}, "wireguard.interfaces", "list of strings"),
        ({"wireguard": {"tool": "awg; reboot"}}, "wireguard.tool", "absolute path"),
        ({"sampling": {"schedule": "every minute"}}, "sampling.schedule", "bad cron expression"),
        ({"periods": {"schedule": "61 * * * *"}}, "periods.schedule", "bad cron expression"),
        ({"periods": {"timezone": "Mars/Olympus"}}, "periods.timezone", "unknown timezone"),
        ({"rpc": {"socket": "awgd.sock"}}, "rpc.socket", "absolute path"),
        ({"ledger": {"day_retention_days": 0}}, "ledger.day_retention_days", ">= 31"),
        ({"events": {"retention_days": 7}}, "events.retention_days", ">= 30"),
        ({"plans": {"fast_sampling_seconds": 0}}, "plans.fast_sampling_seconds", "greater than 0"),
    ],
)
def test_bad_config_exits_78_naming_the_key(tmp_path: Path, sections: dict, key_named: str, reason: str) -> None:  # type: ignore[type-arg]
    config = tmp_path / "awgd.toml"
    write_config(config, sections)
    for args in (("--config", str(config)), ("--config", str(config), "--check-config")):
        result = awgd_cli(*args)
        assert result.returncode == 78
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and key_named in lines[0] and reason in lines[0]
        assert "Traceback" not in result.stderr


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    config = tmp_path / "awgd.toml"
    config.write_text("[wireguard\n")
    assert awgd_cli("--config", str(config)).returncode == 78
    assert awgd_cli("--config", str(tmp_path / "missing.toml")).returncode == 78


def test_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    config = tmp_path / "awgd.toml"
    write_config(config, {"sampling": {"schedule": "* * * * * */5"}, "periods": {"timezone": "Asia/Tokyo"}})
    result = awgd_cli("--config", str(config), "--check-config")
    assert result.returncode == 0
    import tomllib

    effective = tomllib.loads(result.stdout)
    assert effective["sampling"]["schedule"] == "* * * * * */5"
    assert effective["periods"] == {"schedule": "0 0 1 * *", "timezone": "Asia/Tokyo"}
    assert effective["wireguard"]["online_window"] == 180
    assert effective["rpc"]["socket"] == "/run/awgd/awgd.sock"


def test_version() -> None:
    result = awgd_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "awgd 0.1.0"


# ---- systemd notifications and signals ------------------------------------------------------


def test_ready_status_stopping_in_order(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1), B: (2, 2)}, "wg1": {}}))
    daemon = daemons(scripted_tool.path).start()
    assert daemon.notify is not None
    status = daemon.notify.wait_for("STATUS=")
    assert status.startswith("STATUS=watching 2 interfaces, 2 peers; last sample ")
    assert daemon.stop() == 0
    lines = daemon.notify.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert not Path(daemon.socket).exists()


def test_watchdog_pings_stop_when_the_loop_is_stopped(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path, env={"WATCHDOG_USEC": "400000"})
    daemon.start()
    assert daemon.notify is not None and daemon.process is not None
    daemon.notify.wait_for("WATCHDOG=1")
    daemon.notify.wait_for("WATCHDOG=1", timeout=2)
    # A hung tool must not stop the pings: the loop stays free while the tool hangs.
    (scripted_tool.dir / "sleep").write_text("3")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(daemon.socket)
        sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"traffic.sample"}\n')
        daemon.notify.wait_for("WATCHDOG=1", timeout=2)
        daemon.notify.wait_for("WATCHDOG=1", timeout=2)
    (scripted_tool.dir / "sleep").unlink()
    daemon.process.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        time.sleep(1.5)  # the absence of pings can only be observed over time
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    silent = [
        t for t, line in daemon.notify.messages if line == "WATCHDOG=1" and stopped_at + 0.1 < t < stopped_at + 1.4
    ]
    assert silent == []
    daemon.notify.wait_for("WATCHDOG=1", timeout=3)  # and they resume


def test_sigterm_books_a_last_sample(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}))
    daemon = daemons(scripted_tool.path).start()
    scripted_tool.set(dump({"wg0": {A: (350, 400)}}))  # traffic after the last scheduled sample
    calls = scripted_tool.calls
    assert daemon.stop(signal.SIGTERM) == 0
    assert scripted_tool.calls == calls + 1
    assert ledger_period_total(daemon.ledger, A) == 550
    assert "stopped" in daemon.log_text()


def test_sigint_is_a_clean_stop_too(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path).start()
    assert daemon.stop(signal.SIGINT) == 0


def test_restart_after_sigkill_counts_nothing_twice(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}))
    daemon = daemons(scripted_tool.path).start()
    scripted_tool.set(dump({"wg0": {A: (300, 100)}}))
    daemon.result("traffic.sample")
    daemon.stop(signal.SIGKILL)
    scripted_tool.set(dump({"wg0": {A: (500, 100)}}))
    daemon.start()
    assert daemon.result("traffic.get", public_key=A)["period"]["total_bytes"] == 400


def test_second_daemon_on_the_same_socket_refuses(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    first = daemons(scripted_tool.path).start()
    second = Awgd(first.dir, scripted_tool.path)  # same config, same socket, same ledger
    calls = scripted_tool.calls
    second.start(wait_ready=False)
    assert second.process is not None
    assert second.process.wait(timeout=30) == 1
    assert "another awgd is already answering" in first.log_text()
    assert scripted_tool.calls == calls  # it refused before sampling anything
    assert first.result("server.status")["healthy"] is True


def test_stale_socket_file_is_replaced(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(daemon.socket)
    stale.close()  # the file stays, nobody listens
    daemon.start()
    assert daemon.result("server.status")["healthy"] is True


def test_sighup_reloads_and_rejects_a_bad_config(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}, "wg1": {B: (1, 1)}}))
    daemon = daemons(scripted_tool.path).start()
    assert daemon.notify is not None and daemon.process is not None
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace("[wireguard]", '[wireguard]\ninterfaces = ["wg0", "wg9"]'))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.notify.wait_for("RELOADING=1")
    daemon.notify.wait_for("READY=1")
    status = daemon.result("server.status")
    names = {i["name"]: i for i in status["interfaces"]}
    assert names["wg9"] == {**names["wg9"], "exists": False, "up": False}
    daemon.result("traffic.sample")
    status = daemon.result("server.status")
    assert {i["name"] for i in status["interfaces"]} == {"wg0", "wg9"}
    assert status["healthy"] is False  # a watched interface is missing
    daemon.config.write_text(text + "\n[bogus]\n")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.notify.wait_for("RELOADING=1")
    daemon.notify.wait_for("READY=1")
    assert "reload rejected, the old config stays: bogus: unknown section" in daemon.log_text()
    assert {i["name"] for i in daemon.result("server.status")["interfaces"]} == {"wg0", "wg9"}


def test_logs_hold_no_key_or_endpoint(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path).start()
    scripted_tool.set(dump({"wg0": {A: (5, 1)}}))
    daemon.result("traffic.sample")
    daemon.result("traffic.get", public_key=A, fresh=True)
    daemon.stop()
    log = daemon.log_text()
    assert "info: sample:" in log
    for secret in (PRIVATE_KEY, A, "198.51.0."):
        assert secret not in log


# ---- tool faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing", "not found"),
        ("exit1", "awg exited with status 1: Unable to list interfaces: Permission denied"),
        ("hang", "timed out after 1 s"),
        ("garbage", "cannot be parsed: line 3"),
    ],
)
def test_tool_faults(daemons, scripted_tool: ScriptedTool, setup: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}))
    daemon = daemons(scripted_tool.path, wireguard={"tool_timeout": 1}).start()
    hidden = scripted_tool.path.with_suffix(".away")
    if setup == "missing":
        scripted_tool.path.rename(hidden)
    elif setup == "exit1":
        scripted_tool.set("", "Unable to list interfaces: Permission denied\n", 1)
    elif setup == "hang":
        (scripted_tool.dir / "sleep").write_text("30")
    else:
        scripted_tool.set(dump({"wg0": {A: (999, 999)}}) + "wg0\tnot a peer line\n")
    error = daemon.call("traffic.sample")["error"]
    assert error["code"] == -32003 and reason in error["data"]["reason"]
    status = daemon.result("server.status")
    assert status["healthy"] is False
    assert reason in status["sampler"]["last_error"] and status["sampler"]["consecutive_failures"] == 1
    assert ledger_period_total(daemon.ledger, A) == 0  # untouched
    # Reads do not wait for the broken tool.
    assert daemon.result("traffic.get", public_key=A)["session"]["rx_bytes"] == 100
    if hidden.exists():
        hidden.rename(scripted_tool.path)
    (scripted_tool.dir / "sleep").unlink(missing_ok=True)
    scripted_tool.set(dump({"wg0": {A: (160, 130)}}))
    daemon.result("traffic.sample")
    assert daemon.result("traffic.get", public_key=A)["period"]["total_bytes"] == 90
    assert daemon.result("server.status")["healthy"] is True


def test_partial_failure_and_counter_reset(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (100, 100)}, "wg1": {B: (50, 50)}}))
    daemon = daemons(scripted_tool.path).start()
    scripted_tool.set(dump({"wg1": {B: (70, 50)}}), "Unable to access interface wg0: Permission denied\n", 0)
    daemon.result("traffic.sample")
    peer = daemon.result("traffic.get", public_key=A)
    assert peer["present"] is True  # not read is not absent
    scripted_tool.set(dump({"wg0": {A: (30, 10)}, "wg1": {B: (70, 50)}}))  # wg0's counters reset
    daemon.result("traffic.sample")
    assert daemon.result("traffic.get", public_key=A)["period"]["total_bytes"] == 40
    assert daemon.result("traffic.get", public_key=B)["period"]["total_bytes"] == 20


def test_a_lasting_tool_warning_is_logged_once(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    warning = "WARNING: Error loading config file: /root/.docker/config.json: permission denied\n"
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}), warning, 0)
    daemon = daemons(scripted_tool.path).start()
    for _ in range(3):
        daemon.result("traffic.sample")
    assert daemon.log_text().count("Error loading config file") == 1
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}), "Unable to access interface wg1: Permission denied\n", 0)
    daemon.result("traffic.sample")
    daemon.result("traffic.sample")
    assert daemon.log_text().count("interface wg1 not read") == 1
    scripted_tool.set(dump({"wg0": {A: (100, 100)}}), warning, 0)  # back: a new episode, logged again
    daemon.result("traffic.sample")
    assert daemon.log_text().count("Error loading config file") == 2


def test_hung_tool_does_not_delay_reads(daemons, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"wg0": {A: (1, 1)}}))
    daemon = daemons(scripted_tool.path, wireguard={"tool_timeout": 5}).start()
    (scripted_tool.dir / "sleep").write_text("4")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(daemon.socket)
        sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"traffic.sample"}\n')
        started = time.monotonic()
        daemon.result("server.status")
        daemon.result("traffic.get", public_key=A)
        assert time.monotonic() - started < 2
