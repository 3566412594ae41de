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
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 10

metadata = MetaData()

# One row: the schema version and the two instants the whole ledger is anchored to.
meta = Table(
    "meta",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("schema_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The first sample, whose counters were only a baseline (docs/DESIGN.md, rule 5).
    Column("tracking_since", BigInteger),
    # The last sample that changed anything; idle samples write nothing.
    Column("last_sample_at", BigInteger),
    # The open period and day: what the running totals in `peer_counters` belong to (schema 2).
    Column("open_period_start", BigInteger),
    Column("open_period_end", BigInteger),
    Column("open_day", Integer),
    Column("open_hour", BigInteger),  # the local hour's start, Unix seconds (schema 9)
    # The central database's clock when it last spoke of fleet users (schema 10): news older
    # than this is ignored (awgd.fleet_plans.accept), even about users no longer here.
    Column("fleet_as_of", Float),
)

# Per interface: the evidence of a counter restart (docs/DESIGN.md, rule 1).
interfaces = Table(
    "interfaces",
    metadata,
    Column("name", String(15), primary_key=True),
    Column("ifindex", Integer),
    Column("boot_id", String(64)),
    Column("up", Boolean),  # as last seen, for interface.up/down events; NULL: never seen
)

# Per peer: who it is. Written once, when the peer is first seen.
peers = Table(
    "peers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("interface", String(15), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("first_seen", BigInteger, nullable=False),
    UniqueConstraint("interface", "public_key"),
)

# Per peer: its checkpoint (the counters at the last applied sample), presence, lifetime,
# and its running totals for the open period and day: the one row a sample writes for a
# moving peer. The running totals live here, not in the bucket tables, so that a moving
# peer costs one row per sample instead of three: a peer's usage in a period (a day) is
# its period_usage (day_usage) row plus, when that period (day) is the open one named in
# `meta`, these running totals. The first sample booked to another period or day moves
# every peer's running totals into the bucket table (awgd.ledger). Only integers, apart
# from `peers`: a narrow row is cheaper to rewrite (tests/bench/NOTES.md).
peer_counters = Table(
    "peer_counters",
    metadata,
    Column("peer_id", Integer, primary_key=True, autoincrement=False),
    Column("present", Boolean, nullable=False),
    Column("rx", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
    Column("lifetime_rx", BigInteger, nullable=False),
    Column("lifetime_tx", BigInteger, nullable=False),
    Column("period_rx", BigInteger, nullable=False),
    Column("period_tx", BigInteger, nullable=False),
    Column("day_rx", BigInteger, nullable=False),
    Column("day_tx", BigInteger, nullable=False),
    # The open local hour's running totals (schema 9); they stay 0 while hourly history is off.
    Column("hour_rx", BigInteger, nullable=False, server_default="0"),
    Column("hour_tx", BigInteger, nullable=False, server_default="0"),
)

# Usage per billing period, closed (and open, see `peers`); the bounds are stored so history survives a schedule change.
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

# Usage per local day (the open day: see `peers`), pruned after ledger.day_retention_days.
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

# Usage per local hour (the open hour: see `peer_counters`), keyed by the instant the hour
# began, so that an hour a clock change repeats is two rows and one it skips none; pruned
# after ledger.hour_retention_days.
hour_usage = Table(
    "hour_usage",
    metadata,
    Column("peer_id", Integer, nullable=False),
    Column("start", BigInteger, nullable=False),
    Column("rx", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
    PrimaryKeyConstraint("peer_id", "start"),
    Index("hour_usage_by_start", "start"),
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

# Per peer: what an admin decided (awgd.peer_admin), keyed by (interface, public key) so a
# peer added but not yet seen by a sample has its row. The ledger is the source of blocks:
# they are never written into a config file.
peer_settings = Table(
    "peer_settings",
    metadata,
    Column("interface", String(15), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("label", Text),
    # Its own allowed IPs, comma-separated: what unblocking restores (a blocked peer has
    # none on the live interface). Empty when awgd never needed to keep them.
    Column("allowed_ips", Text, nullable=False, server_default=""),
    Column("blocked", Text, nullable=False, server_default=""),  # reasons, comma-separated, sorted
    Column("plan", Text),  # JSON (awgd.quota.Plan), or NULL: no plan
    # Its own speed limit (peer.limit), kbit/s each way; NULL: not limited that way (schema 8).
    Column("down_kbit", Integer),
    Column("up_kbit", Integer),
    # A throttle plan's speed while its quota is used up, kbit/s; NULL: not throttled (schema 8).
    Column("throttled_kbit", Integer),
    Column("fleet_throttled_kbit", Integer),  # the same for its fleet user's plan (schema 10)
    PrimaryKeyConstraint("interface", "public_key"),
)

# Per planned peer: what awgd found out and announced in its plan's current window
# (awgd.quota.Progress). Written with the events it records, in one transaction.
plan_progress = Table(
    "plan_progress",
    metadata,
    Column("interface", String(15), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("start_lifetime", BigInteger, nullable=False),
    Column("removed", BigInteger, nullable=False),
    Column("warned", Text, nullable=False),  # JSON list of thresholds
    Column("exceeded", Boolean, nullable=False),
    Column("expired", Boolean, nullable=False),
    Column("blocked", BigInteger, nullable=False, server_default="0"),  # booked while blocked (schema 6)
    PrimaryKeyConstraint("interface", "public_key"),
)

# Per peer and billing period: what was booked while the peer was blocked (its device kept
# sending; WireGuard counts before it drops). Part of period_usage all the same (the ledger
# equals the wire); a plan's usage leaves it out. A row only for a peer that moved while
# blocked, so a sample of unblocked peers writes nothing here.
blocked_usage = Table(
    "blocked_usage",
    metadata,
    Column("peer_id", Integer, nullable=False),
    Column("start", BigInteger, nullable=False),  # the period's start
    Column("bytes", BigInteger, nullable=False),  # rx + tx
    PrimaryKeyConstraint("peer_id", "start"),
    sqlite_with_rowid=False,
)

# Per rekeyed peer (peer.rekey): the key that took its place. The old key's history stays
# under its own peer id; its settings and plan progress moved to the new key.
rekeys = Table(
    "rekeys",
    metadata,
    Column("interface", String(15), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("new_public_key", String(44), nullable=False),
    Column("at", BigInteger, nullable=False),
    PrimaryKeyConstraint("interface", "public_key"),
)

# Per stalled peer (API v3, section 4): since when, and the latest handshake it had then, so
# that a restarted awgd neither announces the same episode again nor misses its end.
peer_stalls = Table(
    "peer_stalls",
    metadata,
    Column("interface", String(15), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("since", BigInteger, nullable=False),
    Column("handshake", BigInteger, nullable=False),
    PrimaryKeyConstraint("interface", "public_key"),
)

# Fleet users with peers on this node (awgd.fleet_plans.FleetUser): the centre's last word,
# kept so that the node enforces, and lifts at a window's start, while the centre is away.
fleet_users = Table(
    "fleet_users",
    metadata,
    Column("user", Text, primary_key=True),
    Column("plan", Text, nullable=False),  # JSON (awgd.quota.Plan)
    Column("zone", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("as_of", Float, nullable=False),
    Column("others_window", BigInteger, nullable=False),
    Column("others", BigInteger, nullable=False),
    Column("members", Text, nullable=False),  # JSON list of [interface, public_key]
)

# Per member peer: its part of its fleet user's window (awgd.fleet_plans.Share).
fleet_shares = Table(
    "fleet_shares",
    metadata,
    Column("interface", String(15), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("user", Text, nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("start_lifetime", BigInteger, nullable=False),
    Column("blocked", BigInteger, nullable=False),
    PrimaryKeyConstraint("interface", "public_key"),
)

# What a bot may tell a user about (docs/API.md, "Events"): ids only grow, kept 30 days.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("type", String(32), nullable=False),
    Column("interface", String(15)),
    Column("public_key", String(44)),
    Column("data", Text, nullable=False),  # JSON object
    Index("events_by_at", "at"),
    sqlite_autoincrement=True,  # an id is never reused, even after the newest is pruned
)


_MOVED = ("present", "rx", "tx", "lifetime_rx", "lifetime_tx", "last_seen")

# One step per schema version: the statements that bring a ledger from version N - 1 to N.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the counters move out of `peers` into `peer_counters`, with running totals.
    2: (
        "CREATE TABLE peer_counters (peer_id INTEGER NOT NULL, present BOOLEAN NOT NULL, rx BIGINT NOT NULL,"
        " tx BIGINT NOT NULL, lifetime_rx BIGINT NOT NULL, lifetime_tx BIGINT NOT NULL, last_seen BIGINT NOT NULL,"
        " period_rx BIGINT NOT NULL, period_tx BIGINT NOT NULL, day_rx BIGINT NOT NULL, day_tx BIGINT NOT NULL,"
        " PRIMARY KEY (peer_id))",
        "INSERT INTO peer_counters SELECT id, present, rx, tx, lifetime_rx, lifetime_tx, last_seen, 0, 0, 0, 0"
        " FROM peers",
        *(f"ALTER TABLE peers DROP COLUMN {column}" for column in _MOVED),
        "ALTER TABLE meta ADD COLUMN open_period_start BIGINT",
        "ALTER TABLE meta ADD COLUMN open_period_end BIGINT",
        "ALTER TABLE meta ADD COLUMN open_day INTEGER",
    ),
    # 3: a moving peer's row no longer carries the time of the sample (nothing read it), so
    # a sample binds fewer values per row.
    3: ("ALTER TABLE peer_counters DROP COLUMN last_seen",),
    # 4: peers' settings (labels, kept allowed IPs, blocks) and events.
    4: (
        "CREATE TABLE peer_settings (interface VARCHAR(15) NOT NULL, public_key VARCHAR(44) NOT NULL, label TEXT,"
        " allowed_ips TEXT DEFAULT '' NOT NULL, blocked TEXT DEFAULT '' NOT NULL, PRIMARY KEY (interface, public_key))",
        "CREATE TABLE events (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, at BIGINT NOT NULL,"
        " type VARCHAR(32) NOT NULL, interface VARCHAR(15), public_key VARCHAR(44), data TEXT NOT NULL)",
        "CREATE INDEX events_by_at ON events (at)",
    ),
    # 5: plans, their progress, and whether each interface was up (for its events).
    5: (
        "ALTER TABLE peer_settings ADD COLUMN plan TEXT",
        "CREATE TABLE plan_progress (interface VARCHAR(15) NOT NULL, public_key VARCHAR(44) NOT NULL,"
        " window_start BIGINT NOT NULL, start_lifetime BIGINT NOT NULL, removed BIGINT NOT NULL,"
        " warned TEXT NOT NULL, exceeded BOOLEAN NOT NULL, expired BOOLEAN NOT NULL,"
        " PRIMARY KEY (interface, public_key))",
        "ALTER TABLE interfaces ADD COLUMN up BOOLEAN",
    ),
    # 6: what was booked while blocked, per period and in a plan's window (API v3, section 2).
    6: (
        "ALTER TABLE plan_progress ADD COLUMN blocked BIGINT DEFAULT '0' NOT NULL",
        "CREATE TABLE blocked_usage (peer_id INTEGER NOT NULL, start BIGINT NOT NULL, bytes BIGINT NOT NULL,"
        " PRIMARY KEY (peer_id, start)) WITHOUT ROWID",
    ),
    # 7: rekeyed peers (API v3, section 1).
    7: (
        "CREATE TABLE rekeys (interface VARCHAR(15) NOT NULL, public_key VARCHAR(44) NOT NULL,"
        " new_public_key VARCHAR(44) NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (interface, public_key))",
    ),
    # 8: peers' own speed limits, and throttle plans (API v3, section 3).
    8: (
        "ALTER TABLE peer_settings ADD COLUMN down_kbit INTEGER",
        "ALTER TABLE peer_settings ADD COLUMN up_kbit INTEGER",
        "ALTER TABLE peer_settings ADD COLUMN throttled_kbit INTEGER",
    ),
    # 9: hourly history, and stalled peers (API v3, sections 4 and 5).
    9: (
        "ALTER TABLE meta ADD COLUMN open_hour BIGINT",
        "ALTER TABLE peer_counters ADD COLUMN hour_rx BIGINT DEFAULT '0' NOT NULL",
        "ALTER TABLE peer_counters ADD COLUMN hour_tx BIGINT DEFAULT '0' NOT NULL",
        "CREATE TABLE hour_usage (peer_id INTEGER NOT NULL, start BIGINT NOT NULL, rx BIGINT NOT NULL,"
        " tx BIGINT NOT NULL, PRIMARY KEY (peer_id, start)) WITHOUT ROWID",
        "CREATE INDEX hour_usage_by_start ON hour_usage (start)",
        "CREATE TABLE peer_stalls (interface VARCHAR(15) NOT NULL, public_key VARCHAR(44) NOT NULL,"
        " since BIGINT NOT NULL, handshake BIGINT NOT NULL, PRIMARY KEY (interface, public_key))",
    ),
    # 10: fleet plans (docs/FLEET.md, "Fleet plans").
    10: (
        "ALTER TABLE meta ADD COLUMN fleet_as_of FLOAT",
        "ALTER TABLE peer_settings ADD COLUMN fleet_throttled_kbit INTEGER",
        "CREATE TABLE fleet_users (user TEXT NOT NULL PRIMARY KEY, plan TEXT NOT NULL, zone TEXT NOT NULL,"
        " version BIGINT NOT NULL, as_of FLOAT NOT NULL, others_window BIGINT NOT NULL, others BIGINT NOT NULL,"
        " members TEXT NOT NULL)",
        "CREATE TABLE fleet_shares (interface VARCHAR(15) NOT NULL, public_key VARCHAR(44) NOT NULL,"
        " user TEXT NOT NULL, window_start BIGINT NOT NULL, start_lifetime BIGINT NOT NULL,"
        " blocked BIGINT NOT NULL, PRIMARY KEY (interface, public_key))",
    ),
}
