"""A deterministic history of samples whose true traffic is known exactly.

Shared by the crash-safety test (the truth) and its worker process (the samples).
Resets happen only where DESIGN.md says they can be seen: an interface re-created with
a new ifindex, or a peer removed for at least one sample.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from booking import reading

from awgd.system_reader import Reading

START = datetime(2026, 11, 30, 19, 0, tzinfo=UTC)  # crosses 1 Dec 00:00 Moscow (21:00 UTC)
STEP = timedelta(minutes=1)
INTERFACES = ("wg0", "wg1")


def peer_key(index: int) -> str:
    return f"{index:042d}A="


def history(seed: int, samples: int, peers: int) -> tuple[list[Reading], dict[tuple[str, str], tuple[int, int]]]:
    """The samples, and the true traffic per peer after the first (baseline) sample."""
    rng = random.Random(seed)
    ifindex = {"wg0": 10, "wg1": 11}
    counters = {
        (i, peer_key(p)): [rng.randrange(10**9), rng.randrange(10**9)] for i in INTERFACES for p in range(peers)
    }
    configured = dict.fromkeys(counters, True)
    true = {key: (0, 0) for key in counters}
    out = []
    for n in range(samples):
        if n:
            if rng.random() < 0.03:  # an interface re-created: new ifindex, counters from zero
                iface = rng.choice(INTERFACES)
                ifindex[iface] += 100
                for key in counters:
                    if key[0] == iface:
                        counters[key] = [0, 0]
            for key, counter in counters.items():
                if rng.random() < 0.01:  # removed, or back with fresh counters
                    configured[key] = not configured[key]
                    counter[0] = counter[1] = 0
                if configured[key] and rng.random() < 0.5:
                    drx, dtx = rng.randrange(10**6), rng.randrange(10**6)
                    counter[0] += drx
                    counter[1] += dtx
                    rx, tx = true[key]
                    true[key] = (rx + drx, tx + dtx)
        seen = {
            i: {k: (c[0], c[1]) for (iface, k), c in counters.items() if iface == i and configured[(iface, k)]}
            for i in INTERFACES
        }
        out.append(reading(START + n * STEP, seen, ifindexes=dict(ifindex)))
    return out, true
