"""The central PostgreSQL of a fleet (docs/FLEET.md): its SQL, versioned, and the nodes'
table as SQLAlchemy Core sees it for awgd-mirror.

`schema_sql()` is what `awgd-mirror --print-schema` prints. It is idempotent, so running it
again is also how an existing database is migrated: each migration runs once, guarded by
its row in `awgd_schema`; the roles, grants, policies and views after them are (re)made
every time. The tables belong to whoever runs it (the operator's admin role); each node
writes through its own role, a member of `awgd_node`, which may only read its own rows
(row-level security) and write through the functions below: they run as the tables' owner
(SECURITY DEFINER, with a fixed search_path) and write only rows whose `node` is the
session's role. With no INSERT, UPDATE or DELETE right a node's role cannot lock a table
beyond ACCESS SHARE, which blocks no one's writes (the review's D11: a node's ACCESS
EXCLUSIVE stalled every other round and the bot's reads). Readers (`awgd_reader`) get the
views alone.

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

SCHEMA_VERSION = 4
SCHEMA = "awgd"
NODE_ROLE = "awgd_node"
READER_ROLE = "awgd_reader"
# The bot's right to define fleet users and their plans (docs/FLEET.md, "Fleet plans"): not a
# node's, and not what a plain reader has.
PLANNER_ROLE = "awgd_planner"
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
    (
        3,
        # Which nodes a public key belongs to, kept by the owner (the review's D16: a node could
        # publish rows for another node's key, and a fleet sum believed them). A key with rows
        # here is bound: rows of it from other nodes are shown `bound = false`, and FleetClient
        # leaves them out of its sums. A key with none is open (every node's rows count).
        """
CREATE TABLE awgd_keys (
    public_key text NOT NULL,
    node text NOT NULL,
    PRIMARY KEY (public_key, node)
);
""",
    ),
    (
        4,
        # Fleet plans: users and their plans (the planner's), which peers are whose (the
        # planner's), what each node reports of its members' windows (written through
        # fleet_report alone, only for its own members), and the users' quota events, each
        # stored once: the unique key is the user, the window, the plan's version and the
        # threshold, whichever node's round crossed it first.
        """
CREATE TABLE awgd_fleet_users (
    fleet_user text PRIMARY KEY CHECK (pg_catalog.length(fleet_user) BETWEEN 1 AND 128),
    plan jsonb NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE TABLE awgd_fleet_members (
    node text NOT NULL,
    interface text NOT NULL,
    public_key text NOT NULL,
    fleet_user text NOT NULL REFERENCES awgd_fleet_users ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (node, interface, public_key)
);
CREATE INDEX awgd_fleet_members_by_user ON awgd_fleet_members (fleet_user);
CREATE TABLE awgd_fleet_usage (
    node text NOT NULL,
    interface text NOT NULL,
    public_key text NOT NULL,
    fleet_user text NOT NULL,
    window_start timestamptz NOT NULL,
    used bigint NOT NULL CHECK (used >= 0),
    reported_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (node, interface, public_key)
);
CREATE INDEX awgd_fleet_usage_by_user ON awgd_fleet_usage (fleet_user, window_start);
CREATE TABLE awgd_fleet_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    fleet_user text NOT NULL,
    type text NOT NULL,
    window_start timestamptz NOT NULL,
    version bigint NOT NULL,
    threshold double precision NOT NULL DEFAULT 0,
    used_bytes bigint NOT NULL,
    limit_bytes bigint,
    UNIQUE (fleet_user, window_start, version, type, threshold)
);
""",
    ),
)

TABLES = ("awgd_nodes", "awgd_peers", "awgd_periods", "awgd_days")
FLEET_PLAN_TABLES = ("awgd_fleet_users", "awgd_fleet_members", "awgd_fleet_usage", "awgd_fleet_events")

_ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'awgd_node') THEN
        CREATE ROLE awgd_node NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'awgd_reader') THEN
        CREATE ROLE awgd_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'awgd_planner') THEN
        CREATE ROLE awgd_planner NOLOGIN;
    END IF;
END
$$;
"""

