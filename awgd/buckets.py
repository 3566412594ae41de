"""A peer's usage in a period or a day, and the one rule for the open one.

The ledger keeps running totals for one open period and one open day beside its closed rows
(awgd.ledger): the open bucket's usage is its closed row, when it has one (a clock that went
back reopened it), plus the running totals. History, traffic.changes and the books all read
a bucket by this rule, `with_running`, and by no other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    start: int  # Unix seconds for periods, YYYYMMDD for days
    end: int  # Unix seconds for periods, YYYYMMDD of the day itself for days
    rx: int
    tx: int


def with_running(closed: Bucket | None, start: int, end: int, running: tuple[int, int]) -> Bucket:
    """The open bucket (start, end): its closed row, if any, plus the running totals."""
    if closed is None:
        return Bucket(start, end, *running)
    return Bucket(start, closed.end, closed.rx + running[0], closed.tx + running[1])
