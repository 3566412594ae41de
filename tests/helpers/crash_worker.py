"""Apply a generated history to a ledger file, resuming after the last booked sample.

Run as a separate process so that the crash-safety test can SIGKILL it at any moment.
Usage: crash_worker.py LEDGER SEED SAMPLES PEERS
"""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from booking import Booking
from crash_history import START, history

ZONE = ZoneInfo("Europe/Moscow")


def main() -> None:
    path, seed, samples, peers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    booking = Booking(Path(path), ZONE, at=START)
    print("ready", flush=True)
    done = booking.books.last_booked_at
    for sample in history(seed, samples, peers)[0]:
        if done is not None and sample.taken_at <= done:
            continue  # booked before the last kill; idle samples after it book nothing anyway
        booking.book(sample)  # to the period and day that contain it
    print("finished", flush=True)


if __name__ == "__main__":
    main()
