"""Read the counters off the system: the dump (or the control sockets, awgd.uapi_reader),
`ip -o link show` and the boot id.

The I/O is `read_system`; how the tool's exit status and stderr are understood
(docs/FORMAT.md, "Exit status and standard error") is the pure `interpret_dump`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from awgd.dump_parser import DumpError, Interface, parse_dump
from awgd.ip_link import Link, parse_ip_link
from awgd.tool_runner import ToolError, ToolOutput, run_command
from awgd.uapi_reader import UapiReader, UapiUnavailable
from awgd_client.names import is_interface_name

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# For tests only: a file to read the boot id from instead, so a test can simulate a reboot.
BOOT_ID_ENV = "AWGD_TEST_BOOT_ID_FILE"
AUTO_TOOLS = ("awg", "wg")
# Exit statuses of `docker exec`, `sh -c` and env when the command itself is missing.
_NOT_FOUND_STATUSES = (126, 127)
# A reason quoted from the tool's stderr is cut to this many characters.
MAX_REASON_CHARS = 200
_UNREADABLE_RE = re.compile(r"Unable to access interface ([^\s:]+): (.*)")


class SamplingError(Exception):
    """The sample could not be taken. The message is safe to log and to return over RPC."""


@dataclass(frozen=True, slots=True)
class Reading:
    taken_at: datetime
    tool: str
    interfaces: tuple[Interface, ...]
    unread: frozenset[str]  # interfaces the tool named but could not read
    links: Mapping[str, Link] | None  # None when `ip` failed
    boot_id: str | None
    warnings: tuple[str, ...]
    # How each interface read was read: "uapi" (its control socket) or "tool".
    readers: Mapping[str, str] = field(default_factory=dict)
    # Whether `links` carry each root qdisc (from `ip`; sysfs has none).
    qdiscs: bool = True
    # Why the control sockets were not used when they were wanted, or None.
    reader_problem: str | None = None


@dataclass(frozen=True, slots=True)
class UapiWish:
    """A sample the sockets should read (wireguard.reader "auto" or "uapi")."""

    reader: UapiReader
    socket_dirs: tuple[str, ...]
    watched: frozenset[str]
    tool: str  # what a reading through them names as the tool (the one changes run)
    need_qdiscs: bool  # speed limits are set: `ip` is asked for the root qdiscs all the same
    # Whether the tool's fallback is worth a warning when there is no socket at all ("uapi":
    # always; "auto": a server of kernel interfaces has none, as expected).
    insist: bool


Parse = Callable[[bytes], tuple[Interface, ...]]


def interpret_dump(
    tool: str, output: ToolOutput, parse: Parse = parse_dump
) -> tuple[tuple[Interface, ...], frozenset[str], tuple[str, ...]]:
    """(interfaces read, interfaces not read, warnings) from one `show all dump` run.

    Exit status 0 means at least one interface was printed, not that all were: each
    `Unable to access interface X: …` line names one that was not read in this sample.
    """
    lines = [line for line in output.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if output.returncode != 0:
        detail = _clean(lines[0]) if lines else "no error message"
        raise SamplingError(f"{tool} exited with status {output.returncode}: {detail}")
    unread: set[str] = set()
    warnings: list[str] = []
    for line in lines:
        match = _UNREADABLE_RE.fullmatch(line)
        if match and is_interface_name(match[1]):
            unread.add(match[1])
            warnings.append(f"interface {match[1]} not read: {_clean(match[2])}")
        else:
            warnings.append(f"{tool} said: {_clean(line)}")
    try:
        interfaces = parse(output.stdout)
    except DumpError as exc:
        raise SamplingError(f"{tool} printed output that cannot be parsed: {exc}") from None
    return interfaces, frozenset(unread - {i.name for i in interfaces}), tuple(warnings)


def _clean(text: str) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text.strip())
    return printable[:MAX_REASON_CHARS]


def tool_candidates(tool: str, exec_prefix: Sequence[str]) -> tuple[str, ...]:
    """Which binaries to try, in order: "auto" means awg if installed, else wg."""
    if tool != "auto":
        return (tool,)
    if exec_prefix:
        return AUTO_TOOLS  # they live inside the container: try each through the prefix
    found = tuple(name for name in AUTO_TOOLS if shutil.which(name))
    if not found:
        raise SamplingError('neither awg nor wg is installed (wireguard.tool = "auto")')
    return found[:1]


async def read_system(
    tools: Sequence[str] | Callable[[], Sequence[str]],
    exec_prefix: Sequence[str],
    timeout: float,
    parse: Parse = parse_dump,
    *,
    uapi: UapiWish | None = None,
) -> Reading:
    """Read the control sockets when `uapi` asks for it and they answer; else run the dump
    (with the first of `tools`, or of what it gives when called)
    and `ip -o link show` (in one shell through `exec_prefix`, else side by side). And read
    the boot id."""
    problem, warn = None, False
    if uapi is not None:
        try:
            return await _read_sockets(uapi, exec_prefix, timeout)
        except UapiUnavailable as exc:
            problem, warn = str(exc), uapi.insist or not exc.expected
    if callable(tools):
        tools = tools()  # may raise SamplingError: no tool to fall back on
    reading = await _read_with_tool(tools, exec_prefix, timeout, parse)
    readers = {iface.name: "tool" for iface in reading.interfaces}
    warnings = reading.warnings
    if problem is not None and warn:
        warnings = (*warnings, f"read with {reading.tool}, not the control sockets: {problem}")
    return replace(reading, readers=readers, reader_problem=problem, warnings=warnings)


async def _read_sockets(uapi: UapiWish, exec_prefix: Sequence[str], timeout: float) -> Reading:
    taken_at = datetime.now(UTC)
    got = await uapi.reader.read(exec_prefix, uapi.socket_dirs, uapi.watched, timeout)
    links, qdiscs, warnings = got.links, False, []
    if uapi.need_qdiscs or links is None:
        links, link_warning = await _read_links(exec_prefix, timeout)
        qdiscs = links is not None
        if link_warning:
            warnings.append(link_warning)
    boot_id, boot_warning = read_boot_id()
    if boot_warning:
        warnings.append(boot_warning)
    return Reading(
        taken_at,
        uapi.tool,
        got.interfaces,
        frozenset(),
        links,
        boot_id,
        tuple(warnings),
        readers={iface.name: "uapi" for iface in got.interfaces},
        qdiscs=qdiscs,
    )


async def _read_with_tool(tools: Sequence[str], exec_prefix: Sequence[str], timeout: float, parse: Parse) -> Reading:
    taken_at = datetime.now(UTC)
    ran = await _run_dump(tools, exec_prefix, timeout, with_links=True) if exec_prefix else None
    if ran is not None:
        tool, output, links_output = ran
        interfaces, unread, warnings = interpret_dump(tool, output, parse)
        links, link_warning = _links(links_output)
    else:  # no prefix, or no sh through it
        links_task = asyncio.ensure_future(_read_links(exec_prefix, timeout))
        try:
            found = await _run_dump(tools, exec_prefix, timeout, with_links=False)
            assert found is not None  # only a run with links can find no sh
            tool, output, _ = found
            interfaces, unread, warnings = interpret_dump(tool, output, parse)
        except BaseException:
            links_task.cancel()
            await asyncio.gather(links_task, return_exceptions=True)
            raise
        links, link_warning = await links_task
    boot_id, boot_warning = read_boot_id()
    extra = tuple(w for w in (link_warning, boot_warning) if w)
    return Reading(taken_at, tool, interfaces, unread, links, boot_id, warnings + extra)


# Through exec_prefix the dump and `ip -o link show` run in one shell: a `docker exec` costs
# tens of milliseconds of CPU, and two side by side made a sample of 10,000 peers 40 ms slower
# than one (tests/bench/NOTES.md). $1, new each time, marks where the tool's output ends and
# gives its exit status; ip's errors follow on stdout, so that stderr stays the tool's alone.
_DUMP_THEN_LINKS = '"$0" show all dump; status=$?; printf "\\n%s %d\\n" "$1" "$status"; exec ip -o link show 2>&1'
# What ip's output is taken to be when the shell never got to it.
_NO_LINKS = ToolOutput(1, b"", b"")


async def _run_dump(
    tools: Sequence[str], exec_prefix: Sequence[str], timeout: float, *, with_links: bool
) -> tuple[str, ToolOutput, ToolOutput] | None:
    """(tool, its output, ip's) from the first of `tools` found, ip's only `with_links` (and
    _NO_LINKS otherwise): then both in one shell, and None when there is no `sh` to run it in."""
    last = ""
    for tool in tools:
        marker = "awgd-" + os.urandom(8).hex() if with_links else ""
        argv = ["sh", "-c", _DUMP_THEN_LINKS, tool, marker] if with_links else [tool, "show", "all", "dump"]
        try:
            output = await run_command([*exec_prefix, *argv], timeout)
        except ToolError as exc:
            raise SamplingError(str(exc)) from None
        links = _NO_LINKS
        if with_links:
            output, split = split_dump_and_links(output, marker.encode())
            if split is None and output.returncode in _NOT_FOUND_STATUSES:
                return None  # no sh through the prefix
            links = split or _NO_LINKS
        if exec_prefix and len(tools) > 1 and output.returncode in _NOT_FOUND_STATUSES:
            last = f"{tool} not found through {exec_prefix[0]}"
            continue
        return os.path.basename(tool), output, links
    raise SamplingError(f"neither awg nor wg found ({last})")


def split_dump_and_links(output: ToolOutput, marker: bytes) -> tuple[ToolOutput, ToolOutput | None]:
    """The tool's output (with its own exit status) and ip's, from one run of
    _DUMP_THEN_LINKS; ip's is None when the shell never got past the tool (none is then the
    tool's either: the whole run's is given as the tool's)."""
    stdout = output.stdout
    at = stdout.find(b"\n" + marker + b" ")
    if at < 0:
        return output, None
    start = at + len(marker) + 2
    end = stdout.find(b"\n", start)
    status = stdout[start:end]
    if end < 0 or not status.isdigit() or len(status) > 3:
        return output, None
    return ToolOutput(int(status), stdout[:at], output.stderr), ToolOutput(output.returncode, stdout[end + 1 :], b"")


def _links(output: ToolOutput) -> tuple[Mapping[str, Link] | None, str | None]:
    if output.returncode != 0:
        return None, f"interface states unknown: ip exited with status {output.returncode}"
    return parse_ip_link(output.stdout.decode("utf-8", "replace")), None


async def _read_links(exec_prefix: Sequence[str], timeout: float) -> tuple[Mapping[str, Link] | None, str | None]:
    try:
        output = await run_command([*exec_prefix, "ip", "-o", "link", "show"], timeout)
    except ToolError as exc:
        return None, f"interface states unknown: {exc}"
    return _links(output)


def read_boot_id() -> tuple[str | None, str | None]:
    path = os.environ.get(BOOT_ID_ENV) or BOOT_ID_PATH
    try:
        with open(path, encoding="ascii") as handle:
            boot_id = handle.read(128).strip()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"boot id unknown: {exc.__class__.__name__}"
    return (boot_id or None), (None if boot_id else "boot id unknown: empty")
