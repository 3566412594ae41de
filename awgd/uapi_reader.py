"""Read the counters straight from a userspace WireGuard's control socket (the UAPI), with no
tool run: amneziawg-go and wireguard-go on the host, in a network namespace, or inside
Amnezia's container through that container's root (`/proc/<pid>/root`).

What it cannot read, it says, and the caller (awgd.system_reader) reads the sample with the
tool instead: no socket (a kernel interface, or the daemon not running), a socket that
refuses, an answer with an error or one that does not parse. See docs/FORMAT.md ("The UAPI
reader") and docs/config.md (`wireguard.reader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from awgd.dump_parser import Interface
from awgd.ip_link import Link
from awgd.tool_runner import ToolError, run_command
from awgd.uapi_parser import AMNEZIAWG, WIREGUARD, Derive, UapiError, UapiParser
from awgd_client.names import is_interface_name

# Where amneziawg-go and wireguard-go put their sockets, and which data plane each is.
DEFAULT_SOCKET_DIRS = ("/var/run/amneziawg", "/var/run/wireguard")
# An answer is about 2.2 times the dump's size (hex keys, a line per field): 50,000 peers
# answer about 26 MB. Twice that bounds what a broken daemon can make awgd hold.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# The first answer's buffer; later ones start at the last answer's length and a quarter.
_FIRST_BUFFER = 256 * 1024
# AF_UNIX paths are at most 107 bytes on Linux.
_MAX_SOCKET_PATH = 107
# A chain of symbolic links inside a container's root longer than this is refused (Linux's
# own limit is 40).
_MAX_LINKS = 40
# Container engines whose `exec` awgd can see through: `inspect` gives the container's pid.
_ENGINES = ("docker", "podman")
_GET = b"get=1\n\n"
_PEERCRED = struct.Struct("3i")


class UapiUnavailable(Exception):
    """This sample cannot be read through the sockets; the message says why (safe to show).
    `expected`: the server has interfaces only the tool reads (no socket, kernel ones), which
    under `wireguard.reader = "auto"` is no fault."""

    def __init__(self, reason: str, *, expected: bool = False) -> None:
        super().__init__(reason)
        self.expected = expected


@dataclass(frozen=True, slots=True)
class UapiReading:
    interfaces: tuple[Interface, ...]
    links: Mapping[str, Link] | None  # from sysfs (no qdisc), None when not readable


def flavor_of(directory: str) -> str:
    return AMNEZIAWG if "amneziawg" in os.path.basename(directory.rstrip("/")) else WIREGUARD


def container_of(exec_prefix: Sequence[str]) -> tuple[list[str], str] | None:
    """(the engine's argv before `exec`, the container) when the prefix is `docker exec …
    CONTAINER` or podman's; None otherwise."""
    if not exec_prefix or os.path.basename(exec_prefix[0]) not in _ENGINES or "exec" not in exec_prefix:
        return None
    at = list(exec_prefix).index("exec")
    if at == len(exec_prefix) - 1 or exec_prefix[-1].startswith("-"):
        return None
    return list(exec_prefix[:at]), exec_prefix[-1]


def reachable(exec_prefix: Sequence[str], dirs_configured: bool) -> bool:
    """Whether the sockets the prefix's tool would use are where awgd can look (`auto`): on the
    host, in another network namespace (the same files), in a container (through its root),
    or wherever `wireguard.socket_dirs` says."""
    if not exec_prefix or dirs_configured:
        return True
    if container_of(exec_prefix) is not None:
        return True
    return list(exec_prefix[:3]) == ["ip", "netns", "exec"]


def x25519_public() -> Derive | None:
    """X25519's public key of a private key, or None without python3-cryptography."""
    try:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    except ImportError:
        return None

    def derive(private: bytes) -> bytes:
        key = X25519PrivateKey.from_private_bytes(private).public_key()
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    return derive


class UapiReader:
    """Reads every interface whose socket is found; owned by the sampler (one sample at a
    time, so no lock: nothing else touches it)."""

    def __init__(self, parser: UapiParser) -> None:
        self._parser = parser
        self._sizes: dict[str, int] = {}  # each socket's last answer's length
        self._found: tuple[object, dict[str, tuple[str, str]]] | None = None  # _find's last
        # The container's pid and its start time (a restarted container has another).
        self._container: tuple[int, str] | None = None

    async def read(
        self, exec_prefix: Sequence[str], socket_dirs: Sequence[str], watched: frozenset[str], timeout: float
    ) -> UapiReading:
        root = await self._root(exec_prefix, timeout)
        try:
            sockets = self._find(root, socket_dirs)
        except PermissionError:
            # /proc/<pid>/root needs the right to inspect that process: a root awgd has it,
            # one bounded by awgd.service's capabilities not (docs/amnezia.md).
            raise UapiUnavailable(
                "cannot look into the container (permission denied: awgd.service needs CAP_SYS_PTRACE "
                "for that, docs/amnezia.md)"
            ) from None
        if watched:
            sockets = {name: place for name, place in sockets.items() if name in watched}
        if not sockets:
            raise UapiUnavailable(f"no control socket in {', '.join(socket_dirs)}", expected=True)
        if watched - sockets.keys():
            missing = ", ".join(sorted(watched - sockets.keys()))
            raise UapiUnavailable(f"no control socket for {missing}", expected=True)
        names = sorted(sockets)
        try:
            async with asyncio.timeout(timeout):
                answers = await asyncio.gather(
                    *(ask(sockets[name][0], self._sizes.get(name, _FIRST_BUFFER)) for name in names)
                )
        except TimeoutError:
            raise UapiUnavailable(f"no answer within {timeout:g} s") from None
        interfaces = []
        for name, (text, _) in zip(names, answers, strict=True):
            self._sizes[name] = len(text)
            try:
                interfaces.append(self._parser.parse(name, text, sockets[name][1]))
            except UapiError as exc:
                raise UapiUnavailable(f"{name}'s answer cannot be parsed: {exc}") from None
        # With no prefix the interfaces are in awgd's own network namespace (where the tool
        # would have looked); else in the one each daemon sees, through its root.
        nets = {
            name: "/sys/class/net" if not exec_prefix else f"/proc/{pid}/root/sys/class/net"
            for name, (_, pid) in zip(names, answers, strict=True)
        }
        any_net = nets[names[0]]
        if kernel_interfaces(any_net, watched):
            raise UapiUnavailable("kernel WireGuard interfaces are read by the tool", expected=True)
        links = read_links(nets, watched, any_net)
        return UapiReading(tuple(interfaces), links)

    def forget(self) -> None:
        """The tool read a sample: what the parser kept is no longer the last reading."""
        self._parser.forget()

    def _find(self, root: str, socket_dirs: Sequence[str]) -> dict[str, tuple[str, str]]:
        """find_sockets, looked for again only when a directory changed (a socket made or
        removed changes its directory's mtime; a stat costs less than a listing)."""
        if root != "/":  # inside a container the path is resolved each time (its links may change)
            return find_sockets(root, socket_dirs)
        stamps = (tuple(socket_dirs), tuple(_stamp(directory) for directory in socket_dirs))
        if self._found is not None and self._found[0] == stamps:
            return self._found[1]
        found = find_sockets(root, socket_dirs)
        self._found = (stamps, found)
        return found

    async def _root(self, exec_prefix: Sequence[str], timeout: float) -> str:
        engine = container_of(exec_prefix)
        if engine is None:
            return "/"
        known = self._container
        if known is not None and _start_time(known[0]) == known[1]:
            return f"/proc/{known[0]}/root"
        self._container = None
        argv, container = engine
        try:
            output = await run_command([*argv, "inspect", "--format", "{{.State.Pid}}", container], timeout)
        except ToolError as exc:
            raise UapiUnavailable(f"cannot find the container: {exc}") from None
        text = output.stdout.decode("ascii", "replace").strip()
        if output.returncode != 0 or not text.isdigit() or int(text) <= 0:
            raise UapiUnavailable(f"container {container} is not running")
        pid = int(text)
        started = _start_time(pid)
        if started is None:
            raise UapiUnavailable(f"container {container}'s process is gone")
        self._container = (pid, started)
        return f"/proc/{pid}/root"


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read(4096)
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields after it are after the last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[19].decode("ascii", "replace") if len(fields) > 19 else None


def find_sockets(root: str, socket_dirs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each interface's socket path and flavor, the first directory's first; names that are
    not interface names and files that are not sockets are passed over."""
    found: dict[str, tuple[str, str]] = {}
    for directory in socket_dirs:
        path = directory if root == "/" else resolve_in(root, directory)
        if path is None:
            continue
        try:
            entries = list(os.scandir(path))
        except PermissionError:
            if root != "/":
                raise
            continue
        except OSError:
            continue
        for entry in entries:
            name = entry.name.removesuffix(".sock")
            if name == entry.name or not is_interface_name(name) or name in found:
                continue
            with contextlib.suppress(OSError):
                if _is_socket(entry.path) and len(entry.path.encode()) <= _MAX_SOCKET_PATH:
                    found[name] = (entry.path, flavor_of(directory))
    return found


def _stamp(directory: str) -> tuple[int, int, int] | None:
    """What says a directory's entries changed: its inode and mtime (None: not there)."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns)


def _is_socket(path: str) -> bool:
    return stat.S_ISSOCK(os.lstat(path).st_mode)


def resolve_in(root: str, path: str) -> str | None:
    """`path` inside `root` (a container's `/proc/<pid>/root`), its symbolic links followed as
    the container would follow them: an absolute link starts again at `root`, never at the
    host's `/`. None when it does not resolve."""
    parts = [part for part in path.split("/") if part]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            info = os.lstat(candidate)
        except PermissionError:
            raise
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return None
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if target.startswith("/"):
                resolved = []
            parts[:0] = [p for p in target.split("/") if p]
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


async def ask(path: str, expected: int = _FIRST_BUFFER) -> tuple[str, int]:
    """`get=1` on one socket: (the answer without its `errno=0` line, the answering pid).
    `expected`: about how long the answer will be (the last one's length)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    name = os.path.basename(path).removesuffix(".sock")
    # Read into one buffer, grown when needed: a fresh bytes object per read, and joining
    # them, cost more than the read itself at 1,000 peers (tests/bench/NOTES.md).
    buffer = bytearray(max(expected + expected // 4, _FIRST_BUFFER))
    size = 0
    try:
        try:
            await loop.sock_connect(sock, path)
            pid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))[0]
            await loop.sock_sendall(sock, _GET)
            while True:
                if size == len(buffer):
                    if size >= MAX_ANSWER_BYTES:
                        raise UapiUnavailable(f"{name}'s answer exceeds {MAX_ANSWER_BYTES} bytes")
                    buffer.extend(bytes(min(size, MAX_ANSWER_BYTES - size)))
                with memoryview(buffer) as view:
                    got = await loop.sock_recv_into(sock, view[size:])
                if not got:
                    raise UapiUnavailable(f"{name}'s socket closed before the end of its answer")
                size += got
                if buffer[size - 2 : size] == b"\n\n":  # a blank line ends an answer, and only an answer
                    break
        except OSError as exc:
            raise UapiUnavailable(f"{name}'s socket refused ({exc.strerror or exc.__class__.__name__})") from None
    finally:
        sock.close()
    last = buffer.rfind(b"\n", 0, size - 2) + 1  # where the last line starts (0: the only one)
    if buffer[last : last + 6] != b"errno=":
        raise UapiUnavailable(f"{name}'s answer has no errno line")
    value = bytes(buffer[last + 6 : size - 2])
    if value != b"0":
        shown = value[:12].decode("ascii", "replace") if value.isdigit() else "?"
        raise UapiUnavailable(f"{name}'s socket answered errno={shown}")
    try:
        with memoryview(buffer) as view:
            text = str(view[:last], "utf-8")
    except UnicodeDecodeError:
        raise UapiUnavailable(f"{name}'s answer is not valid UTF-8") from None
    return text, pid


def _read_small(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(4096).decode("ascii", "replace").strip()
    except OSError:
        return None


# Kernel modules whose interfaces have no socket: only the tool reads them (over netlink).
_KERNEL_MODULES = ("/sys/module/wireguard", "/sys/module/amneziawg")
_KERNEL_DEVTYPES = ("DEVTYPE=wireguard", "DEVTYPE=amneziawg")


def kernel_interfaces(net: str, watched: frozenset[str], modules: Sequence[str] = _KERNEL_MODULES) -> list[str]:
    """The kernel WireGuard interfaces in `net` (a sysfs class/net directory), looked for
    only when such a module is loaded at all."""
    if not any(os.path.isdir(module) for module in modules):
        return []
    try:
        names = os.listdir(net)
    except OSError:
        return []
    found = []
    for name in names:
        if watched and name not in watched:
            continue
        uevent = _read_small(f"{net}/{name}/uevent") or ""
        if any(line in _KERNEL_DEVTYPES for line in uevent.splitlines()):
            found.append(name)
    return found


def read_links(nets: Mapping[str, str], watched: frozenset[str], any_net: str) -> dict[str, Link] | None:
    """Each read interface's ifindex and whether it is up, from the sysfs its daemon sees
    (`nets`: each one's class/net directory), and each watched one's that exists there; None
    when that sysfs cannot be read (then `ip` is asked)."""
    links: dict[str, Link] = {}
    wanted = dict(nets)
    for name in watched - nets.keys():
        wanted[name] = any_net
    for name, net in wanted.items():
        if not os.access(net, os.X_OK):
            return None
        base = f"{net}/{name}"
        ifindex, flags = _read_small(f"{base}/ifindex"), _read_small(f"{base}/flags")
        if ifindex is None or flags is None:
            continue
        try:
            links[name] = Link(int(ifindex), bool(int(flags, 16) & 1))  # IFF_UP
        except ValueError:
            return None
    return links
