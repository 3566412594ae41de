"""Turn (previous checkpoint, new observation) into per-peer byte deltas. Pure.

The rules are DESIGN.md "Accounting rules", per peer and per direction:
1. the interface's ifindex or the boot id changed  -> the counters restarted: delta = counter
2. the peer was absent and is present again         -> delta = counter
3. counter >= checkpoint                            -> delta = counter - checkpoint
4. counter <  checkpoint (reset between samples)    -> delta = counter
5. a peer never seen before                         -> delta = counter, except in the very
   first sample of a brand-new ledger, where every counter is only a baseline (delta = 0).

An ifindex or boot id that could not be read is None and is never evidence of a change:
remembering a stale ifindex instead would book a re-created interface's counters twice
(once by rule 4 while the ifindex was unknown, again by rule 1 when it reappears).

Known limit: a reset whose counter climbs past its old value before the next sample,
with neither the ifindex nor the boot id changing, loses the difference. Nothing is ever
counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

PeerKey = tuple[str, str]  # (interface name, public key)
Counters = tuple[int, int]  # (rx_bytes, tx_bytes)


class PeerCheckpoint(NamedTuple):
    """A NamedTuple: one is made per moving peer per sample, 50,000 on a busy server, and a
    tuple of ints is cheap to build and is left alone by the cyclic garbage collector."""

    rx: int
    tx: int
    present: bool


@dataclass(frozen=True, slots=True)
class InterfaceCheckpoint:
    ifindex: int | None
    boot_id: str | None


@dataclass(frozen=True, slots=True)
class Observation:
    """What one sample saw, reduced to what the accounting needs."""

    counters: Mapping[str, Mapping[str, Counters]]  # interface read -> public key -> counters
    ifindexes: Mapping[str, int]  # interfaces whose ifindex is known
    boot_id: str | None
    # Interfaces whose state is unknown in this sample (the tool could not read them, or
    # they are not watched): their checkpoints stay untouched, their peers are not absent.
    unread: frozenset[str] = frozenset()
    # Interfaces whose `counters` list only the peers that may have moved: every other peer
    # checkpointed on them is present now, with the counters its checkpoint holds. Never a
    # restarted interface (see `restarted`). On a large, mostly idle server this spares
    # visiting 50,000 unchanged peers every sample; the result is the same either way.
    only_changed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Booking:
    """The result of one sample: only what changed."""

    deltas: dict[PeerKey, Counters] = field(default_factory=dict)  # non-zero deltas only
    peers: dict[PeerKey, PeerCheckpoint] = field(default_factory=dict)  # changed checkpoints
    interfaces: dict[str, InterfaceCheckpoint] = field(default_factory=dict)  # changed checkpoints


def account(
    peers: Mapping[str, Mapping[str, PeerCheckpoint]],
    interfaces: Mapping[str, InterfaceCheckpoint],
    observation: Observation,
    *,
    first_sample: bool,
) -> Booking:
    """Book one observation against the checkpoints (interface -> public key -> checkpoint)."""
    booking = Booking()
    deltas, new_peers, new_ifaces = booking.deltas, booking.peers, booking.interfaces
    new_checkpoint = tuple.__new__
    boot_id = observation.boot_id
    for name, counters in observation.counters.items():
        old_iface = interfaces.get(name)
        ifindex = observation.ifindexes.get(name)
        restart = restarted(old_iface, ifindex, boot_id)
        if old_iface is None or old_iface.ifindex != ifindex or old_iface.boot_id != boot_id:
            new_ifaces[name] = InterfaceCheckpoint(ifindex, boot_id)
        old_peers = peers.get(name, {})
        # Once per moving peer per sample: tuple indexing and tuple.__new__ rather than
        # attribute access and the NamedTuple's Python-level constructor.
        for key, (rx, tx) in counters.items():
            old = old_peers.get(key)
            if old is None:
                drx, dtx = (0, 0) if first_sample else (rx, tx)
            else:
                old_rx, old_tx, present = old
                if restart or not present:
                    drx, dtx = rx, tx
                elif old_rx == rx and old_tx == tx:
                    continue  # idle: nothing to book, nothing to write (most peers, most samples)
                else:
                    drx = rx - old_rx if rx >= old_rx else rx
                    dtx = tx - old_tx if tx >= old_tx else tx
            peer_key = (name, key)
            if drx or dtx:
                deltas[peer_key] = (drx, dtx)
            new_peers[peer_key] = new_checkpoint(PeerCheckpoint, (rx, tx, True))
        if name in observation.only_changed:
            if restart:
                raise ValueError(f"interface {name} restarted: its counters must all be listed")
            continue  # every peer not listed is present and unchanged
        for key, old in old_peers.items():
            if old.present and key not in counters:
                new_peers[(name, key)] = PeerCheckpoint(old.rx, old.tx, False)
    # An interface that was read before and is neither listed nor unread now is gone.
    for name, old_peers in peers.items():
        if name in observation.counters or name in observation.unread:
            continue
        for key, old in old_peers.items():
            if old.present:
                new_peers[(name, key)] = PeerCheckpoint(old.rx, old.tx, False)
    return booking


def restarted(old: InterfaceCheckpoint | None, ifindex: int | None, boot_id: str | None) -> bool:
    """Rule 1: the interface's counters restarted since its checkpoint."""
    return old is not None and (_changed(old.ifindex, ifindex) or _changed(old.boot_id, boot_id))


def _changed(old: object | None, new: object | None) -> bool:
    return old is not None and new is not None and old != new


def advance(
    peers: dict[str, dict[str, PeerCheckpoint]],
    interfaces: dict[str, InterfaceCheckpoint],
    booking: Booking,
) -> None:
    """Fold a committed booking into in-memory checkpoints (in place: they can hold 50,000 peers)."""
    current_name, current = None, None
    for (name, key), checkpoint in booking.peers.items():
        if name != current_name:  # bookings come grouped by interface: one lookup per run
            current_name, current = name, peers.setdefault(name, {})
        current[key] = checkpoint  # type: ignore[index]
    interfaces.update(booking.interfaces)
