"""`awgctl` as a subprocess against a real daemon: tables, --json, exit codes, colour."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ScriptedTool, dump, key
from daemon import ROOT
from hypothesis import given
from hypothesis import strategies as st

from awgd_client import History
from awgd_client.awgctl import Style, render_history
from awgd_client.formatting import BAR_WIDTH, bar

A, B, C = key("A"), "B" * 20 + "x" * 22 + "A=", key("C")  # B and C share no 8-character prefix


def awgctl(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client")]),
        "NO_COLOR": "",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "awgd_client", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        input=stdin,
        check=False,
    )


@pytest.fixture
def daemon(daemons, scripted_tool: ScriptedTool, tmp_path: Path):  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"awg0": {A: (0, 0), B: (0, 0)}, "wg1": {C: (0, 0)}}))
    # Names where the operator's tools keep them: Amnezia's clientsTable, a config comment.
    table = tmp_path / "clientsTable"
    table.write_text(json.dumps([{"clientId": A, "userData": {"clientName": "Phone", "creationDate": "x"}}]))
    (tmp_path / "awg0.conf").write_text(
        f"[Interface]\nListenPort = 51820\n\n# Name = Laptop\n[Peer]\nPublicKey = {B}\n"
    )
    names = {"names_file": str(table), "config_dir": str(tmp_path)}
    running = daemons(scripted_tool.path, wireguard=names).start()
    scripted_tool.set(dump({"awg0": {A: (1536, 3 * 1024**2), B: (10, 20)}, "wg1": {C: (5, 5)}}))
    running.result("traffic.sample")
    return running


def test_status_table(daemon) -> None:  # type: ignore[no-untyped-def]
    result = awgctl("status", "--socket", daemon.socket)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "awgd 0.1.0: healthy"
    header = next(line for line in lines if line.startswith("INTERFACE"))
    awg0 = next(line for line in lines if line.startswith("awg0"))
    assert header.split() == ["INTERFACE", "STATE", "PORT", "PEERS", "ONLINE", "STALLED", "RX", "TX"]
    assert awg0.split() == ["awg0", "up", "51820", "2", "2", "0", "1.5", "KiB", "3.0", "MiB"]
    assert len(header) == len(awg0)  # right-aligned columns end together
    assert "\033[" not in result.stdout


def test_peers_table_and_json(daemon) -> None:  # type: ignore[no-untyped-def]
    result = awgctl("--socket", daemon.socket, "peers")
    assert result.returncode == 0
    rows = [line for line in result.stdout.splitlines() if line.startswith(("AAAA", "BBBB", "CCCC"))]
    assert [r[:4] for r in rows] == ["AAAA", "BBBB", "CCCC"]  # by total, descending
    assert "198.51.0.2:50002" in rows[0] and "3.0 MiB" in rows[0]
    assert [r.split()[1] for r in rows] == ["Phone", "Laptop", "-"]
    header = result.stdout.splitlines()[2]
    assert header.split()[:7] == ["KEY", "LABEL", "INTERFACE", "STATE", "PLAN", "HANDSHAKE", "ENDPOINT"]
    assert result.stdout.splitlines()[-1].startswith("RX: received from the peer (its upload)")
    assert (
        len(
            {
                line.index("INTERFACE") if "INTERFACE" in line else line.index("awg0" if "awg0" in line else "wg1")
                for line in [header, *rows]
            }
        )
        == 1
    )  # aligned whatever the key
    raw = awgctl("peers", "--json", "--socket", daemon.socket, "--sort", "public_key", "--interface", "awg0")
    listing = json.loads(raw.stdout)
    assert listing["total"] == 2 and [p["public_key"] for p in listing["peers"]] == [A, B]
    assert [p["label"] for p in listing["peers"]] == ["Phone", "Laptop"]


def test_peer_history_sample_and_prefixes(daemon) -> None:  # type: ignore[no-untyped-def]
    peer = awgctl("peer", A[:10], "--socket", daemon.socket)
    assert peer.returncode == 0, peer.stderr
    assert f"peer       {A}" in peer.stdout and "interface  awg0" in peer.stdout
    assert "label      Phone" in peer.stdout
    assert "PERIOD START" in peer.stdout
    as_json = json.loads(awgctl("peer", A, "--json", "--socket", daemon.socket).stdout)
    assert as_json["period"]["total_bytes"] == 1536 + 3 * 1024**2
    days = awgctl("history", A[:8], "--days", "--limit", "2", "--socket", daemon.socket)
    assert days.returncode == 0 and "DAY START" in days.stdout
    history = json.loads(awgctl("--json", "history", A, "--socket", daemon.socket).stdout)
    assert history["granularity"] == "period"
    sample = awgctl("sample", "--socket", daemon.socket)
    assert sample.returncode == 0 and sample.stdout.startswith("sampled at ") and "3 peers" in sample.stdout


def visible_widths(text: str) -> list[int]:
    return [len(line) for line in text.splitlines()]


def test_the_peers_table_fits_the_terminal(daemon) -> None:  # type: ignore[no-untyped-def]
    daemon.result("peer.update", interface="awg0", public_key=A, label="Dave's phone, the one with the cracked screen")
    everything = awgctl("--socket", daemon.socket, "peers")  # a pipe without $COLUMNS: every column
    assert max(visible_widths(everything.stdout)) > 120 and "ENDPOINT" in everything.stdout
    narrow = awgctl("--socket", daemon.socket, "peers", env={"COLUMNS": "80"})
    assert narrow.returncode == 0 and max(visible_widths(narrow.stdout)) <= 80, narrow.stdout
    header = next(line for line in narrow.stdout.splitlines() if line.startswith("KEY"))
    for kept in ("KEY", "LABEL", "STATE", "RX", "TX"):
        assert kept in header.split()
    assert "ENDPOINT" not in header and "LIFETIME" not in header
    phone = next(line for line in narrow.stdout.splitlines() if line.startswith(A[:12]))
    assert "Dave's" in phone and "…" in phone  # the label cut, not dropped
    tiny = awgctl("--socket", daemon.socket, "peers", env={"COLUMNS": "20"})  # 80 at least
    assert max(visible_widths(tiny.stdout)) <= 80 and "KEY" in tiny.stdout
    wide = awgctl("--socket", daemon.socket, "peers", "--wide", env={"COLUMNS": "80"})
    assert "ENDPOINT" in wide.stdout and "cracked screen" in wide.stdout
    one = awgctl("--socket", daemon.socket, "peers", "-i", "wg1")
    assert "; 1 peer\n" in one.stdout


def test_a_wrong_interface_names_the_real_ones(daemon) -> None:  # type: ignore[no-untyped-def]
    listing = awgctl("--socket", daemon.socket, "peers", "-i", "wg0")
    assert listing.returncode == 1
    assert listing.stderr.strip() == "awgctl: invalid params: unknown interface 'wg0': this server has awg0, wg1"
    peer = awgctl("--socket", daemon.socket, "peer", A, "-i", "wg0")
    assert peer.returncode == 1 and "this server has awg0, wg1" in peer.stderr
    block = awgctl("--socket", daemon.socket, "peer", "block", A, "-i", "wg0")
    assert block.returncode == 1 and "unknown interface 'wg0'" in block.stderr
    assert daemon.result("traffic.get", public_key=A)["blocked"] == []
    error = daemon.call("traffic.history", public_key=A, interface="wg0")["error"]
    assert error["code"] == -32602 and error["data"] == {"interface": "wg0", "interfaces": ["awg0", "wg1"]}
    from awgd_client import Client, InvalidParams, UnknownInterface

    with Client(daemon.socket) as client, pytest.raises(UnknownInterface) as raised:
        client.traffic_list(interface="wg0")
    assert isinstance(raised.value, InvalidParams) and raised.value.interfaces == ["awg0", "wg1"]


def test_a_string_of_44_characters_that_is_not_a_key(daemon) -> None:  # type: ignore[no-untyped-def]
    not_a_key = "x" * 43 + "!"
    given = awgctl("--socket", daemon.socket, "peer", not_a_key)
    assert given.returncode == 2
    assert "is not a public key: it has 44 characters, but a key is the base64 of 32 bytes" in given.stderr
    error = daemon.call("traffic.get", public_key=not_a_key)["error"]
    assert error["code"] == -32602 and "is not a key: it has 44 characters" in error["message"]
    short = daemon.call("traffic.get", public_key="abc")["error"]
    assert "44 characters (this has 3)" in short["message"]


def test_plan_set_takes_sizes_percents_and_plain_dates(daemon) -> None:  # type: ignore[no-untyped-def]
    zone = daemon.result("server.status")["timezone"]
    done = awgctl(
        "--socket", daemon.socket, "plan", "set", A, "--limit", "10GB", "--warn", "80%,95 %", "--expires", "2027-01-31"
    )
    assert done.returncode == 0, done.stderr
    assert "; -" not in done.stdout and "not blocked" in done.stdout and "expires 2027-01-31 00:00" in done.stdout
    plan = daemon.result("traffic.get", public_key=A)["plan"]
    assert plan["limit_bytes"] == 10 * 10**9 and plan["warn_at"] == [0.8, 0.95]
    from datetime import datetime
    from zoneinfo import ZoneInfo

    assert datetime.fromisoformat(plan["expires_at"]) == datetime(2027, 1, 31, tzinfo=ZoneInfo(zone))
    binary = awgctl("--socket", daemon.socket, "plan", "set", A, "--limit", "10GiB", "--warn", "0.5")
    assert binary.returncode == 0 and daemon.result("traffic.get", public_key=A)["plan"]["limit_bytes"] == 10 * 2**30
    for bad in (["--warn", "80"], ["--warn", "0%"], ["--expires", "31.01.2027"], ["--limit", "10 gigs"]):
        refused = awgctl("--socket", daemon.socket, "plan", "set", A, *bad)
        assert refused.returncode == 2 and refused.stderr.startswith("awgctl: "), (bad, refused.stderr)
        assert "Traceback" not in refused.stderr


def test_events_name_peers_and_sizes(daemon) -> None:  # type: ignore[no-untyped-def]
    daemon.result("peer.block", interface="awg0", public_key=A)
    daemon.result("plan.set", interface="awg0", public_key=B, limit_bytes=20)  # B has used 30: over
    lines = awgctl("--socket", daemon.socket, "events").stdout.splitlines()
    blocked = next(line for line in lines if "peer.blocked" in line and A[:12] in line)
    assert '"Phone" (' + A[:12] + "…)" in blocked and A not in blocked
    exceeded = next(line for line in lines if "quota.exceeded" in line)
    assert "limit_bytes=20 B" in exceeded and '"Laptop"' in exceeded


def test_reset_confirms_unless_yes(daemon) -> None:  # type: ignore[no-untyped-def]
    refused = awgctl("reset", A, "--socket", daemon.socket, stdin="y\n")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = awgctl("reset", A[:9], "--yes", "--socket", daemon.socket)
    assert done.returncode == 0 and "removed 1.5 KiB received, 3.0 MiB sent" in done.stdout
    assert daemon.result("traffic.get", public_key=A)["period"]["total_bytes"] == 0


def test_exit_codes(daemon, tmp_path: Path, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    missing = awgctl("status", "--socket", str(tmp_path / "nope.sock"))
    assert missing.returncode == 3
    assert missing.stderr.strip() == f"awgctl: awgd is not answering on {tmp_path / 'nope.sock'}: is awgd running?"
    assert awgctl("--socket", daemon.socket, "peer", "short").returncode == 2
    assert awgctl("--socket", daemon.socket, "bogus").returncode == 2
    assert awgctl("--socket", daemon.socket).returncode == 2
    unknown = awgctl("--socket", daemon.socket, "peer", key("Q"))
    assert unknown.returncode == 1 and unknown.stderr.startswith("awgctl: unknown peer")
    assert awgctl("--socket", daemon.socket, "peer", "QQQQQQQQQ").returncode == 1
    scripted_tool.set("", "Unable to list interfaces: Permission denied\n", 1)
    failed = awgctl("--socket", daemon.socket, "sample")
    assert failed.returncode == 1 and "sampling failed" in failed.stderr
    unhealthy = awgctl("--socket", daemon.socket, "status")
    assert unhealthy.returncode == 1 and "UNHEALTHY" in unhealthy.stdout and "last error" in unhealthy.stdout
    assert awgctl("--socket", daemon.socket, "status", "--json").returncode == 1
    assert awgctl("--version").stdout.strip() == "awgctl 0.1.0"


def test_environment_socket(daemon) -> None:  # type: ignore[no-untyped-def]
    assert awgctl("status", env={"AWGD_SOCKET": daemon.socket}).returncode == 0


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux's script for a pty")
def test_colour_only_on_a_terminal_and_never_with_no_color(daemon) -> None:  # type: ignore[no-untyped-def]
    command = f"{sys.executable} -m awgd_client status --socket {daemon.socket}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "client")])}
    env.pop("NO_COLOR", None)
    on_tty = subprocess.run(
        ["script", "-qec", command, "/dev/null"], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert "\033[32mhealthy\033[0m" in on_tty.stdout
    env["NO_COLOR"] = "1"
    no_color = subprocess.run(
        ["script", "-qec", command, "/dev/null"], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert "healthy" in no_color.stdout and "\033[" not in no_color.stdout


def test_rates_sort_peers_and_history_draws_bars(daemon, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    # A has the larger total; only B moves in the last sample, by 6 MiB: B leads by rate.
    before = time.monotonic()
    daemon.result("traffic.sample")
    scripted_tool.set(
        dump({"awg0": {A: (1536, 3 * 1024**2), B: (10 + 2 * 1024**2, 20 + 4 * 1024**2)}, "wg1": {C: (5, 5)}})
    )
    daemon.result("traffic.sample")
    after = time.monotonic()
    listing = json.loads(awgctl("peers", "--json", "--sort", "rate", "--socket", daemon.socket).stdout)
    assert [p["public_key"] for p in listing["peers"]] == [B, A, C]  # ties (0) by key
    rate = listing["peers"][0]["rate"]
    moved = 6 * 1024**2
    # Over the interval between the two samples (at most after - before): both directions
    # over the same one, tx having moved twice what rx did.
    rx_rate, tx_rate = rate["rx_bytes_per_second"], rate["tx_bytes_per_second"]
    assert rx_rate + tx_rate >= moved / (after - before) - 2
    assert abs(tx_rate - 2 * rx_rate) <= 2
    assert listing["peers"][1]["rate"] == {"rx_bytes_per_second": 0, "tx_bytes_per_second": 0}
    table = awgctl("peers", "--sort", "rate", "--socket", daemon.socket).stdout
    assert table.splitlines()[2].split()[-1] == "RATE" and table.splitlines()[3].startswith("BBBB")
    assert table.splitlines()[3].endswith("/s") and not table.splitlines()[3].endswith(" 0 B/s")
    # Bars: plain '#' off a terminal (as here), Unicode blocks on one.
    plain = awgctl("history", B, "--days", "--socket", daemon.socket).stdout
    today = next(line for line in plain.splitlines() if line[:4].isdigit())
    assert today.endswith("#" * BAR_WIDTH) and "█" not in plain
    history = History.from_json(daemon.result("traffic.history", public_key=B, granularity="day"))
    drawn = render_history(history, Style(True))
    assert "█" * BAR_WIDTH in drawn


@given(st.integers(0, 10**12), st.integers(1, 10**12), st.integers(1, 80))
def test_a_bar_is_as_long_as_its_share(value: int, peak: int, width: int) -> None:
    value = min(value, peak)
    plain, blocks = bar(value, peak, width, unicode=False), bar(value, peak, width)
    if value == 0:
        assert plain == blocks == ""
        return
    assert set(plain) == {"#"} and 1 <= len(plain) <= width
    assert abs(len(plain) - width * value / peak) <= 0.5 or len(plain) == 1
    cells = blocks.count("█") + (0 if blocks[-1] == "█" else 1)
    assert 1 <= cells <= width and abs(blocks.count("█") - width * value / peak) <= 1
    assert bar(peak, peak, width) == "█" * width
