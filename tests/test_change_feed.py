"""traffic.changes (awgd.change_feed): its cursors, and the property the fleet rests on: a
reader that applies every answer to its copy, whenever it asks (after each sample, after
missing many, across days, periods and restarts of the daemon), holds exactly what the ledger
holds. Books and a real SQLite ledger, driven as the daemon drives them (tests/helpers/booking.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from booking import Booking, reading
from conftest import key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from awgd import change_feed
from awgd.books import Books
from awgd.change_feed import BadCursor, Cursor
from awgd.periods import period_containing
from awgd_client import change_rows

ZONE = ZoneInfo("Europe/Moscow")
DAILY = "0 0 * * *"  # a period a day, so that a few steps cross periods and days
KEYS = [key(c) for c in "ABCD"]


def test_a_cursor_round_trips_and_anything_else_is_refused() -> None:
    cursor = Cursor("0123456789abcdef", 42, 1764536400, 20261128)
    assert Cursor.parse(cursor.encode()) == cursor
    for bad in (
        *("", "x", "a.b.c.d", "abc.1.2", "abc.1.2.3.4", "ab-c.1.2.3", "abc.-1.2.3", "abc.1.2." + "9" * 90),
        # The review's D14: digits str.isdigit takes and int() refuses, and numbers too big to bind.
        "abc.\u0661.2.3",
        "abc.\u00b2.2.3",
        "\u0661bc.1.2.3",
        "abc." + "9" * 40 + ".2.3",
        "ABC.1.2.3",
    ):
        with pytest.raises(BadCursor):
            Cursor.parse(bad)


def as_peers(page: change_feed.Page | dict[str, Any]) -> list[dict[str, Any]]:
    """A page of traffic.changes (its rows decoded, its other periods and days given to their
    peers) as one dict per peer: period [start, end, rx, tx], day [day, rx, tx] or None."""
    if isinstance(page, change_feed.Page):
        page = {"period": page.period, "day": page.day, "rows": page.rows, "periods": page.periods, "days": page.days}
    start, end = page["period"]
    found = []
    for row in page["rows"]:
        peer = change_rows.decode(row)
        key = [peer["interface"], peer["public_key"]]
        day_rx, day_tx = peer.pop("day_rx"), peer.pop("day_tx")
        peer["lifetime"] = [peer.pop("lifetime_rx"), peer.pop("lifetime_tx")]
        peer["period"] = [start, end, peer.pop("period_rx"), peer.pop("period_tx")]
        peer["day"] = [page["day"], day_rx, day_tx] if day_rx or day_tx else None
        peer["periods"] = [other[2:] for other in page["periods"] if other[:2] == key]
        peer["days"] = [other[2:] for other in page["days"] if other[:2] == key]
        found.append(peer)
    return found


class Reader:
    """What awgd-mirror keeps: the last answer for each peer, period and day."""

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.peers: dict[tuple[str, str], dict[str, Any]] = {}
        self.periods: dict[tuple[str, str, int], tuple[int, int, int]] = {}
        self.days: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.rounds_full = 0

    def round(self, booking: Booking, instance: str, limit: int) -> None:
        """One round, page by page, as Api.traffic_changes answers it."""
        books = booking.books
        cursor = None if self.cursor is None else Cursor.parse(self.cursor)
        after: int | None = None
        first: str | None = None
        while True:
            answer = change_feed.scope(cursor, instance, books)
            position = change_feed.position(instance, books).encode()
            first = first or position
            found = change_feed.changed(books, answer.since)
            chosen, more = change_feed.page(found, after, limit)
            if answer.first_start is None:
                rows = as_peers(change_feed.page_rows(chosen, books))
            else:
                ids = [book.id for book in chosen if book.id is not None]
                periods, days = booking.ledger.closed_buckets(ids, answer.first_start, answer.first_day)
                rows = as_peers(change_feed.page_rows(chosen, books, change_feed.closed_rows(chosen, periods, days)))
            self.rounds_full += answer.since == 0
            for row in rows:
                self.apply(row)
            if not more:
                break
            after = chosen[-1].serial
        self.cursor = first

    def apply(self, row: dict[str, Any]) -> None:
        peer = (row["interface"], row["public_key"])
        self.peers[peer] = {k: v for k, v in row.items() if k not in ("periods", "days")}
        for start, end, rx, tx in [*row["periods"], row["period"]]:  # as the view shows them
            self.periods[(*peer, start)] = (end, rx, tx)
        for day, rx, tx in [*row["days"], *([row["day"]] if row["day"] else [])]:
            self.days[(*peer, day)] = (rx, tx)


def truth(booking: Booking) -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
    """Every peer's figures and every non-zero period and day, as the ledger and books hold them."""
    books = booking.books
    everyone = list(books)
    ids = [book.id for book in everyone if book.id is not None]
    periods, days = booking.ledger.closed_buckets(ids, 0, 0)
    closed = change_feed.closed_rows(everyone, periods, days)
    peers, all_periods, all_days = {}, {}, {}
    for row in as_peers(change_feed.page_rows(everyone, books, closed)):
        peer = (row["interface"], row["public_key"])
        peers[peer] = {k: v for k, v in row.items() if k not in ("periods", "days")}
        for start, end, rx, tx in [*row["periods"], row["period"]]:
            if rx or tx or start == books.period_bounds[0]:
                all_periods[(*peer, start)] = (end, rx, tx)
        for day, rx, tx in [*row["days"], *([row["day"]] if row["day"] else [])]:
            all_days[(*peer, day)] = (rx, tx)
    return peers, all_periods, all_days