# The schema, only its owner creating in it; the version table of a version 1 database
# moves into it first, so that the migrations below find what ran.
_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS awgd;
REVOKE ALL ON SCHEMA awgd FROM PUBLIC;
GRANT USAGE ON SCHEMA awgd TO awgd_node, awgd_reader, awgd_planner;
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
           p.lifetime_rx, p.lifetime_tx, p.blocked, p.mirrored_at, p.first_seen, p.plan,
           CASE WHEN EXISTS (SELECT FROM awgd_keys k WHERE k.public_key = p.public_key)
                THEN EXISTS (SELECT FROM awgd_keys k WHERE k.public_key = p.public_key AND k.node = p.node)
           END AS bound
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
CREATE OR REPLACE VIEW awgd_fleet_user_usage AS
    SELECT u.fleet_user, u.plan, u.version, w.window_start, COALESCE(w.used, 0) AS used,
           CAST(u.plan ->> 'limit_bytes' AS bigint) AS limit_bytes, w.reported_at
    FROM awgd_fleet_users u LEFT JOIN LATERAL (
        SELECT f.window_start, CAST(pg_catalog.sum(f.used) AS bigint) AS used,
               pg_catalog.max(f.reported_at) AS reported_at
        FROM awgd_fleet_usage f JOIN awgd_fleet_members m USING (node, interface, public_key, fleet_user)
        WHERE f.fleet_user = u.fleet_user
        GROUP BY f.window_start ORDER BY f.window_start DESC LIMIT 1
    ) w ON true;
"""
VIEWS = ("awgd_fleet_nodes", "awgd_fleet_peers", "awgd_fleet_periods", "awgd_fleet_days", "awgd_fleet_user_usage")


# How nodes write (awgd-mirror): as the tables' owner, each only its own rows (session_user:
# the role it logged in as, which SET ROLE does not change). A round's peers come through
# the session's temporary table pg_temp.awgd_moves, which the node grants SELECT on (no
# other session can reach another's temporary tables).
_FUNCTIONS = """
CREATE OR REPLACE FUNCTION awgd.mirror_cursor() RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, awgd AS $f$
    SELECT "cursor" FROM awgd.awgd_nodes WHERE node = CAST(session_user AS text) FOR UPDATE
