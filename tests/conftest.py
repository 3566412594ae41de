"""Shared fixtures: the captured dumps and a scripted stand-in for `awg`."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

import wgbed  # noqa: E402
from daemon import Awgd  # noqa: E402
from wgbed import leftovers  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """The whole suite leaves no namespace, link, wireguard-go process or mount behind."""
    yield
    assert leftovers() == []


@dataclass(frozen=True)
class Capture:
    name: str
    stdout: bytes
    stderr: bytes
    returncode: int

    @property
    def interface(self) -> str | None:
        """The IFACE of a `show IFACE dump` capture, None for `show all dump`."""
        tail = self.name.split(".")[-1]
        return None if tail.startswith("all") or self.name.startswith("err.") else tail


def load_captures() -> list[Capture]:
    captures = []
    for out in sorted(DATA.glob("*.out")):
        stem = out.name[: -len(".out")]
        captures.append(
            Capture(
                stem,
                out.read_bytes(),
                (DATA / f"{stem}.err").read_bytes(),
                int((DATA / f"{stem}.rc").read_text().strip()),
            )
        )
    return captures


CAPTURES = load_captures()


def secrets_in_captures() -> set[str]:
    """Every private, preshared and header-protection key printed in any capture."""
    found: set[str] = set()
    for capture in CAPTURES:
        for line in capture.stdout.decode().splitlines():
            fields = line.split("\t")
            if capture.interface is None:
                fields = fields[1:]
            if len(fields) == 8:  # a peer: the preshared key
                found.add(fields[1])
            else:  # an interface: the private key and, in AWG3, the header-protection key
                found.add(fields[0])
                if len(fields) >= 27:
                    found.add(fields[19])
    return {key for key in found if len(key) == 44}


class ScriptedTool:
    """An executable stand-in for `awg`: prints the files the test puts in its directory.

    The test writes `out`, `err` and `rc` (and optionally `sleep`); every run appends a
    line to `calls`, so a test can count tool invocations.
    """

    def __init__(self, directory: Path, name: str = "awg") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = directory / name
        self.path.write_text(
            "#!/bin/sh\n"
            f'd="{directory}"\n'
            'echo "$*" >> "$d/calls"\n'
            '[ -f "$d/sleep" ] && sleep "$(cat "$d/sleep")"\n'
            '[ -f "$d/out" ] && cat "$d/out"\n'
            '[ -f "$d/err" ] && cat "$d/err" >&2\n'
            'exit "$(cat "$d/rc" 2>/dev/null || echo 0)"\n'
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.set(b"")

    def set(self, stdout: bytes | str, stderr: bytes | str = b"", returncode: int = 0) -> None:
        for name, value in (("out", stdout), ("err", stderr)):
            data = value.encode() if isinstance(value, str) else value
            tmp = self.dir / f"{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / name)
        (self.dir / "rc").write_text(str(returncode))

    def play(self, capture: Capture) -> None:
        self.set(capture.stdout, capture.stderr, capture.returncode)

    @property
    def calls(self) -> int:
        path = self.dir / "calls"
        return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def scripted_tool(tmp_path: Path) -> ScriptedTool:
    return ScriptedTool(tmp_path / "tool")


def prefix_without(tmp_path: Path, missing: str | None) -> Path:
    """An exec_prefix into a place whose PATH has sh, cat, sleep and stat (what the scripted
    tool and the names reader need) and ip, but for `missing`; it logs each command it runs
    (its first word) to tmp_path/prefix.log."""
    bin_dir = tmp_path / f"bin-without-{missing}"
    bin_dir.mkdir()
    for name in ("sh", "cat", "sleep", "stat", "ip"):
        if name != missing:
            (bin_dir / name).symlink_to(shutil.which(name) or f"/bin/{name}")
    prefix = tmp_path / f"inside-without-{missing}"
    prefix.write_text(f'#!/bin/sh\necho "$1" >> "{tmp_path}/prefix.log"\nPATH="{bin_dir}" exec "$@"\n')
    prefix.chmod(0o755)
    return prefix


def key(char: str) -> str:
    """A valid public key made of one repeated character."""
    return char * 42 + "A="


SERVER_KEY = key("S")
PRIVATE_KEY = key("Z")  # must never appear anywhere awgd writes


def dump(interfaces: dict[str, dict[str, tuple[int, int]]], handshake: int | None = None) -> str:
    """`show all dump` text for the given counters (rx, tx) per interface and peer key."""
    when = int(time.time()) if handshake is None else handshake
    out = []
    for port, (name, peers) in enumerate(interfaces.items(), start=51820):
        out.append(f"{name}\t{PRIVATE_KEY}\t{SERVER_KEY}\t{port}\toff")
        for index, (public, (rx, tx)) in enumerate(peers.items(), start=2):
            address = f"{index // 250}.{index % 250}"
            out.append(
                f"{name}\t{public}\t{PRIVATE_KEY}\t198.51.{address}:5{index:04d}\t10.9.{address}/32\t"
                f"{when}\t{rx}\t{tx}\toff"
            )
    return "".join(line + "\n" for line in out)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Awgd]]:
    """Make real awgd processes (each in its own directory); all are killed at teardown."""
    made: list[Awgd] = []

    def make(tool: Any, **options: Any) -> Awgd:
        daemon = Awgd(tmp_path / f"awgd{len(made)}", tool, **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)
    for daemon in made:
        assert_no_secrets(daemon)


def assert_no_secrets(daemon: Awgd) -> None:
    """Across every daemon of the suite: no private or preshared key in its log, its ledger
    or any answer it gave (the test fails on a hit)."""
    secrets = {PRIVATE_KEY, *secrets_in_captures(), *wgbed.SECRETS}
    # Each also as the control socket prints it (lowercase hex, awgd.uapi_reader).
    secrets |= {base64.b64decode(secret).hex() for secret in set(secrets)}
    written = daemon.written()
    leaked = [secret for secret in secrets if secret.encode() in written]
    assert not leaked, f"a private or preshared key leaked into {daemon.dir}"