def seen(reader: Reader, books: Books) -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
    current = books.period_bounds[0]
    periods = {k: v for k, v in reader.periods.items() if v[1] or v[2] or k[2] == current}
    return reader.peers, periods, {k: v for k, v in reader.days.items() if v[0] or v[1]}


step = st.tuples(
    st.integers(-26, 30),  # hours later (a clock may also go back)
    st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 3))), min_size=4, max_size=4),
    st.sampled_from(["round", "round", "skip", "restart"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=12), limit=st.integers(1, 5))
def test_a_reader_applying_every_answer_holds_what_the_ledger_holds(tmp_path: Path, steps: Any, limit: int) -> None:
    path = tmp_path / f"ledger-{datetime.now().timestamp()}.sqlite3"
    at = datetime(2026, 3, 30, 20, 0, tzinfo=UTC)
    booking = Booking(path, ZONE, DAILY, at)
    instance = change_feed.new_instance()
    reader = Reader()
    counters = dict.fromkeys(KEYS, (0, 0))
    went_back = False  # the clock went back since the reader's last round
    try:
        for hours, moves, action in steps:
            at += timedelta(hours=hours, minutes=1)
            went_back |= hours < 0
            period = period_containing(at, DAILY, ZONE)
            if period != booking.books.period:  # what the scheduler does at a period's end
                begins = int(period.start.timestamp())
                ledger = booking.ledger
                booking.books.roll(period, ledger.closed_period_usage(begins), ledger.blocked_usage(begins))
            present = {}
            for public, move in zip(KEYS, moves, strict=True):
                if move is None:
                    continue  # absent from this dump
                rx, tx = counters[public]
                # 0 moves nothing; 3 restarts its counters (rule 4: the new value is booked)
                rx, tx = (move[0] * 100, move[1] * 100) if 3 in move else (rx + move[0] * 1000, tx + move[1] * 1000)
                counters[public] = (rx, tx)
                present[public] = (rx, tx)
            booking.book(reading(at, {"wg0": present}))
            if action == "restart":  # a new run of the daemon: books from the ledger, a new instance
                if went_back:
                    # The one case it cannot answer (docs/FLEET.md): which buckets a clock
                    # that went back touched is known to the run that saw it, not the next.
                    reader.round(booking, instance, limit)
                booking.close()
                booking = Booking(path, ZONE, DAILY, at)
                instance = change_feed.new_instance()
            if action != "skip":
                reader.round(booking, instance, limit)
                went_back = False
                assert seen(reader, booking.books) == truth(booking)
        reader.round(booking, instance, limit)
        assert seen(reader, booking.books) == truth(booking)
        # Caught up: nothing is listed again until something changes.
        before = reader.rounds_full
        books = booking.books
        answer = change_feed.scope(Cursor.parse(reader.cursor or ""), instance, books)
        assert change_feed.changed(books, answer.since) == [] and reader.rounds_full == before
    finally:
        booking.close()


# ---- traffic.changes on a real daemon --------------------------------------------------------------


def read_round(
    daemon: Any, cursor: str | None, limit: int, between: Any = None
) -> tuple[list[dict[str, Any]], str, bool]:
    """Every page of one round: the peers, the first page's cursor, whether it was full."""
    peers: list[dict[str, Any]] = []
    after = None
    first: str | None = None
    full = False
    while True:
        page = daemon.result("traffic.changes", cursor=cursor, after=after, limit=limit)
        if first is None:
            first, full = page["cursor"], page["full"]
            if between is not None:
                between()
        peers += as_peers(page)
        if not page["more"]:
            assert first is not None
            return peers, first, full
        after = page["next"]


