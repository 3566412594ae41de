"""traffic.changes rows (awgd_client.change_rows): PostgreSQL's COPY text format, one line
per peer. Every row the daemon writes (awgd.change_feed, from real books) decodes to the books'
figures, whatever the label or plan holds. That PostgreSQL reads them alike is
tests/test_fleet.py's."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from awgd import change_feed
from awgd.books import Books
from awgd.dump_parser import Peer
from awgd.entry import day_number
from awgd.peer_settings import Settings
from awgd.periods import period_containing
from awgd.plans import plan_json
from awgd.quota import Plan
from awgd_client import change_rows

ZONE = ZoneInfo("UTC")
AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
labels = st.none() | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
plans = st.sampled_from(
    [None, Plan(10**9, "month", date(2026, 11, 1)), Plan(None, "none", date(2026, 1, 1), expires_at=1_800_000_000)]
)


@given(
    label=labels,
    plan=plans,
    handshake=st.integers(0, 2**40),
    counters=st.lists(st.integers(0, 2**50), min_size=6, max_size=6),
    blocked=st.lists(st.sampled_from(["admin", "expired", "quota"]), unique=True),
    present=st.booleans(),
    open_day=st.booleans(),
)
def test_every_row_the_daemon_writes_decodes_to_its_books_figures(  # type: ignore[no-untyped-def]
    label, plan, handshake, counters, blocked, present, open_day
) -> None:
    books = Books(period_containing(AT, "0 0 1 * *", ZONE))
    books.open_period = books.period_bounds
    books.open_day = day_number(AT.date()) if open_day else None
    public_key = "A" * 43 + "="
    settings = Settings(label=label, allowed_ips=("10.0.0.2/32",), blocked=tuple(sorted(blocked)), plan=plan)
    book = books.settle("awg0", public_key, settings, AT)
    assert book is not None
    # Lifetimes at or above every base, as the books keep them.
    book.lifetime_rx, book.lifetime_tx = counters[0] + 2**50, counters[1] + 2**50
    book.period_base_rx, book.period_base_tx, book.day_base_rx, book.day_base_tx = counters[2:]
    book.present = present
    book.line = Peer(public_key, None, ("10.0.0.2/32",), handshake, 1, 2, None)

    (row,) = change_feed.page_rows([book], books).rows
    assert "\n" not in row and "\r" not in row and row.count("\t") == len(change_rows.COLUMNS) - 1
    period_rx, period_tx = books.period_usage(book)
    day_rx, day_tx = book.running_day if open_day else (0, 0)
    assert change_rows.decode(row) == {
        "interface": "awg0",
        "public_key": public_key,
        "label": label,
        "present": present,
        "latest_handshake": handshake or None,
        "first_seen": int(AT.timestamp()),
        "lifetime_rx": book.lifetime_rx,
        "lifetime_tx": book.lifetime_tx,
        "period_rx": period_rx,
        "period_tx": period_tx,
        "day_rx": day_rx,
        "day_tx": day_tx,
        "blocked": sorted(blocked),
        "plan": None if plan is None else plan_json(plan),
    }


def test_text_fields_are_escaped_as_copy_reads_them() -> None:
    assert change_rows.text("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert change_rows.text(None) == "\\N"
    assert change_rows.text("\\N") == "\\\\N"  # a label "\N" is not a null


@pytest.mark.parametrize("row", ["", "a\tb", "\t".join(["x"] * 15)])
def test_a_row_with_other_fields_is_refused(row: str) -> None:
    with pytest.raises(ValueError, match="fields"):
        change_rows.decode(row)


def test_the_mirror_warns_of_a_password_file_others_may_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from awgd_fleet.mirror import MirrorConfig

    secret = tmp_path / "fleet-password"
    secret.write_text("s3cret\n")
    config = MirrorConfig("postgresql://de-1@db.example/awgd", "de-1", "/run/awgd/awgd.sock", str(secret))
    secret.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger=MirrorConfig.__module__):
        assert config.engine_url().password == "s3cret"
    assert not caplog.records
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger=MirrorConfig.__module__):
        config.engine_url()
    assert "LoadCredential=fleet-password" in caplog.records[0].getMessage() and "s3cret" not in caplog.text
