"""traffic.changes rows (awgd_client.change_rows): PostgreSQL's COPY text format, one line
per peer. The daemon writes them in awgd.change_feed; every row decodes to what was put in,
whatever the label or plan holds. That PostgreSQL reads them alike is tests/test_fleet.py's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from awgd_client import change_rows

labels = st.none() | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
plans = st.none() | st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.none(), max_size=4)


def row_of(values: dict[str, Any]) -> str:
    """A row as awgd.change_feed writes it (with its helpers)."""
    null, text = change_rows.NULL, change_rows.text
    handshake = values["latest_handshake"]
    fields = [
        text(values["interface"]),
        text(values["public_key"]),
        text(values["label"]),
        "t" if values["present"] else "f",
        null if handshake is None else str(handshake),
        *(str(values[name]) for name in change_rows.COLUMNS[5:12]),
        ",".join(values["blocked"]),
        change_rows.plan_field(values["plan"]),
    ]
    return "\t".join(fields)


@given(
    label=labels,
    plan=plans,
    handshake=st.none() | st.integers(1, 2**40),
    counters=st.lists(st.integers(0, 2**63 - 1), min_size=7, max_size=7),
    blocked=st.lists(st.sampled_from(["admin", "expired", "quota"]), unique=True),
    present=st.booleans(),
)
def test_every_row_decodes_to_what_was_put_in(  # type: ignore[no-untyped-def]
    label, plan, handshake, counters, blocked, present
) -> None:
    values = {
        "interface": "awg0",
        "public_key": "A" * 43 + "=",
        "label": label,
        "present": present,
        "latest_handshake": handshake,
        **dict(zip(change_rows.COLUMNS[5:12], counters, strict=True)),
        "blocked": sorted(blocked),
        "plan": plan,
    }
    row = row_of(values)
    assert "\n" not in row and "\r" not in row and row.count("\t") == len(change_rows.COLUMNS) - 1
    assert change_rows.decode(row) == values


def test_text_fields_are_escaped_as_copy_reads_them() -> None:
    assert change_rows.text("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert change_rows.text(None) == "\\N"
    assert change_rows.text("\\N") == "\\\\N"  # a label "\N" is not a null


@pytest.mark.parametrize("row", ["", "a\tb", "\t".join(["x"] * 15)])
def test_a_row_with_other_fields_is_refused(row: str) -> None:
    with pytest.raises(ValueError, match="fields"):
        change_rows.decode(row)