def test_traffic_changes_pages_and_follows_a_cursor(daemons, scripted_tool: Any) -> None:  # type: ignore[no-untyped-def]
    from conftest import dump

    many = {f"{i:042d}A=": (i, i) for i in range(1, 26)}
    scripted_tool.set(dump({"wg0": many}, handshake=1_700_000_000))
    daemon = daemons(scripted_tool.path).start()

    def move_one() -> None:  # a sample between two pages of a round
        many[f"{1:042d}A="] = (1000, 1000)
        scripted_tool.set(dump({"wg0": many}, handshake=1_700_000_000))
        daemon.result("traffic.sample")

    peers, cursor, full = read_round(daemon, None, 10, between=move_one)
    assert full and sorted(p["public_key"] for p in peers) == sorted(many)  # each once
    assert all(p["period"][2:] == [0, 0] and p["lifetime"] == [0, 0] for p in peers)  # the baseline

    peers, cursor, full = read_round(daemon, cursor, 10)
    assert not full and [p["public_key"] for p in peers] == [f"{1:042d}A="]  # moved during the last round
    assert peers[0]["lifetime"] == [999, 999] and peers[0]["day"][1:] == [999, 999] and peers[0]["days"] == []

    peers, cursor, _ = read_round(daemon, cursor, 10)
    assert peers == []  # nothing changed

    scripted_tool.set(dump({"wg0": many}, handshake=1_700_000_500))  # handshakes alone
    daemon.result("traffic.sample")
    peers, cursor, _ = read_round(daemon, cursor, 1000)
    assert len(peers) == len(many) and all(p["latest_handshake"] == 1_700_000_500 for p in peers)

    daemon.stop()
    daemon.start()  # another run: its answer to an old cursor is everyone
    peers, _, full = read_round(daemon, cursor, 1000)
    assert full and len(peers) == len(many)
    assert {p["public_key"]: p["lifetime"] for p in peers}[f"{1:042d}A="] == [999, 999]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": 5},
        {"cursor": "nonsense"},
        {"cursor": "abc.1.2.3.4"},
        {"after": "wg0"},
        {"after": {"interface": "wg0", "public_key": key("A")}},
        {"after": -1},
        {"after": True},
        {"limit": 0},
        {"limit": 10001},
        {"since": 1},
    ],
)
def test_traffic_changes_refuses_bad_params(daemons, scripted_tool: Any, params: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    daemon = daemons(scripted_tool.path).start()
    answer = daemon.call("traffic.changes", **params)
    assert answer["error"]["code"] == -32602, answer


def test_a_page_with_closed_rows_lists_at_most_500_peers(daemons, scripted_tool: Any) -> None:  # type: ignore[no-untyped-def]
    from conftest import dump

    from awgd.api import CLOSED_CHANGES_LIMIT

    many = {f"{i:042d}A=": (i, i) for i in range(1, CLOSED_CHANGES_LIMIT + 101)}
    scripted_tool.set(dump({"wg0": many}, handshake=1_700_000_000))
    daemon = daemons(scripted_tool.path).start()
    first = daemon.result("traffic.changes", limit=10000)
    assert len(first["rows"]) == CLOSED_CHANGES_LIMIT and first["more"]  # no cursor: the ledger's rows too
    cursor = first["cursor"]
    for step in (2, 3):  # the first booking opens the ledger's day (its rows again); then the books alone
        moved = {key: (rx * step, tx * step) for key, (rx, tx) in many.items()}
        scripted_tool.set(dump({"wg0": moved}, handshake=1_700_000_000))
        daemon.result("traffic.sample")
        following = daemon.result("traffic.changes", cursor=cursor, limit=10000)
        cursor = following["cursor"]
    assert len(following["rows"]) == len(many) and not following["more"]  # one page
    daemon.stop()
    daemon.start()  # another run: the ledger's rows again, so pages of 500
    pages = [daemon.result("traffic.changes", cursor=following["cursor"], limit=10000)]
    while pages[-1]["more"]:
        pages.append(daemon.result("traffic.changes", cursor=following["cursor"], after=pages[-1]["next"], limit=10000))
    assert [len(page["rows"]) for page in pages] == [CLOSED_CHANGES_LIMIT, 100]
    assert len({row.split("\t")[1] for page in pages for row in page["rows"]}) == len(many)
