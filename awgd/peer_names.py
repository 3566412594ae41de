"""The names operators know their peers by, read from where their tools keep them.

- Amnezia's `clientsTable` (`/opt/amnezia/awg/clientsTable` in its container): a JSON list of
  `{"clientId": PUBLIC_KEY, "userData": {"clientName": NAME, ...}}`.
- Name comments in the interface's config file (awgd.wg_config): `# friendly_name = NAME` or
  `# Name = NAME` with a `[Peer]`.

Both are read through `wireguard.exec_prefix` when there is one (the files then live inside
the container), at most once a minute, and a file is read again only when its modification
time, size or inode changed. Reading names never fails a sample: a file that is missing or broken
is logged once and its names are simply absent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from awgd.accounting import PeerKey
from awgd.clients_table import parse_clients_table
from awgd.config import Config
from awgd.tool_runner import ToolError, run_command
from awgd.wg_config import config_path, peer_names

log = logging.getLogger(__name__)

AMNEZIA_CLIENTS_TABLE = "/opt/amnezia/awg/clientsTable"
# Names change when an operator adds a client; a minute later is soon enough, and spares a
# `docker exec` per sample on servers sampled every few seconds.
RECHECK_SECONDS = 60.0
# A names file larger than this is not a names file (50,000 clients' clientsTable is ~6 MB).
MAX_NAMES_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Names:
    by_key: dict[str, str] = field(default_factory=dict)  # from clientsTable: any interface
    by_peer: dict[PeerKey, str] = field(default_factory=dict)  # from an interface's config file

    def of(self, interface: str, public_key: str) -> str | None:
        return self.by_peer.get((interface, public_key)) or self.by_key.get(public_key)


Stamp = tuple[int, int, int]  # (modification time, size, inode): a changed file changes one


class NameReader:
    def __init__(self, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self._recheck_seconds = recheck_seconds
        self._files: dict[str, tuple[Stamp, str]] = {}  # path -> (stamp, text)
        self._complaints: dict[str, str] = {}  # path -> what was logged about it
        self._checked = -float("inf")
        self._asked: tuple[object, ...] = ()

    async def read(self, config: Config, tool: str, interfaces: Sequence[str]) -> Names | None:
        """The names now, or None when nothing was due to be checked."""
        asked = (id(config), tool, tuple(sorted(interfaces)))
        if asked == self._asked and time.monotonic() - self._checked < self._recheck_seconds:
            return None
        self._asked, self._checked = asked, time.monotonic()
        table = config.names_file or AMNEZIA_CLIENTS_TABLE
        configs = {name: config_path(config, tool, name) for name in interfaces}
        texts = await self._texts([table, *configs.values()], config)
        by_peer: dict[PeerKey, str] = {}
        for name, path in configs.items():
            by_peer.update(((name, key), label) for key, label in peer_names(texts.get(path, "")).items())
        return Names(parse_clients_table(texts[table]) if table in texts else {}, by_peer)

    async def _texts(self, paths: list[str], config: Config) -> dict[str, str]:
        """The text of every path that exists, each read again only when it changed."""
        stamps = await self._stamps(paths, config)
        texts = {}
        for path, stamp in stamps.items():
            cached = self._files.get(path)
            if cached is None or cached[0] != stamp:
                text = await self._read(path, config)
                if text is None:
                    continue
                cached = self._files[path] = (stamp, text)
            texts[path] = cached[1]
        for path in set(self._files) - set(stamps):
            del self._files[path]
        return texts

    async def _stamps(self, paths: list[str], config: Config) -> dict[str, Stamp]:
        """The stamp of each path that exists."""
        if not config.exec_prefix:
            stamps = {}
            for path in paths:
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                stamps[path] = (info.st_mtime_ns, info.st_size, info.st_ino)
            return stamps
        try:
            # %Y is whole seconds in busybox's stat; size and inode catch most rewrites within one.
            command = [*config.exec_prefix, "stat", "-c", "%n\t%Y\t%s\t%i", *paths]
            output = await run_command(command, config.tool_timeout)
        except ToolError as exc:
            self._complain("names", f"cannot look for names files: {exc}")
            return {}
        stamps = {}
        for line in output.stdout.decode("utf-8", "replace").splitlines():
            name, *numbers = line.rsplit("\t", 3)
            if name in paths and len(numbers) == 3 and all(n.isdigit() for n in numbers):
                stamps[name] = (int(numbers[0]), int(numbers[1]), int(numbers[2]))
        return stamps

    async def _read(self, path: str, config: Config) -> str | None:
        try:
            if config.exec_prefix:
                output = await run_command(
                    [*config.exec_prefix, "cat", path], config.tool_timeout, MAX_NAMES_FILE_BYTES
                )
                if output.returncode != 0:
                    raise ToolError(f"cat exited with status {output.returncode}")
                data = output.stdout
            else:
                with open(path, "rb") as handle:
                    data = handle.read(MAX_NAMES_FILE_BYTES + 1)
                if len(data) > MAX_NAMES_FILE_BYTES:
                    raise ToolError(f"larger than {MAX_NAMES_FILE_BYTES} bytes")
        except (OSError, ToolError) as exc:
            self._complain(path, f"cannot read names from {path}: {exc}")
            return None
        self._complaints.pop(path, None)
        return data.decode("utf-8", "replace")

    def _complain(self, what: str, message: str) -> None:
        if self._complaints.get(what) != message:
            self._complaints[what] = message
            log.warning("%s", message)
