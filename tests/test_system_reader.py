"""Running the tool for real: subprocess limits, partial failures, `ip`, the boot id."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from conftest import CAPTURES, ScriptedTool, prefix_without

from awgd.ip_link import Link, parse_ip_link
from awgd.system_reader import (
    BOOT_ID_ENV,
    SamplingError,
    interpret_dump,
    read_boot_id,
    read_system,
    split_dump_and_links,
    tool_candidates,
)
from awgd.tool_runner import ToolError, ToolOutput, run_command


def capture(name: str) -> ToolOutput:
    found = next(c for c in CAPTURES if c.name == name)
    return ToolOutput(found.returncode, found.stdout, found.stderr)


# ---- the tool's exit status and stderr (docs/FORMAT.md, "Exit status and standard error") --------


def test_partial_permission_reads_one_and_names_the_others() -> None:
    interfaces, unread, warnings = interpret_dump("awg", capture("err.partial-permission"))
    assert [i.name for i in interfaces] == ["awgrg1"]
    assert unread == {"awgrg2", "awgrg3"}
    assert "interface awgrg3 not read: Permission denied" in warnings


def test_protocol_error_on_one_interface_is_partial() -> None:
    interfaces, unread, _ = interpret_dump("awg", capture("awg-1.0.20250901.all-awgparams"))
    assert {i.name for i in interfaces} == {"awgrg1", "awgrg2"}
    assert unread == {"awgrg3"}


def test_no_interfaces_is_an_empty_successful_read() -> None:
    assert interpret_dump("awg", capture("err.no-interfaces")) == ((), frozenset(), ())


@pytest.mark.parametrize("name", ["err.permission-denied", "err.no-such-interface"])
def test_nonzero_exit_is_a_failed_sample(name: str) -> None:
    with pytest.raises(SamplingError, match=r"awg exited with status 1: Unable to access interface"):
        interpret_dump("awg", capture(name))


def test_garbage_output_is_a_failed_sample_naming_the_line() -> None:
    with pytest.raises(SamplingError, match=r"cannot be parsed: line 1: "):
        interpret_dump("awg", ToolOutput(0, b"hello world\n", b""))


def test_reasons_from_stderr_are_cut_and_cleaned() -> None:
    noisy = ToolOutput(1, b"", b"\x1b[31m" + b"x" * 5000 + b"\n")
    with pytest.raises(SamplingError) as caught:
        interpret_dump("awg", noisy)
    assert len(str(caught.value)) < 300 and "\x1b" not in str(caught.value)


# ---- ip -o link show ------------------------------------------------------------------------

IP_OUTPUT = (
    "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT\\    link/loopback 00:00\n"
    "7: awg0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 qdisc fq_codel state UNKNOWN mode DEFAULT\\    link/none \n"
    "9: wg1: <POINTOPOINT,NOARP> mtu 1420 qdisc noop state DOWN mode DEFAULT group default qlen 500\\    link/none\n"
    "12: veth0@if11: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP\\    link/ether aa\n"
    "garbage line\n"
)


def test_parse_ip_link() -> None:
    assert parse_ip_link(IP_OUTPUT) == {
        "lo": Link(1, True, "noqueue"),
        "awg0": Link(7, True, "fq_codel"),  # the root qdisc: awgd's speed limits make it htb
        "wg1": Link(9, False, "noop"),
        "veth0": Link(12, True, "noqueue"),
    }


def test_parse_real_ip_output() -> None:
    output = asyncio.run(run_command(["ip", "-o", "link", "show"], 5))
    links = parse_ip_link(output.stdout.decode())
    assert links["lo"].ifindex == 1 and links["lo"].up and links["lo"].qdisc is not None


# ---- subprocess limits ------------------------------------------------------------------


def test_missing_command() -> None:
    with pytest.raises(ToolError, match="no-such-tool-here: not found"):
        asyncio.run(run_command(["/nonexistent/no-such-tool-here"], 5))


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sh -c 'echo $$ > {pidfile}; exec sleep 60' & wait"
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"timed out after 0\.5 s"):
        asyncio.run(run_command(["sh", "-c", script], 0.5))
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the kill is delivered; reaping by init may take a moment
            os.kill(child, 0)
            time.sleep(0.05)


def test_output_is_bounded() -> None:
    with pytest.raises(ToolError, match="output exceeds 1000000 bytes"):
        asyncio.run(run_command(["sh", "-c", "yes | head -c 5000000"], 10, max_output=1_000_000))


def test_tool_that_exits_but_leaves_stdout_open() -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match="exited but left its output open"):
        asyncio.run(run_command(["sh", "-c", "echo partial; sleep 30 &"], 10))
    assert time.monotonic() - started < 5


def test_stdout_and_stderr_are_kept_apart() -> None:
    output = asyncio.run(run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], 5))
    assert output == ToolOutput(3, b"out\n", b"err\n")


# ---- read_system with a scripted tool ------------------------------------------------------


def test_read_system_with_a_scripted_tool(scripted_tool: ScriptedTool, tmp_path: Path) -> None:
    scripted_tool.play(next(c for c in CAPTURES if c.name == "err.partial-permission"))
    reading = asyncio.run(read_system([str(scripted_tool.path)], [], 5))
    assert reading.tool == "awg"
    assert [i.name for i in reading.interfaces] == ["awgrg1"]
    assert reading.unread == {"awgrg2", "awgrg3"}
    assert reading.links is not None and "lo" in reading.links
    assert scripted_tool.calls == 1
    assert (scripted_tool.dir / "calls").read_text() == "show all dump\n"


def test_read_system_through_an_exec_prefix(scripted_tool: ScriptedTool, tmp_path: Path) -> None:
    # A prefix that runs the command somewhere else, as `docker exec amnezia-awg` does.
    prefix = tmp_path / "inside"
    prefix.write_text(f'#!/bin/sh\nPATH="{scripted_tool.dir}:$PATH" exec "$@"\n')
    prefix.chmod(0o755)
    scripted_tool.play(next(c for c in CAPTURES if c.name == "awg-3.1.20260812.all"))
    reading = asyncio.run(read_system(tool_candidates("auto", [str(prefix)]), [str(prefix)], 5))
    assert reading.tool == "awg"
    assert {i.name for i in reading.interfaces} == {"awgrc", "awgr0"}


def test_auto_falls_back_to_wg_through_a_prefix(tmp_path: Path) -> None:
    wg = ScriptedTool(tmp_path / "wgonly", name="wg")
    wg.play(next(c for c in CAPTURES if c.name == "wg-1.0.20210914.all"))
    prefix = tmp_path / "inside"
    prefix.write_text(f'#!/bin/sh\nPATH="{wg.dir}:/usr/bin:/bin" exec "$@"\n')
    prefix.chmod(0o755)
    reading = asyncio.run(read_system(tool_candidates("auto", [str(prefix)]), [str(prefix)], 5))
    assert reading.tool == "wg"


def test_failed_tool_is_a_sampling_error(scripted_tool: ScriptedTool) -> None:
    scripted_tool.set(b"", b"Unable to list interfaces: Permission denied\n", 1)
    with pytest.raises(SamplingError, match="Unable to list interfaces"):
        asyncio.run(read_system([str(scripted_tool.path)], [], 5))


def test_missing_ip_leaves_states_unknown(scripted_tool: ScriptedTool, tmp_path: Path) -> None:
    scripted_tool.play(next(c for c in CAPTURES if c.name == "wg-1.0.20210914.all"))
    prefix = prefix_without(tmp_path, "ip")
    reading = asyncio.run(read_system([str(scripted_tool.path)], [str(prefix)], 5))
    assert reading.links is None
    assert any("interface states unknown" in w for w in reading.warnings)
    assert len(reading.interfaces) == 2


def test_through_a_prefix_the_dump_and_ip_are_one_command(scripted_tool: ScriptedTool, tmp_path: Path) -> None:
    # One `docker exec` a sample instead of two (tests/bench/NOTES.md); what the tool printed
    # and said comes through whole, apart from ip's.
    capture = next(c for c in CAPTURES if c.name == "err.partial-permission")
    scripted_tool.play(capture)
    prefix = prefix_without(tmp_path, None)
    reading = asyncio.run(read_system([str(scripted_tool.path)], [str(prefix)], 5))
    assert (tmp_path / "prefix.log").read_text() == "sh\n"
    assert [i.name for i in reading.interfaces] == ["awgrg1"]
    assert reading.unread == {"awgrg2", "awgrg3"}
    assert reading.links is not None and "lo" in reading.links
    direct = asyncio.run(read_system([str(scripted_tool.path)], [], 5))
    assert (reading.interfaces, reading.unread, reading.warnings) == (direct.interfaces, direct.unread, direct.warnings)


def test_without_sh_through_the_prefix_they_run_apart(scripted_tool: ScriptedTool, tmp_path: Path) -> None:
    scripted_tool.play(next(c for c in CAPTURES if c.name == "wg-1.0.20210914.all"))
    prefix = prefix_without(tmp_path, "sh")
    reading = asyncio.run(read_system([str(scripted_tool.path)], [str(prefix)], 5))
    assert len(reading.interfaces) == 2 and reading.links is not None and "lo" in reading.links
    assert sorted((tmp_path / "prefix.log").read_text().split()) == sorted(["sh", str(scripted_tool.path), "ip"])


@pytest.mark.parametrize("ending", [b"", b"\n"])
@pytest.mark.parametrize("status", [0, 1, 127])
def test_the_dump_and_ip_are_split_where_the_marker_is(ending: bytes, status: int) -> None:
    dump = b"wg0\tPRIV\tPUB\t51820\toff\nwg0\tPEER awgd-x 0\n" + b"x" * 5 + ending
    ip = b"1: lo: <LOOPBACK,UP> mtu 65536\n"
    whole = ToolOutput(0, dump + b"\nawgd-x " + str(status).encode() + b"\n" + ip, b"err\n")
    tool, links = split_dump_and_links(whole, b"awgd-x")
    assert tool == ToolOutput(status, dump, b"err\n")
    assert links == ToolOutput(0, ip, b"")
    for broken in (dump, dump + b"\nawgd-x ", dump + b"\nawgd-x 12a\n" + ip):  # never got to ip
        assert split_dump_and_links(ToolOutput(137, broken, b""), b"awgd-x") == (ToolOutput(137, broken, b""), None)


def test_boot_id_override_for_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, warning = read_boot_id()
    assert real is not None and len(real) == 36 and warning is None
    fake = tmp_path / "boot_id"
    fake.write_text("simulated-boot-2\n")
    monkeypatch.setenv(BOOT_ID_ENV, str(fake))
    assert read_boot_id() == ("simulated-boot-2", None)
    monkeypatch.setenv(BOOT_ID_ENV, str(tmp_path / "missing"))
    assert read_boot_id() == (None, "boot id unknown: FileNotFoundError")


def test_auto_without_any_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SamplingError, match="neither awg nor wg is installed"):
        tool_candidates("auto", [])
    assert tool_candidates("/opt/awg", []) == ("/opt/awg",)
