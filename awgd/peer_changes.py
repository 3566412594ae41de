"""Which peers of an interface may have changed between two readings. Pure.

DumpParser hands back the very same Peer object for a line printed unchanged, so an
unchanged peer is the identical object in both readings. The kernel lists peers in a
stable order, and then the two readings line up position by position: comparing
identities is a C-level pass, about 25 ns a peer. wireguard-go (and amneziawg-go) list
them in a different order on every dump (Go map order), and then the identities are
compared as sets, still without a Python-level step per unchanged peer.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, count
from operator import is_not

from awgd.dump_parser import Peer


def changed_peers(old: Sequence[Peer], new: Sequence[Peer]) -> list[Peer] | None:
    """The peers of `new` that may differ from `old`, or None when the two list different
    keys (a peer added, removed or re-keyed): then the caller must compare every peer.

    A peer not returned is, by identity, the same value as in `old`. A returned one may
    still be equal (the same line parsed again): the caller compares values. Both
    sequences must hold distinct keys (as parsed interfaces do) and be alive, as
    identities are compared through id().
    """
    if new is old:
        return []
    if len(new) != len(old):
        return None
    if _LAST and _LAST[0][0] is old and _LAST[0][1] is new:  # the sampler and the state ask alike
        result = _LAST[0][2]
    else:
        result = _changed(old, new)
        _LAST[:] = [(old, new, result)]
    return None if result is None else list(result)


# The last question and its answer. It holds both sequences, so their ids stay theirs.
_LAST: list[tuple[Sequence[Peer], Sequence[Peer], list[Peer] | None]] = []


def _changed(old: Sequence[Peer], new: Sequence[Peer]) -> list[Peer] | None:
    changed = []
    for index in compress(count(), map(is_not, new, old)):
        peer = new[index]
        if peer[0] != old[index][0]:  # the public keys; an index is cheaper than a field name
            return _unordered(old, new)
        changed.append(peer)
    return changed


def _unordered(old: Sequence[Peer], new: Sequence[Peer]) -> list[Peer] | None:
    before = dict(zip(map(id, old), old, strict=True))
    now = dict(zip(map(id, new), new, strict=True))
    changed = [now[i] for i in now.keys() - before.keys()]
    gone = [before[i] for i in before.keys() - now.keys()]
    # As many peers on both sides, and the same keys among those that differ: only values changed.
    if {peer.public_key for peer in gone} != {peer.public_key for peer in changed}:
        return None
    return changed
