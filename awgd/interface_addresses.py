"""The interfaces' own addresses (`server.status` shows them; `peer.add` picks from their
subnets), read with `ip -o addr show` through the prefix.

Addresses change when an operator reconfigures the server, so a sample reads them at most
once a minute (RECHECK_SECONDS), or at once when the interfaces it reads change; `peer.add`
reads them itself, fresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from awgd.addresses import Address, parse_ip_addr
from awgd.tool_runner import ToolError, run_command

log = logging.getLogger(__name__)

RECHECK_SECONDS = 60.0


async def read_addresses(
    exec_prefix: Sequence[str], timeout: float, interfaces: Sequence[str]
) -> dict[str, tuple[Address, ...]]:
    """Each interface's own addresses; raises ToolError."""
    output = await run_command([*exec_prefix, "ip", "-o", "addr", "show"], timeout)
    if output.returncode != 0:
        raise ToolError(f"ip exited with status {output.returncode}")
    text = output.stdout.decode("utf-8", "replace")
    return {name: parse_ip_addr(text, name) for name in interfaces}


class AddressReader:
    def __init__(self, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self._recheck_seconds = recheck_seconds
        self._checked = -float("inf")
        self._asked: tuple[str, ...] = ()
        self._complaint: str | None = None

    async def read(
        self, exec_prefix: Sequence[str], timeout: float, interfaces: Sequence[str]
    ) -> dict[str, tuple[str, ...]] | None:
        """The addresses now, or None when nothing was due to be checked (or `ip` failed)."""
        asked = tuple(sorted(interfaces))
        if asked == self._asked and time.monotonic() - self._checked < self._recheck_seconds:
            return None
        self._asked, self._checked = asked, time.monotonic()
        try:
            found = await read_addresses(exec_prefix, timeout, interfaces)
        except ToolError as exc:
            message = f"interface addresses unknown: {exc}"
            if message != self._complaint:
                self._complaint = message
                log.warning("%s", message)
            return None
        self._complaint = None
        return {name: tuple(str(address) for address in found[name]) for name in interfaces}
