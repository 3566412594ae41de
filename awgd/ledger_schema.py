"""The ledger's tables (SQLAlchemy Core) and its schema version.

Conventions: instants are integer Unix seconds (UTC); a local calendar day is the integer
YYYYMMDD (compact, sortable and readable in `sqlite3`); byte counts are integers. SQLite
integers are signed 64-bit, so counters are capped at 2**63 - 1 by the parser.
Endpoints, keys other than public keys, and anything else from the tool's output that
is not a counter never reach these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

SCHEMA_VERSION = 1

metadata = MetaData()

# One row: the schema version and the two instants the whole ledger is anchored to.
meta = Table(
    "meta",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("schema_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The first sample, whose counters were only a baseline (DESIGN.md rule 5).
    Column("tracking_since", BigInteger),
    # The last sample that changed anything; idle samples write nothing.
    Column("last_sample_at", BigInteger),
)

# Per interface: the evidence of a counter restart (DESIGN.md rule 1).
interfaces = Table(
    "interfaces",
    metadata,
    Column("name", String(15), primary_key=True),
    Column("ifindex", Integer),
    Column("boot_id", String(64)),
)

# Per peer: its checkpoint (the counters at the last applied sample), presence and lifetime.
peers = Table(
    "peers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("interface", String(15), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("present", Boolean, nullable=False),
    Column("rx", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
    Column("lifetime_rx", BigInteger, nullable=False),
    Column("lifetime_tx", BigInteger, nullable=False),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    UniqueConstraint("interface", "public_key"),
)

# Usage per billing period; the bounds are stored so history survives a schedule change.
period_usage = Table(
    "period_usage",
    metadata,
    Column("peer_id", Integer, nullable=False),
    Column("start", BigInteger, nullable=False),
    Column("end", BigInteger, nullable=False),
    Column("rx", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
    PrimaryKeyConstraint("peer_id", "start"),
    Index("period_usage_by_start", "start"),
    sqlite_with_rowid=False,
)

# Usage per local day, pruned after ledger.day_retention_days.
day_usage = Table(
    "day_usage",
    metadata,
    Column("peer_id", Integer, nullable=False),
    Column("day", Integer, nullable=False),
    Column("rx", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
    PrimaryKeyConstraint("peer_id", "day"),
    Index("day_usage_by_day", "day"),
    sqlite_with_rowid=False,
)

# Every traffic.reset, with what it removed from the period.
resets = Table(
    "resets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("peer_id", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("period_start", BigInteger, nullable=False),
    Column("rx", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
)
