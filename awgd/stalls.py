"""Stalled peers: "connected, but no traffic" (API v3, section 4). Pure.

A peer is stalled when, for at least `wireguard.stall_seconds`, its device has kept starting
handshakes and the server has answered them, yet no session came of it. The server sees that
in the counters each sample already has:

- its rx grew only by handshake initiations: a positive multiple of INITIATION_BYTES (the
  receiving side counts an initiation at WireGuard's size, AmneziaWG's junk and prefixes left
  out; data and keepalives are 32 + a multiple of 16, so a session's traffic is a multiple of
  148 only by chance, and never for long: see below);
- its tx grew too: the server answered (a response, 92 bytes plus S2 and junk);
- its latest handshake did not advance: a responder records a handshake only when the first
  packet of the new session arrives, which is what never comes.

A device whose obfuscation parameters differ from the server's (a wrong H4 on real
amneziawg-go: rx 148, 296, ..., handshake 0), or whose data a middlebox drops, shows exactly
that. A device that is off sends nothing and is not stalled; one that is never answered (a
wrong key, H1 or port) never reaches the peer's counters and cannot be seen per peer. A
session makes a new handshake at least every 2 minutes while anything flows (WireGuard's
REKEY_AFTER_TIME), so a stall of the default 300 s is never a busy session whose deltas
happened to be multiples of 148.

Episodes: a suspicion starts at the reading before the first initiation-only growth (the
device began after it), so a stall is announced within `stall_seconds` plus one sample. It is
dropped, unannounced, by any other growth, a new handshake, or QUIET_SECONDS without an
initiation. Once announced (`peer.stalled`), it lasts until a session is made
(`peer.recovered`: the latest handshake advances) or the peer leaves its interface; a device
that gives up stays stalled, as its last attempts were.
"""

from __future__ import annotations

from dataclasses import dataclass

# What the receiving side counts for one handshake initiation, AmneziaWG or WireGuard
# (measured with tcpdump on amneziawg-go 0.2.12 and 3.1 and on wireguard-go: docs/DESIGN.md).
INITIATION_BYTES = 148
# A trying device sends an initiation every 5 s until it is answered, and again once nothing
# came back for 15 s after it sent (REKEY_TIMEOUT, KEEPALIVE_TIMEOUT); with the usual 25 s
# keepalive it never goes quiet for two minutes. Longer without one, a suspicion is over.
QUIET_SECONDS = 120
# wireguard.stall_seconds: the default (API v3), and the least accepted (a test's scale).
DEFAULT_STALL_SECONDS = 300
MIN_STALL_SECONDS = 10


@dataclass(frozen=True, slots=True)
class Stall:
    """A peer suspected of, or announced as, stalling."""

    since: int  # Unix seconds: the reading before its first initiation-only growth
    handshake: int  # its latest handshake then (0: never)
    last: int  # the last reading that saw an initiation-only growth
    announced: bool  # peer.stalled was recorded


def initiations_only(drx: int, dtx: int) -> bool:
    """A sample's growth that is nothing but answered handshake initiations."""
    return drx > 0 and drx % INITIATION_BYTES == 0 and dtx > 0


def observe(
    stall: Stall | None,
    *,
    drx: int,
    dtx: int,
    handshake: int,
    at: int,
    before: int,
    stall_seconds: int,
) -> tuple[Stall | None, str | None]:
    """A peer's next state after a reading at `at` (the one before was at `before`) that grew
    its counters by (drx, dtx) and shows `handshake`, and the event it makes, if any."""
    if stall is not None and handshake not in (stall.handshake, 0):
        return None, "peer.recovered" if stall.announced else None  # a session was made
    if initiations_only(drx, dtx):
        if stall is None or (not stall.announced and before - stall.last > QUIET_SECONDS):
            stall = Stall(since=min(before, at), handshake=handshake, last=at, announced=False)
        else:
            stall = Stall(stall.since, stall.handshake, at, stall.announced)
        if not stall.announced and at - stall.since >= stall_seconds:
            return Stall(stall.since, stall.handshake, at, True), "peer.stalled"
        return stall, None
    if stall is None or stall.announced:
        return stall, None
    if drx % INITIATION_BYTES or at - stall.last > QUIET_SECONDS:
        return None, None  # something else arrived, or nothing for long: not what a stall is
    return stall, None
