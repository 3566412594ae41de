"""Paths that only a trusted owner could have chosen: the config file and the socket's directory.

awgd runs as root and acts on what these paths hold (the config names programs it runs; the
socket's directory is where it creates and unlinks files). A path is only as trustworthy
as every directory on the way to it: whoever can write to any of them can swap what lies
below. So a path is walked from `/` one component at a time, each directory opened
relative to the one before (openat with O_NOFOLLOW) and checked on its open descriptor,
never looked up again by name. A symbolic link is followed by hand, which is safe because
it lives in a directory already trusted. What is checked at each step:

- owned by root, or by the user awgd runs as (a trial run by an ordinary user);
- not writable by group or others, except a sticky directory such as /tmp, where others
  may add entries but not replace ours (as sshd's StrictModes does).

The file that the walk ends on is opened once, checked with fstat, and read from that
same descriptor, so nothing can be swapped between the check and the read.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

# Linux's own limit on symbolic links followed while resolving one path (MAXSYMLINKS).
MAX_SYMLINKS = 40
# A directory awgd creates for its socket, as `mkdir -p` would, readable by everyone.
CREATED_DIRECTORY_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UntrustedPath(Exception):
    """A path that someone other than root (or awgd's own user) could have changed."""


def trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _check(info: os.stat_result, shown: str, owners: frozenset[int], directory: bool) -> None:
    what = "directory" if directory else "file"
    if info.st_uid not in owners:
        raise UntrustedPath(f"{shown}: the {what} is owned by uid {info.st_uid}, not by root")
    sticky = directory and info.st_mode & stat.S_ISVTX
    if info.st_mode & 0o022 and not sticky:
        raise UntrustedPath(f"{shown}: the {what} is writable by group or others (chmod go-w)")


class _Walk:
    """A stack of open, checked directories from `/` down to the current one."""

    def __init__(self, owners: frozenset[int] | None) -> None:
        self.owners = owners  # None: open without checking
        self.stack: list[tuple[int, str]] = []
        fd = os.open("/", _DIR_FLAGS)
        self.stack.append((fd, "/"))
        self.check(fd, "/", directory=True)

    def check(self, fd: int, shown: str, *, directory: bool) -> None:
        if self.owners is not None:
            _check(os.fstat(fd), shown, self.owners, directory)

    @property
    def fd(self) -> int:
        return self.stack[-1][0]

    @property
    def shown(self) -> str:
        return self.stack[-1][1]

    def child(self, name: str) -> str:
        return os.path.join(self.shown, name)

    def enter(self, name: str) -> None:
        shown = self.child(name)
        fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        self.stack.append((fd, shown))
        self.check(fd, shown, directory=True)

    def up(self) -> None:
        if len(self.stack) > 1:
            os.close(self.stack.pop()[0])

    def to_root(self) -> None:
        while len(self.stack) > 1:
            os.close(self.stack.pop()[0])

    def close(self) -> None:
        while self.stack:
            os.close(self.stack.pop()[0])


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


@contextlib.contextmanager
def _walk(path: str, *, check: bool, create: bool = False, final_is_file: bool) -> Iterator[tuple[_Walk, str | None]]:
    """Walk to `path`; yields the walk (at the last directory) and the file name, if any."""
    if not os.path.isabs(path):
        raise UntrustedPath(f"{path}: not an absolute path")
    walk = _Walk(trusted_owners() if check else None)
    try:
        parts = _components(path)
        links = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                walk.up()
                continue
            try:
                info = os.stat(name, dir_fd=walk.fd, follow_symlinks=False)
            except FileNotFoundError:
                if final_is_file and not parts:
                    raise
                if not create:
                    raise
                os.mkdir(name, CREATED_DIRECTORY_MODE, dir_fd=walk.fd)
                info = os.stat(name, dir_fd=walk.fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise UntrustedPath(f"{path}: too many symbolic links")
                target = os.readlink(name, dir_fd=walk.fd)
                if target.startswith("/"):
                    walk.to_root()
                parts = _components(target) + parts
                continue
            if final_is_file and not parts:
                yield walk, name
                return
            walk.enter(name)
        if final_is_file:
            raise IsADirectoryError(path)
        yield walk, None
    finally:
        walk.close()


def read_trusted_file(path: str, *, check: bool = True, limit: int = 1024 * 1024) -> bytes:
    """The content of `path`, opened once and checked on that descriptor (see the module doc).

    With check=False the walk still opens the file once, but nothing is checked (a config
    read by a non-root awgd, which cannot run anything as root). Raises UntrustedPath,
    FileNotFoundError or another OSError.
    """
    with _walk(path, check=check, final_is_file=True) as (walk, name):
        assert name is not None
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=walk.fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UntrustedPath(f"{path}: not a regular file")
            walk.check(fd, path, directory=False)
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read(limit + 1)
        finally:
            os.close(fd)
    if len(data) > limit:
        raise UntrustedPath(f"{path}: larger than {limit} bytes")
    return data


def check_trusted_directory(path: str) -> None:
    """Check that `path` and every directory above it are trusted (nothing is created);
    raises UntrustedPath naming the first that is not, or FileNotFoundError."""
    with _walk(path, check=True, create=False, final_is_file=False):
        pass


def ensure_trusted_directory(path: str) -> None:
    """Create `path` like `mkdir -p` (mode 0755) where it is missing, and check that it and
    every directory above it are trusted; raises UntrustedPath naming the first that is not."""
    with _walk(path, check=True, create=True, final_is_file=False):
        pass
