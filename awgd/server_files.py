"""Files on the server (an interface's config file, Amnezia's clientsTable): read one, and
replace it atomically, through `wireguard.exec_prefix` when the interfaces live in a container.

A replacement is written to a temporary file beside the original (made exclusively, mode
0600), flushed to disk, and renamed over it: the file is always either the old one or the
new one, whatever point awgd is killed at. It is also a compare-and-swap: the file is
replaced only if it still is what awgd read (its SHA-256), so an edit someone else made
meanwhile (the Amnezia app edits the same files) is never overwritten; the caller reads
again and re-applies its change. The content travels on the command's standard input, never
its argument list, and is renamed into place only if what arrived has the SHA-256 of what
was sent: an exec prefix that drops standard input (`kubectl exec` without -i) once emptied
a config file this way (the review's D9). A prefix is also probed once for standard input
before anything is sent through it.

awgd is root and these files are root's: the file's directory must be root's alone (not
writable by group or others), checked here on the whole path when the file is on the host,
and by the script on the last directory wherever it is (the review's D10). A link at the
file is resolved, and the file it names is edited in place of the link, keeping its owner
and mode; a new file gets 0600.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from awgd.tool_runner import ToolError, run_command
from awgd.trusted_path import UntrustedPath, check_trusted_directory

# Config files and clientsTable of 50,000 peers are a few MB.
MAX_FILE_BYTES = 16 * 1024 * 1024
_MISSING = 3  # the scripts' exit status for "no such file"
_CHANGED = 4  # ... for "changed since it was read"
_GARBLED = 5  # ... for "what arrived on standard input is not what was sent"
_UNTRUSTED = 6  # ... for "the file's directory is not root's alone"
_READ = '[ -e "$1" ] || exit 3; exec cat -- "$1"'
# POSIX sh and busybox (Amnezia's container): $1 the file, $2 the SHA-256 it must still have
# ("none": must not exist), $3 the SHA-256 of what is sent. Paths are absolute.
_REPLACE = (
    "f=$1; "
    'if [ -L "$f" ]; then r=$(readlink -f "$f") && [ -n "$r" ] || exit 1; else r=$f; fi; '
    'd=$(dirname "$r") && s=$(stat -c "%u %a" "$d") || exit 1; '
    'case $s in "0 "*) ;; *) exit 6;; esac; '
    "case ${s#* } in *[2367]?|*[2367]) exit 6;; esac; "
    '[ ! -e "$r" ] || [ -f "$r" ] || exit 1; '
    'if [ -e "$r" ]; then h=$(sha256sum < "$r") || exit 1; h=${h%% *}; else h=none; fi; '
    '[ "$h" = "$2" ] || exit 4; '
    # A writer killed between mktemp and mv left its file: in a directory only root writes
    # to, and with edits one at a time, any such file is a leftover.
    'for o in "$r".awgd-??????; do [ ! -f "$o" ] || rm -f "$o"; done; '
    'umask 077; t=$(mktemp "$r.awgd-XXXXXX") || exit 1; '
    'cat > "$t" && n=$(sha256sum < "$t") || { rm -f "$t"; exit 1; }; '
    '[ "${n%% *}" = "$3" ] || { rm -f "$t"; exit 5; }; '
    'if [ -e "$r" ]; then o=$(stat -c "%u:%g %a" "$r") && chown "${o% *}" "$t" && chmod "${o#* }" "$t" '
    '|| { rm -f "$t"; exit 1; }; fi; '
    '{ sync "$t" 2>/dev/null || sync; }; '
    'mv -f "$t" "$r" || { rm -f "$t"; exit 1; }; '
    '{ sync -f "$r" 2>/dev/null || sync; }'
)
# Prefixes whose standard input was seen to arrive (probed once each: one tool run).
_STDIN_PASSES: set[tuple[str, ...]] = set()


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


async def ensure_stdin(exec_prefix: Sequence[str], timeout: float) -> None:
    """Raise FileError unless what is sent on standard input through the prefix arrives."""
    prefix = tuple(with_stdin(exec_prefix))
    if not prefix or prefix in _STDIN_PASSES:
        return
    token = f"awgd-stdin-probe-{os.urandom(8).hex()}\n".encode()
    try:
        output = await run_command([*prefix, "cat"], timeout, stdin=token)
    except ToolError as exc:
        raise FileError(f"cannot check that the exec prefix passes standard input: {exc}") from None
    if output.returncode != 0 or output.stdout != token:
        raise FileError(
            f"the exec prefix {' '.join(exec_prefix)!r} does not pass standard input to the command "
            "(docker and podman exec get -i from awgd; give another tool its own option for it)"
        )
    _STDIN_PASSES.add(prefix)


async def replace_text(path: str, exec_prefix: Sequence[str], timeout: float, *, was: str | None, text: str) -> None:
    """Replace the file with `text` if it still holds `was` (None: did not exist)."""
    if not path.startswith("/"):
        raise FileError(f"cannot write {path}: not an absolute path")
    if not exec_prefix:
        _check_directories(path)
    await ensure_stdin(exec_prefix, timeout)
    data = text.encode()
    wanted = hashlib.sha256(data).hexdigest()
    command = [*with_stdin(exec_prefix), "sh", "-c", _REPLACE, "sh", path, digest(was), wanted]
    try:
        output = await run_command(command, timeout, stdin=data)
    except ToolError as exc:
        raise FileError(f"cannot write {path}: {exc}") from None
    if output.returncode == _CHANGED:
        raise FileChanged(path)
    if output.returncode == _GARBLED:
        raise FileError(f"not written {path}: what arrived through the exec prefix is not what awgd sent")
    if output.returncode == _UNTRUSTED:
        raise FileError(f"refused to write {path}: its directory is not root's alone (chown root, chmod go-w)")
    if output.returncode != 0:
        raise FileError(f"cannot write {path}: {_first_line(output.stderr) or f'status {output.returncode}'}")


def _check_directories(path: str) -> None:
    """Every directory to the file (and to what a link at it names) is root's alone."""
    try:
        for directory in {os.path.dirname(path), os.path.dirname(os.path.realpath(path))}:
            check_trusted_directory(directory)
    except UntrustedPath as exc:
        raise FileError(f"refused to write {path}: {exc}") from None
    except OSError as exc:
        raise FileError(f"cannot write {path}: {exc.strerror}") from None


def _first_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return "".join(ch if ch.isprintable() else "?" for ch in lines[0])[:200] if lines else ""
