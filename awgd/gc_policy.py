"""When CPython's cyclic garbage collector may run in the daemon.

The daemon keeps several objects per peer for its whole life (about half a million on a
50,000-peer server), and a busy sample replaces a good share of them. With the default
collector that churn triggers full collections that walk every one of those objects again,
which made a busy sample much slower (tests/bench/NOTES.md). Everything awgd keeps per peer
is acyclic and freed by reference counting; the collector is only needed for the odd cycle
(an exception's traceback, asyncio internals). So:

- no collection starts while a sample runs (`sampling`);
- when it ends, everything alive is frozen (gc.freeze): later collections skip it and
  look only at what is new since;
- every FULL_COLLECTION_SECONDS the freeze is lifted and one full collection runs,
  so that a cycle that was alive when frozen and died since is still reclaimed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

# A full collection of a 50,000-peer daemon takes tens of milliseconds; once every ten
# minutes it costs nothing noticeable and bounds what a frozen cycle can hold on to.
FULL_COLLECTION_SECONDS = 600.0


class CollectorPolicy:
    def __init__(self) -> None:
        self._last_full = time.monotonic()

    @contextmanager
    def sampling(self) -> Iterator[None]:
        """Hold the collector off for one sample, then freeze what it left alive."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            now = time.monotonic()
            if now - self._last_full >= FULL_COLLECTION_SECONDS:
                gc.unfreeze()
                gc.collect()
                self._last_full = now
            gc.freeze()
            if was_enabled:
                gc.enable()
