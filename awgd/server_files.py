"""Files on the server (an interface's config file, Amnezia's clientsTable): read one, and
replace it atomically, through `wireguard.exec_prefix` when the interfaces live in a container.

A replacement is written to a temporary file beside the original (mode 0600), flushed to
disk, and renamed over it: the file is always either the old one or the new one, whatever
point awgd is killed at. It is also a compare-and-swap: the file is replaced only if it
still is what awgd read (its SHA-256), so an edit someone else made meanwhile (the Amnezia
app edits the same files) is never overwritten; the caller reads again and re-applies its
change. The content travels on the command's standard input, never its argument list.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from awgd.tool_runner import ToolError, run_command

# Config files and clientsTable of 50,000 peers are a few MB.
MAX_FILE_BYTES = 16 * 1024 * 1024
_MISSING = 3  # the scripts' exit status for "no such file"
_CHANGED = 4  # ... for "changed since it was read"
_READ = '[ -e "$1" ] || exit 3; exec cat -- "$1"'
_REPLACE = (
    'f=$1; t="$1.awgd-new"; '
    'if [ -e "$f" ]; then h=$(sha256sum < "$f") || exit 1; h=${h%% *}; else h=none; fi; '
    '[ "$h" = "$2" ] || exit 4; '
    'umask 077; rm -f -- "$t"; cat > "$t" || exit 1; '
    '{ sync -- "$t" 2>/dev/null || sync; }; '
    'mv -f -- "$t" "$f" || exit 1; '
    '{ sync -f -- "$f" 2>/dev/null || sync; }'
)


class FileError(Exception):
    """The file could not be read or written; the message says why (no content)."""


class FileChanged(Exception):
    """Someone else changed the file since it was read: read again, apply the change again."""


def digest(text: str | None) -> str:
    """The stamp `replace` compares: the SHA-256 of the content, "none" for a missing file."""
    return "none" if text is None else hashlib.sha256(text.encode()).hexdigest()


def with_stdin(exec_prefix: Sequence[str]) -> list[str]:
    """The prefix, able to pass standard input: `docker exec` (and podman's) drop it without -i."""
    prefix = list(exec_prefix)
    docker = len(prefix) >= 2 and os.path.basename(prefix[0]) in ("docker", "podman") and prefix[1] == "exec"
    if docker and not any(_interactive(arg) for arg in prefix[2:]):
        prefix.insert(2, "-i")
    return prefix


def _interactive(arg: str) -> bool:
    return arg in ("-i", "--interactive") or (arg.startswith("-") and not arg.startswith("--") and "i" in arg)


async def read_text(path: str, exec_prefix: Sequence[str], timeout: float) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        output = await run_command([*exec_prefix, "sh", "-c", _READ, "sh", path], timeout, MAX_FILE_BYTES)
    except ToolError as exc:
        raise FileError(f"cannot read {path}: {exc}") from None
    if output.returncode == _MISSING:
        return None
    if output.returncode != 0:
        raise FileError(f"cannot read {path}: {_first_line(output.stderr) or f'status {output.returncode}'}")
    try:
        return output.stdout.decode()
    except UnicodeDecodeError:
        raise FileError(f"cannot read {path}: not UTF-8 text") from None


async def replace_text(path: str, exec_prefix: Sequence[str], timeout: float, *, was: str | None, text: str) -> None:
    """Replace the file with `text` if it still holds `was` (None: did not exist)."""
    command = [*with_stdin(exec_prefix), "sh", "-c", _REPLACE, "sh", path, digest(was)]
    try:
        output = await run_command(command, timeout, stdin=text.encode())
    except ToolError as exc:
        raise FileError(f"cannot write {path}: {exc}") from None
    if output.returncode == _CHANGED:
        raise FileChanged(path)
    if output.returncode != 0:
        raise FileError(f"cannot write {path}: {_first_line(output.stderr) or f'status {output.returncode}'}")


def _first_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return "".join(ch if ch.isprintable() else "?" for ch in lines[0])[:200] if lines else ""
