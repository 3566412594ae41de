"""Make each interface's speed limits what the ledger says (awgd.shaping plans the commands;
this runs them, with `tc` and `ip` from iproute2, through `exec_prefix` where one is set).

Called by awgd.peer_admin after every sample and after every change, always under its lock:
that lock is the one beside this state (what was applied to each interface). Only what
changed is sent; an interface with a new ifindex (re-created from its file, a reboot, a
container restart) is set up again from nothing, which is how limits come back on their own.
A failed `tc` run forgets what was applied to that interface, so the next sample sets it up
again from nothing; the failure is logged once per interface and cause.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from awgd.books import Books
from awgd.config import Config
from awgd.server_files import with_stdin
from awgd.shaping import (
    InterfaceShaping,
    ShapingError,
    Steps,
    Wanted,
    batch,
    effective,
    ifb_name,
    plan,
    without,
)
from awgd.tool_runner import ToolError, run_command

log = logging.getLogger(__name__)

# A sample looks at every limited peer only when some limited peer's settings changed, an
# interface came, went, was re-created or lost its tree, or this long has passed: a limited
# peer's allowed IPs changed by hand (`awg set`), or a peer removed and put back by hand, get
# their limit within it. A look at 5,000 limited peers costs about 16 ms, a quarter of a
# 50,000-peer sample with 1 % moving (tests/bench, section 11): not at every sample.
FULL_CHECK_SECONDS = 900.0


class Shaper:
    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        # What was applied to each interface; read and changed only under PeerAdmin's lock.
        self._applied: dict[str, InterfaceShaping] = {}
        # Which reading of the links each interface's tree was last changed after: `ip`'s view
        # from before a change cannot say the change is gone.
        self._changed_at: dict[str, int] = {}
        self._complaints: dict[str, str] = {}
        self._stamp = -1  # Books.shaping_stamp at the last full look
        self._looked_at = -FULL_CHECK_SECONDS  # time.monotonic() of the last full look
        self._read: frozenset[str] = frozenset()  # the interfaces read then (one coming up: look)

    async def reconcile(self, books: Books) -> dict[str, str]:
        """Every interface with limits, or that had some, made to agree with the books; what
        failed, by interface."""
        now = time.monotonic()
        read = frozenset(name for name, iface in books.interfaces.items() if iface.read)
        if (
            books.shaping_stamp == self._stamp
            and read == self._read
            and now - self._looked_at < FULL_CHECK_SECONDS
            and not any(self._unsettled(name, state, books) for name, state in self._applied.items())
        ):
            return {}
        self._stamp, self._read, self._looked_at = books.shaping_stamp, read, now
        wanted: dict[str, dict[str, Wanted]] = {}
        for key in books.shaped:  # the books keep this set: a sample never walks every peer
            book = books.peers.get(key)
            # A removed peer's addresses may be given to someone else: its limit waits for it.
            if book is None or not book.present:
                continue
            limit = effective(book.settings.rate_limit, book.settings.throttle)
            if limit is None:
                continue
            if book.allowed_ips:
                wanted.setdefault(book.interface, {})[book.public_key] = Wanted(limit, book.allowed_ips)
        problems = {}
        for name in sorted(set(wanted) | {n for n, s in self._applied.items() if s.peers}):
            iface = books.interfaces.get(name)
            if iface is None or not iface.read:
                if name in self._applied:  # gone: what it had went with it
                    self._applied[name] = without(self._applied[name])
                continue
            ifindex = iface.checkpoint.ifindex if iface.checkpoint is not None else None
            state = self._applied.get(name)
            if state is not None and books.links_read > self._changed_at.get(name, -1) and state.gone(books.links):
                log.info("the speed limits on %s are gone (re-created?): setting them up again", name)
                self._applied[name] = without(state)
            problem = await self._apply(name, ifindex, wanted.get(name, {}))
            if problem is None:
                self._changed_at[name] = books.links_read
            if problem is not None:
                problems[name] = problem
        return problems

    def _unsettled(self, name: str, state: InterfaceShaping, books: Books) -> bool:
        """Whether the interface needs a look: it went, came back, or lost its tree."""
        iface = books.interfaces.get(name)
        if iface is None or not iface.read:
            return bool(state.peers)
        ifindex = iface.checkpoint.ifindex if iface.checkpoint is not None else None
        if state.lost or ifindex != state.ifindex:
            return True
        return books.links_read > self._changed_at.get(name, -1) and state.gone(books.links)

    async def _apply(self, name: str, ifindex: int | None, wanted: Mapping[str, Wanted]) -> str | None:
        state = self._applied.get(name)
        if state is None:
            state = self._applied[name] = InterfaceShaping(name, ifb_name(name))
        try:
            steps = plan(state, ifindex, wanted)
        except ShapingError as exc:
            self._applied[name] = without(state)
            self._complain(name, f"cannot limit speeds on {name}: {exc}")
            return str(exc)
        if steps.empty:
            return None
        problem = await self._run(steps)
        if problem is None:
            self._complaints.pop(name, None)
            log.info("speed limits on %s: %d peers limited", name, len(state.peers))
        else:
            self._applied[name] = without(state)  # set up again from nothing next time
            self._complain(name, f"cannot limit speeds on {name}: {problem}")
        return problem

    async def _run(self, steps: Steps) -> str | None:
        """Run the steps; the reason the essential part failed, or None."""
        config = self._config()
        prefix = list(config.exec_prefix)
        for argv in steps.reset:
            await self._quiet([*prefix, "tc", *argv])
        for argv in steps.reset_ip:
            await self._quiet([*prefix, "ip", *argv])
        for argv in steps.ip_before:
            await self._quiet([*prefix, "ip", *argv])
        problem = None
        if steps.tc:
            try:
                output = await run_command(
                    [*with_stdin(config.exec_prefix), "tc", "-batch", "-"],
                    config.tool_timeout,
                    stdin=batch(steps.tc).encode(),
                )
            except (ToolError, ShapingError) as exc:
                problem = str(exc)
            else:
                if output.returncode != 0:
                    problem = output.stderr.decode(errors="replace").strip()[:300] or f"tc exited {output.returncode}"
        for argv in steps.ip_after:
            await self._quiet([*prefix, "ip", *argv])
        return problem

    async def _quiet(self, argv: list[str]) -> None:
        """A step whose failure is expected (nothing to delete): run, and let it fail."""
        try:
            await run_command(argv, self._config().tool_timeout)
        except ToolError as exc:
            log.debug("%s: %s", " ".join(argv), exc)

    def _complain(self, name: str, message: str) -> None:
        if self._complaints.get(name) != message:
            self._complaints[name] = message
            log.error("%s", message)
