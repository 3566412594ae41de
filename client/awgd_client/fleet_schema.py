"""The central PostgreSQL of a fleet (docs/FLEET.md): its SQL, versioned, and the nodes'
table as SQLAlchemy Core sees it for awgd-mirror.

`schema_sql()` is what `awgd-mirror --print-schema` prints. It is idempotent, so running it
again is also how an existing database is migrated: each migration runs once, guarded by
its row in `awgd_schema`; the roles, grants, policies and views after them are (re)made
every time. The tables belong to whoever runs it (the operator's admin role); each node
writes through its own role, a member of `awgd_node`, and row-level security keeps it to
the rows whose `node` is its role's name. Readers (`awgd_reader`) get the views alone.

Everything lives in its own schema, `awgd`, in which only its owner may create. On
PostgreSQL 14 and older (and databases upgraded from them) PUBLIC may create in `public`,
and a function planted there with a closer argument type than pg_catalog's (CVE-2018-1058's
pattern) would run as whoever calls the name unqualified: one node's role ran code as
another's mirror, and as the owner's migration (the review's D8). So `public` is never on
the path: the script runs with `search_path = awgd, pg_catalog` (awgd first, so what it
creates lands there), every connection of the mirror and of FleetClient pins
`pg_catalog, awgd` (SEARCH_PATH), and every function called is written pg_catalog-qualified.
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 2
SCHEMA = "awgd"
NODE_ROLE = "awgd_node"
READER_ROLE = "awgd_reader"
# What the mirror's and FleetClient's connections pin (libpq `options`): pg_catalog first,
# then the fleet's own schema; never `public`.
SEARCH_PATH = f"pg_catalog, {SCHEMA}"

# (version, SQL): run once each, in order. A new version appends; none is ever edited.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE awgd_nodes (
    node text PRIMARY KEY DEFAULT current_user,
    version text,
    healthy boolean NOT NULL DEFAULT false,
    last_sample_at timestamptz,
    last_success_at timestamptz,
    online_window integer NOT NULL DEFAULT 180,
    "cursor" text,
    mirrored_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE awgd_peers (
    node text NOT NULL DEFAULT current_user,
    interface text NOT NULL,
    public_key text NOT NULL,
    label text,
    present boolean NOT NULL,
    latest_handshake timestamptz,
    first_seen timestamptz NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    period_rx bigint NOT NULL,
    period_tx bigint NOT NULL,
    lifetime_rx bigint NOT NULL,
    lifetime_tx bigint NOT NULL,
    day date,
    day_rx bigint NOT NULL DEFAULT 0,
    day_tx bigint NOT NULL DEFAULT 0,
    blocked text[] NOT NULL DEFAULT '{}',
    plan jsonb,
    mirrored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, interface, public_key)
) WITH (fillfactor = 50);
CREATE INDEX awgd_peers_by_key ON awgd_peers (public_key);
CREATE TABLE awgd_periods (
    node text NOT NULL DEFAULT current_user,
    interface text NOT NULL,
    public_key text NOT NULL,
    start timestamptz NOT NULL,
    "end" timestamptz NOT NULL,
    rx bigint NOT NULL,
    tx bigint NOT NULL,
    mirrored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, interface, public_key, start)
);
CREATE INDEX awgd_periods_by_key ON awgd_periods (public_key, start);
CREATE TABLE awgd_days (
    node text NOT NULL DEFAULT current_user,
    interface text NOT NULL,
    public_key text NOT NULL,
    day date NOT NULL,
    rx bigint NOT NULL,
    tx bigint NOT NULL,
    mirrored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, interface, public_key, day)
);
CREATE INDEX awgd_days_by_key ON awgd_days (public_key, day);
""",
    ),
    (
        2,
        # Version 1 made its tables in `public` (the path then); they move into `awgd` with
        # their indexes, policies and rows. On a new database version 1 already made them
        # there, and this finds nothing to move.
        """
IF pg_catalog.to_regclass('public.awgd_nodes') IS NOT NULL THEN
    DROP VIEW IF EXISTS public.awgd_fleet_nodes, public.awgd_fleet_peers, public.awgd_fleet_periods,
        public.awgd_fleet_days;
    ALTER TABLE public.awgd_nodes SET SCHEMA awgd;
    ALTER TABLE public.awgd_peers SET SCHEMA awgd;
    ALTER TABLE public.awgd_periods SET SCHEMA awgd;
    ALTER TABLE public.awgd_days SET SCHEMA awgd;
END IF;
""",
    ),
)

TABLES = ("awgd_nodes", "awgd_peers", "awgd_periods", "awgd_days")

_ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'awgd_node') THEN
        CREATE ROLE awgd_node NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'awgd_reader') THEN
        CREATE ROLE awgd_reader NOLOGIN;
    END IF;
END
$$;
"""

# The schema, only its owner creating in it; the version table of a version 1 database
# moves into it first, so that the migrations below find what ran.
_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS awgd;
REVOKE ALL ON SCHEMA awgd FROM PUBLIC;
GRANT USAGE ON SCHEMA awgd TO awgd_node, awgd_reader;
DO $$
BEGIN
    IF pg_catalog.to_regclass('public.awgd_schema') IS NOT NULL
            AND pg_catalog.to_regclass('awgd.awgd_schema') IS NULL THEN
        ALTER TABLE public.awgd_schema SET SCHEMA awgd;
    END IF;
END
$$;
SET LOCAL search_path = awgd, pg_catalog;
"""