$f$;
CREATE OR REPLACE FUNCTION awgd.mirror_peers(moved bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, awgd SET enable_nestloop = off AS $f$
DECLARE
    me text := CAST(session_user AS text);
    updated bigint;
BEGIN
    UPDATE awgd.awgd_peers AS p SET
        label = m.label, present = m.present, latest_handshake = pg_catalog.to_timestamp(m.latest_handshake),
        first_seen = pg_catalog.to_timestamp(m.first_seen), period_start = pg_catalog.to_timestamp(m.period_start),
        period_end = pg_catalog.to_timestamp(m.period_end), period_rx = m.period_rx, period_tx = m.period_tx,
        lifetime_rx = m.lifetime_rx, lifetime_tx = m.lifetime_tx,
        day = CASE WHEN m.day_rx <> 0 OR m.day_tx <> 0 THEN m.day END, day_rx = m.day_rx, day_tx = m.day_tx,
        blocked = pg_catalog.string_to_array(m.blocked, ','), plan = CAST(m.plan AS jsonb),
        mirrored_at = pg_catalog.now()
    FROM pg_temp.awgd_moves AS m
    WHERE p.node = me AND p.interface = m.interface AND p.public_key = m.public_key;
    GET DIAGNOSTICS updated = ROW_COUNT;
    IF updated <> moved THEN  -- peers new to the database (or a node's first round)
        INSERT INTO awgd.awgd_peers (node, interface, public_key, label, present, latest_handshake, first_seen,
            period_start, period_end, period_rx, period_tx, lifetime_rx, lifetime_tx, day, day_rx, day_tx,
            blocked, plan, mirrored_at)
        SELECT me, m.interface, m.public_key, m.label, m.present, pg_catalog.to_timestamp(m.latest_handshake),
            pg_catalog.to_timestamp(m.first_seen), pg_catalog.to_timestamp(m.period_start),
            pg_catalog.to_timestamp(m.period_end), m.period_rx, m.period_tx, m.lifetime_rx, m.lifetime_tx,
            CASE WHEN m.day_rx <> 0 OR m.day_tx <> 0 THEN m.day END, m.day_rx, m.day_tx,
            pg_catalog.string_to_array(m.blocked, ','), CAST(m.plan AS jsonb), pg_catalog.now()
        FROM pg_temp.awgd_moves AS m
        WHERE NOT EXISTS (
            SELECT FROM awgd.awgd_peers AS p
            WHERE p.node = me AND p.interface = m.interface AND p.public_key = m.public_key
        );
    END IF;
    RETURN updated;
END
$f$;
CREATE OR REPLACE FUNCTION awgd.mirror_periods(rows json) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, awgd AS $f$
    INSERT INTO awgd.awgd_periods (node, interface, public_key, start, "end", rx, tx, mirrored_at)
    SELECT CAST(session_user AS text), i, k, pg_catalog.to_timestamp(s), pg_catalog.to_timestamp(e), rx, tx,
        pg_catalog.now()
    FROM pg_catalog.json_to_recordset(rows) AS t(i text, k text, s bigint, e bigint, rx bigint, tx bigint)
    ON CONFLICT (node, interface, public_key, start) DO UPDATE SET
        "end" = excluded."end", rx = excluded.rx, tx = excluded.tx, mirrored_at = pg_catalog.now()
$f$;
CREATE OR REPLACE FUNCTION awgd.mirror_days(rows json) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, awgd AS $f$
    INSERT INTO awgd.awgd_days (node, interface, public_key, day, rx, tx, mirrored_at)
    SELECT CAST(session_user AS text), i, k, d, rx, tx, pg_catalog.now()
    FROM pg_catalog.json_to_recordset(rows) AS t(i text, k text, d date, rx bigint, tx bigint)
    ON CONFLICT (node, interface, public_key, day) DO UPDATE SET
        rx = excluded.rx, tx = excluded.tx, mirrored_at = pg_catalog.now()
$f$;
CREATE OR REPLACE FUNCTION awgd.mirror_node(
    version text, healthy boolean, last_sample_at timestamptz, last_success_at timestamptz,
    online_window integer, new_cursor text
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, awgd AS $f$
    INSERT INTO awgd.awgd_nodes (node, version, healthy, last_sample_at, last_success_at, online_window,
        "cursor", mirrored_at)
    VALUES (CAST(session_user AS text), $1, $2, $3, $4, COALESCE($5, 180), $6, pg_catalog.now())
    ON CONFLICT (node) DO UPDATE SET version = excluded.version, healthy = excluded.healthy,
        last_sample_at = excluded.last_sample_at, last_success_at = excluded.last_success_at,
        online_window = excluded.online_window, "cursor" = excluded."cursor", mirrored_at = excluded.mirrored_at
$f$;
"""
# Fleet plans. A node reads, for its own fleet users only, each one's plan and the sum of what
# the user's other members (on other nodes) used in the latest window reported: never a row of
# another node. It reports its members' shares; a row for a key that is not its member, or
# for another user, never lands (the review's D16). Each report then stores the quota events
# the users' totals crossed, once each (ON CONFLICT DO NOTHING on the unique key).
# A plan's version goes up with every change of it (a top-up), so that a node can tell news.
_FLEET_FUNCTIONS = """
CREATE OR REPLACE FUNCTION awgd.fleet_plans()
RETURNS TABLE (fleet_user text, version bigint, plan jsonb, others_window timestamptz, others bigint,
               members json, as_of timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, awgd AS $f$
    WITH mine AS (
        SELECT m.fleet_user,
               pg_catalog.json_agg(pg_catalog.json_build_object('interface', m.interface, 'public_key', m.public_key)
                                   ORDER BY m.interface, m.public_key) AS members
        FROM awgd.awgd_fleet_members m WHERE m.node = CAST(session_user AS text) GROUP BY m.fleet_user
    ), others AS (
        SELECT DISTINCT ON (f.fleet_user) f.fleet_user, f.window_start, CAST(pg_catalog.sum(f.used) AS bigint) AS used
        FROM awgd.awgd_fleet_usage f
        JOIN awgd.awgd_fleet_members m USING (node, interface, public_key, fleet_user)
        WHERE f.node <> CAST(session_user AS text) AND f.fleet_user IN (SELECT mine.fleet_user FROM mine)
        GROUP BY f.fleet_user, f.window_start
        ORDER BY f.fleet_user, f.window_start DESC
    )
    SELECT u.fleet_user, u.version, u.plan, o.window_start, o.used, mine.members, pg_catalog.now()
    FROM mine JOIN awgd.awgd_fleet_users u USING (fleet_user) LEFT JOIN others o USING (fleet_user)
    ORDER BY u.fleet_user
$f$;
CREATE OR REPLACE FUNCTION awgd.fleet_report(rows json) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, awgd AS $f$
DECLARE
    me text := CAST(session_user AS text);
    reported text[];
    taken bigint;
BEGIN
    -- The users this report concerns (its rows of this node's members), and the shares that
    -- changed: an unchanged share is not written again (a round repeats most of them).
    WITH input AS (
        SELECT r.i, r.k, m.fleet_user, pg_catalog.to_timestamp(r.w) AS w, r.used
        FROM pg_catalog.json_to_recordset(rows) AS r(i text, k text, u text, w double precision, used bigint)
        JOIN awgd.awgd_fleet_members m
            ON m.node = me AND m.interface = r.i AND m.public_key = r.k AND m.fleet_user = r.u
        WHERE r.used >= 0
    ), landed AS (
        INSERT INTO awgd.awgd_fleet_usage AS f
            (node, interface, public_key, fleet_user, window_start, used, reported_at)
        SELECT me, input.i, input.k, input.fleet_user, input.w, input.used, pg_catalog.now() FROM input
        ON CONFLICT (node, interface, public_key) DO UPDATE SET
            fleet_user = excluded.fleet_user, window_start = excluded.window_start, used = excluded.used,
            reported_at = excluded.reported_at
        WHERE f.fleet_user <> excluded.fleet_user OR f.window_start < excluded.window_start
            OR (f.window_start = excluded.window_start AND f.used <> excluded.used)
        RETURNING 1
    )
    SELECT (SELECT pg_catalog.array_agg(DISTINCT input.fleet_user) FROM input), (SELECT pg_catalog.count(*) FROM landed)
    INTO reported, taken;
    INSERT INTO awgd.awgd_fleet_events (fleet_user, type, window_start, version, threshold, used_bytes, limit_bytes)
    SELECT t.fleet_user, e.type, t.window_start, t.version, e.threshold, t.used, t.limit_bytes
    FROM (
        SELECT v.fleet_user, v.window_start, v.used, v.version, v.limit_bytes, v.plan
        FROM awgd.awgd_fleet_user_usage v
        WHERE v.fleet_user = ANY (reported) AND v.limit_bytes IS NOT NULL
              AND v.window_start IS NOT NULL
    ) t
    CROSS JOIN LATERAL (
        SELECT 'quota.warning' AS type, CAST(w AS double precision) AS threshold
        FROM pg_catalog.jsonb_array_elements_text(COALESCE(t.plan -> 'warn_at', '[0.8]')) AS w
        WHERE t.used >= CAST(w AS double precision) * t.limit_bytes
        UNION ALL
        SELECT 'quota.exceeded', 0 WHERE t.used >= t.limit_bytes
    ) e
    ON CONFLICT DO NOTHING;
    RETURN taken;
END
$f$;
CREATE OR REPLACE FUNCTION awgd.fleet_plan_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, awgd AS $f$
BEGIN
    IF NEW.plan IS DISTINCT FROM OLD.plan THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := pg_catalog.now();
    ELSE
        NEW.version := OLD.version;
    END IF;
    RETURN NEW;
END
$f$;
DROP TRIGGER IF EXISTS awgd_fleet_plan_changed ON awgd_fleet_users;
CREATE TRIGGER awgd_fleet_plan_changed BEFORE UPDATE ON awgd_fleet_users
    FOR EACH ROW EXECUTE FUNCTION awgd.fleet_plan_changed();
"""
FLEET_FUNCTIONS = ("fleet_plans()", "fleet_report(json)")

FUNCTIONS = (
    "mirror_cursor()",
    "mirror_peers(bigint)",
    "mirror_periods(json)",
    "mirror_days(json)",
    "mirror_node(text, boolean, timestamptz, timestamptz, integer, text)",
)


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
            f"REVOKE ALL ON {table} FROM {NODE_ROLE};",  # version 1 granted writes
            f"GRANT SELECT ON {table} TO {NODE_ROLE};",
        ]
    for function in FUNCTIONS:
        lines += [
            f"REVOKE ALL ON FUNCTION awgd.{function} FROM PUBLIC;",
            f"GRANT EXECUTE ON FUNCTION awgd.{function} TO {NODE_ROLE};",
        ]
    for function in FLEET_FUNCTIONS:
        lines += [
            f"REVOKE ALL ON FUNCTION awgd.{function} FROM PUBLIC;",
            f"GRANT EXECUTE ON FUNCTION awgd.{function} TO {NODE_ROLE};",
        ]
    lines.append("REVOKE ALL ON FUNCTION awgd.fleet_plan_changed() FROM PUBLIC;")
    # Nodes reach the fleet plans' tables through the functions alone; the planner (the
    # bot) writes users and members and reads the rest.
    for table in FLEET_PLAN_TABLES:
        lines.append(f"REVOKE ALL ON {table} FROM PUBLIC, {NODE_ROLE}, {READER_ROLE};")
    lines += [
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON awgd_fleet_users, awgd_fleet_members TO {PLANNER_ROLE};",
        f"GRANT SELECT ON awgd_fleet_usage, awgd_fleet_events TO {PLANNER_ROLE};",
        f"GRANT SELECT ON awgd_fleet_user_usage TO {PLANNER_ROLE};",
    ]
    lines += ["REVOKE ALL ON awgd_keys FROM PUBLIC;", f"GRANT SELECT ON awgd_keys TO {READER_ROLE};"]
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
        _FUNCTIONS,
        _FLEET_FUNCTIONS,
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
