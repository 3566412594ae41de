"""The instant plans are judged at: the wall clock, unless it has just jumped ahead of what the
monotonic clock has counted since it was last believed.

An expiry is final (only a new plan lifts it) and a window, once renewed, stays renewed; a
forward excursion of the wall clock (a bad time source, a VM's clock, an operator's typo
corrected a minute later) must not take either decision early. So a wall clock that runs
ahead of `anchor + monotonic time since` by more than TOLERANCE_SECONDS is not believed
until it has stayed ahead for STEP_CONFIRM_SECONDS of monotonic time: NTP steps a clock
that was behind once and for good, and then it is believed. A clock that goes back is
believed at once (the plans' rules already keep time moving forward, awgd.quota).

Pure but for the two clocks it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)

# Slewing (NTP's adjtime) moves the wall clock by at most 0.5 ms a second, and the anchor
# follows every reading that agrees: only a step shows as more than this.
TOLERANCE_SECONDS = 2.0
# How long a wall clock must stay ahead before it is believed. Longer than an excursion a
# stray time source makes (the review's was 12 s), short against a plan's window.
STEP_CONFIRM_SECONDS = 120.0


class TrustedClock:
    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._anchor = (wall(), monotonic())  # a wall reading believed, and when it was taken
        self._ahead_since: float | None = None  # monotonic: when the wall clock ran ahead

    def timestamp(self) -> float:
        wall, mono = self._wall(), self._monotonic()
        expected = self._anchor[0] + (mono - self._anchor[1])
        if wall <= expected + TOLERANCE_SECONDS:
            self._anchor, self._ahead_since = (wall, mono), None
            return wall
        if self._ahead_since is None:
            self._ahead_since = mono
            log.warning(
                "the wall clock jumped %.0f s ahead of the monotonic clock: plans are judged by the "
                "monotonic clock until it stays ahead for %.0f s",
                wall - expected,
                STEP_CONFIRM_SECONDS,
            )
        if mono - self._ahead_since >= STEP_CONFIRM_SECONDS:
            log.warning("the wall clock stayed ahead: believed from now on")
            self._anchor, self._ahead_since = (wall, mono), None
            return wall
        return expected

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp(), UTC)