# A peer's current period and open day live in its awgd_peers row, which a round rewrites
# anyway: a moving peer costs one row, as in the node's ledger. The period and day views add
# them to the closed rows (a closed row of the same period or day, from before a clock went
# back, gives way to the peer's).
# "online" as awgd reckons it (a handshake within the node's online window), taken at the
# node's last sample and on the node's own clock, so a node whose clock is off by hours
# still shows who was online; how stale that is, is awgd_fleet_nodes' mirrored_at.
_VIEWS = """
CREATE OR REPLACE VIEW awgd_fleet_nodes AS
    SELECT node, version, healthy, last_sample_at, last_success_at, mirrored_at FROM awgd_nodes;
CREATE OR REPLACE VIEW awgd_fleet_peers AS
    SELECT p.node, p.interface, p.public_key, p.label, p.present,
           (p.present AND p.latest_handshake IS NOT NULL AND n.last_sample_at IS NOT NULL
            AND p.latest_handshake >= n.last_sample_at - pg_catalog.make_interval(secs => n.online_window)) AS online,
           p.latest_handshake, p.period_start, p.period_end, p.period_rx, p.period_tx,
           p.lifetime_rx, p.lifetime_tx, p.blocked, p.mirrored_at, p.first_seen, p.plan
    FROM awgd_peers p LEFT JOIN awgd_nodes n ON n.node = p.node;
CREATE OR REPLACE VIEW awgd_fleet_periods AS
    SELECT q.node, q.interface, q.public_key, q.start, q."end", q.rx, q.tx
    FROM awgd_periods q LEFT JOIN awgd_peers p USING (node, interface, public_key)
    WHERE p.period_start IS DISTINCT FROM q.start
    UNION ALL
    SELECT node, interface, public_key, period_start, period_end, period_rx, period_tx FROM awgd_peers;
CREATE OR REPLACE VIEW awgd_fleet_days AS
    SELECT d.node, d.interface, d.public_key, d.day, d.rx, d.tx
    FROM awgd_days d LEFT JOIN awgd_peers p USING (node, interface, public_key)
    WHERE p.day IS DISTINCT FROM d.day
    UNION ALL
    SELECT node, interface, public_key, day, day_rx, day_tx FROM awgd_peers WHERE day IS NOT NULL;
"""
VIEWS = ("awgd_fleet_nodes", "awgd_fleet_peers", "awgd_fleet_periods", "awgd_fleet_days")


def _migration(version: int, body: str) -> str:
    return (
        "DO $migration$\nBEGIN\n"
        f"IF NOT EXISTS (SELECT FROM awgd_schema WHERE version = {version}) THEN\n"
        f"{body.strip()}\n"
        f"INSERT INTO awgd_schema (version) VALUES ({version});\n"
        "END IF;\nEND\n$migration$;\n"
    )


def _access() -> str:
    lines = []
    for table in TABLES:
        lines += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;",
            f"DROP POLICY IF EXISTS awgd_own_rows ON {table};",
            f"CREATE POLICY awgd_own_rows ON {table} TO {NODE_ROLE}"
            " USING (node = current_user) WITH CHECK (node = current_user);",
            f"REVOKE ALL ON {table} FROM PUBLIC;",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {NODE_ROLE};",
        ]
    lines += ["REVOKE ALL ON awgd_schema FROM PUBLIC;", f"GRANT SELECT ON awgd_schema TO {NODE_ROLE}, {READER_ROLE};"]
    # A round's peers go through a temporary table (awgd-mirror's COPY): PostgreSQL grants
    # TEMPORARY to every role by default, and a hardened database may have revoked it.
    lines.append(
        "DO $$ BEGIN EXECUTE pg_catalog.format("
        f"'GRANT TEMPORARY ON DATABASE %I TO {NODE_ROLE}', pg_catalog.current_database()); END $$;"
    )
    lines += [f"REVOKE ALL ON {view} FROM PUBLIC;" for view in VIEWS]
    lines += [f"GRANT SELECT ON {view} TO {READER_ROLE};" for view in VIEWS]
    return "\n".join(lines) + "\n"


def schema_sql() -> str:
    """The whole schema as one transaction of SQL, for psql as the database's owner."""
    parts = [
        f"-- awgd fleet schema, version {SCHEMA_VERSION} (awgd-mirror --print-schema). Idempotent: running it\n"
        "-- again migrates an older schema. Run it as the role that is to own the tables.\n"
        "BEGIN;\n",
        "SET LOCAL search_path = pg_catalog;\n",
        _ROLES,
        _SCHEMA,
        "CREATE TABLE IF NOT EXISTS awgd_schema (\n"
        "    version integer PRIMARY KEY,\n    applied_at timestamptz NOT NULL DEFAULT now()\n);\n",
        *(_migration(version, body) for version, body in MIGRATIONS),
        _VIEWS,
        _access(),
        "COMMIT;\n",
    ]
    return "\n".join(parts)


# ---- the node's row, as the mirror writes it ---------------------------------------------------

metadata = sa.MetaData()

nodes = sa.Table(
    "awgd_nodes",
    metadata,
    sa.Column("node", sa.Text, primary_key=True),
    sa.Column("version", sa.Text),
    sa.Column("healthy", sa.Boolean),
    sa.Column("last_sample_at", sa.DateTime(timezone=True)),
    sa.Column("last_success_at", sa.DateTime(timezone=True)),
    sa.Column("online_window", sa.Integer),
    sa.Column("cursor", sa.Text),
    sa.Column("mirrored_at", sa.DateTime(timezone=True)),
    schema=SCHEMA,
)
