"""Run an external command (awg, wg, ip) with a deadline and a bound on what it prints.

Never through a shell, and nothing from an RPC request ever reaches the argument list.
The command runs in its own session so that a timeout kills it and every child it left
behind (`docker exec`, a wrapper script) as one process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# 50,000 peers print about 12 MB of dump; AmneziaWG's i1..i5 add a few KB per interface.
# Over twice the largest real output is plenty, and bounds what a broken tool can make the
# daemon hold in memory.
MAX_OUTPUT_BYTES = 32 * 1024 * 1024
# stderr carries one short line per unreadable interface.
MAX_STDERR_BYTES = 256 * 1024
# A tool that has exited but whose stdout is still held open by a child it left behind
# gets this long to let go before the whole group is killed and the run fails.
EXIT_GRACE_SECONDS = 1.0
_READ_CHUNK = 256 * 1024
_EXIT_POLL_SECONDS = 0.02
# After SIGKILL the pipes close at once, unless a child escaped the group with setsid.
_REAP_SECONDS = 2.0


class ToolError(Exception):
    """The command could not be run to completion. The message is safe to log and return."""


@dataclass(frozen=True, slots=True)
class ToolOutput:
    returncode: int
    stdout: bytes
    stderr: bytes


async def run_command(
    argv: Sequence[str], timeout: float, max_output: int = MAX_OUTPUT_BYTES, *, stdin: bytes | None = None
) -> ToolOutput:
    """Run argv to completion, or raise ToolError (missing, timed out, too much output).

    `stdin`, when given, is written to the command's standard input (then closed): the way
    secrets (a preshared key) and file contents reach a command, never its argument list."""
    name = os.path.basename(argv[0])
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ToolError(f"{name}: not found") from None
    except PermissionError:
        raise ToolError(f"{name}: permission denied") from None
    except OSError as exc:
        raise ToolError(f"{name}: cannot run ({exc.strerror})") from None
    assert process.stdout is not None and process.stderr is not None
    feeder = asyncio.ensure_future(_feed(process, stdin)) if stdin is not None else None
    out_task = asyncio.ensure_future(
        _read_bounded(process.stdout, max_output, f"{name}: output exceeds {max_output} bytes")
    )
    err_task = asyncio.ensure_future(
        _read_bounded(process.stderr, MAX_STDERR_BYTES, f"{name}: error output exceeds {MAX_STDERR_BYTES} bytes")
    )
    readers: asyncio.Future[tuple[bytes, bytes]] = asyncio.gather(out_task, err_task)
    exited = asyncio.ensure_future(_exit_status(process))
    try:
        try:
            async with asyncio.timeout(timeout):
                either: list[asyncio.Future[Any]] = [readers, exited]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if readers.done():
                    stdout, stderr = readers.result()  # raises ToolError on too much output
                    exited.cancel()
                    returncode = await process.wait()
                else:
                    returncode = exited.result()
                    try:
                        async with asyncio.timeout(EXIT_GRACE_SECONDS):
                            stdout, stderr = await readers
                    except TimeoutError:
                        raise ToolError(f"{name}: exited but left its output open") from None
        except TimeoutError:
            raise ToolError(f"{name}: timed out after {timeout:g} s") from None
    except BaseException:
        exited.cancel()
        if feeder is not None:
            feeder.cancel()
        await _reap(process, readers, (out_task, err_task))
        raise
    finally:
        if feeder is not None:
            await asyncio.gather(feeder, return_exceptions=True)
    return ToolOutput(returncode, stdout, stderr)


async def _feed(process: asyncio.subprocess.Process, data: bytes) -> None:
    """Write `data` to the command's stdin and close it; a command that exits without
    reading it all (a broken pipe) is reported by its exit status, not here."""
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(data)
        await process.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        process.stdin.close()


async def _read_bounded(stream: asyncio.StreamReader, limit: int, message: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ToolError(message)
        chunks.append(chunk)
    return b"".join(chunks)


async def _exit_status(process: asyncio.subprocess.Process) -> int:
    """The exit status as soon as the process exits.

    Process.wait() also waits for its pipes to close, which a child left behind can hold
    open for ever; the transport records the status at exit, so poll that instead.
    """
    while process.returncode is None:
        await asyncio.sleep(_EXIT_POLL_SECONDS)
    return process.returncode


async def _reap(
    process: asyncio.subprocess.Process,
    readers: asyncio.Future[tuple[bytes, bytes]],
    tasks: tuple[asyncio.Future[bytes], ...],
) -> None:
    """Kill the group and collect it. A reader that gave up left its pipe paused, and
    asyncio only reports the exit once every pipe has reached EOF, so drain them first."""
    _kill_group(process)
    for task in tasks:
        task.cancel()
    await asyncio.gather(readers, *tasks, return_exceptions=True)
    assert process.stdout is not None and process.stderr is not None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_REAP_SECONDS):
            await asyncio.gather(_drain(process.stdout), _drain(process.stderr))
            await process.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(_READ_CHUNK):
        pass


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
