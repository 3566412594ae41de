"""Apply a generated history to a ledger file, resuming after the last booked sample.

Run as a separate process so that the crash-safety test can SIGKILL it at any moment.
Usage: crash_worker.py LEDGER SEED SAMPLES PEERS
"""

from __future__ import annotations

import sys
from zoneinfo import ZoneInfo

from crash_history import history

from awgd.accounting import account, advance
from awgd.ledger import Ledger
from awgd.periods import local_day, period_containing

ZONE = ZoneInfo("Europe/Moscow")


def main() -> None:
    path, seed, samples, peers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ledger = Ledger.open(f"sqlite:///{path}")
    checkpoints, interfaces = ledger.checkpoints()
    print("ready", flush=True)
    done = ledger.last_sample_at
    for sample in history(seed, samples, peers)[0]:
        if done is not None and sample.at <= done:
            continue  # booked before the last kill; idle samples after it book nothing anyway
        booking = account(checkpoints, interfaces, sample.observation, first_sample=ledger.is_new)
        period = period_containing(sample.at, "0 0 1 * *", ZONE)
        ledger.apply(booking, at=sample.at, period=period, day=local_day(sample.at, ZONE))
        advance(checkpoints, interfaces, booking)
    print("finished", flush=True)


if __name__ == "__main__":
    main()
