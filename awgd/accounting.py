"""The accounting rules: (checkpoints, what a sample saw) -> deltas and new checkpoints. Pure.

docs/DESIGN.md "Accounting". Per peer and per direction:

1. its interface was re-created or the host rebooted since the checkpoint (a new ifindex or
   boot id): the counters restarted, so the delta is the whole counter;
2. the peer was absent at the checkpoint and is present now: the whole counter;
3. the counter is at or above the checkpoint: the difference;
4. the counter is below the checkpoint: it restarted between two samples, so the delta is
   the whole counter;
5. a peer never seen before: the whole counter, except in the very first sample of a new
   ledger, where every counter is only a baseline (delta 0): that traffic happened before
   awgd was installed, at an unknown time.

An ifindex or boot id that could not be read is None, and is never evidence of a restart:
remembering a stale ifindex instead would book a re-created interface's counters twice
(once by rule 4 while the ifindex was unknown, again by rule 1 when it reappears).

Known limit: a restart whose counter climbs past its old value before the next sample,
with neither the ifindex nor the boot id changing, loses the difference. Nothing is ever
counted twice.

`account` is the plain statement of the rules over whole samples. The daemon books samples
with a tuned loop over only the peers that changed (awgd.books), which must give the same
result; tests/test_incremental.py checks that it does, over random histories.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

PeerKey = tuple[str, str]  # (interface name, public key)
Counters = tuple[int, int]  # (rx_bytes, tx_bytes)


class Checkpoint(NamedTuple):
    """A peer's counters at the last booked sample, and whether it was present then."""

    rx: int
    tx: int
    present: bool


@dataclass(frozen=True, slots=True)
class InterfaceCheckpoint:
    """The evidence of rule 1: the interface's ifindex and the host's boot id when last booked."""

    ifindex: int | None
    boot_id: str | None


@dataclass(frozen=True, slots=True)
class Observation:
    """What one sample saw, reduced to what the rules need."""

    counters: Mapping[str, Mapping[str, Counters]]  # interface read -> public key -> counters
    ifindexes: Mapping[str, int]  # interfaces whose ifindex is known
    boot_id: str | None
    # Interfaces whose state is unknown in this sample (the tool could not read them, or
    # they are not watched): their checkpoints stay as they are, their peers are not absent.
    unread: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Booking:
    """What one sample changes: only what differs from the checkpoints."""

    deltas: dict[PeerKey, Counters] = field(default_factory=dict)  # non-zero deltas only
    peers: dict[PeerKey, Checkpoint] = field(default_factory=dict)  # changed checkpoints
    interfaces: dict[str, InterfaceCheckpoint] = field(default_factory=dict)  # changed checkpoints


def restarted(old: InterfaceCheckpoint | None, ifindex: int | None, boot_id: str | None) -> bool:
    """Rule 1: the interface's counters restarted since its checkpoint."""
    return old is not None and (_changed(old.ifindex, ifindex) or _changed(old.boot_id, boot_id))


def _changed(old: object | None, new: object | None) -> bool:
    return old is not None and new is not None and old != new


def delta(old: Checkpoint | None, rx: int, tx: int, *, restart: bool, baseline: bool) -> Counters:
    """Rules 1 to 5 for one peer that is present now with counters (rx, tx)."""
    if old is None:
        return (0, 0) if baseline else (rx, tx)  # rule 5
    if restart or not old.present:
        return rx, tx  # rules 1 and 2
    return (
        rx - old.rx if rx >= old.rx else rx,  # rules 3 and 4
        tx - old.tx if tx >= old.tx else tx,
    )


def account(
    peers: Mapping[str, Mapping[str, Checkpoint]],
    interfaces: Mapping[str, InterfaceCheckpoint],
    observation: Observation,
    *,
    baseline: bool,
) -> Booking:
    """Book one observation against the checkpoints (interface -> public key -> checkpoint).

    `baseline` is true for the first sample of a new ledger (rule 5).
    """
    booking = Booking()
    for name, counters in observation.counters.items():
        old_iface = interfaces.get(name)
        ifindex = observation.ifindexes.get(name)
        restart = restarted(old_iface, ifindex, observation.boot_id)
        if old_iface != InterfaceCheckpoint(ifindex, observation.boot_id):
            booking.interfaces[name] = InterfaceCheckpoint(ifindex, observation.boot_id)
        old_peers = peers.get(name, {})
        for key, (rx, tx) in counters.items():
            old = old_peers.get(key)
            moved = delta(old, rx, tx, restart=restart, baseline=baseline)
            if moved != (0, 0):
                booking.deltas[(name, key)] = moved
            checkpoint = Checkpoint(rx, tx, True)
            if checkpoint != old:
                booking.peers[(name, key)] = checkpoint
        for key, old in old_peers.items():
            if old.present and key not in counters:
                booking.peers[(name, key)] = Checkpoint(old.rx, old.tx, False)  # removed
    # An interface that was read before and is neither read nor unread now is gone.
    for name, old_peers in peers.items():
        if name in observation.counters or name in observation.unread:
            continue
        for key, old in old_peers.items():
            if old.present:
                booking.peers[(name, key)] = Checkpoint(old.rx, old.tx, False)
    return booking
