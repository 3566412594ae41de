-- awgd fleet schema, version 1 (awgd-mirror --print-schema). Idempotent: running it
-- again migrates an older schema. Run it as the role that is to own the tables.
BEGIN;


DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'awgd_node') THEN
        CREATE ROLE awgd_node NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'awgd_reader') THEN
        CREATE ROLE awgd_reader NOLOGIN;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS awgd_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

DO $migration$
BEGIN
IF NOT EXISTS (SELECT FROM awgd_schema WHERE version = 1) THEN
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
INSERT INTO awgd_schema (version) VALUES (1);
END IF;
END
$migration$;


CREATE OR REPLACE VIEW awgd_fleet_nodes AS
    SELECT node, version, healthy, last_sample_at, last_success_at, mirrored_at FROM awgd_nodes;
CREATE OR REPLACE VIEW awgd_fleet_peers AS
    SELECT p.node, p.interface, p.public_key, p.label, p.present,
           (p.present AND p.latest_handshake IS NOT NULL AND n.last_sample_at IS NOT NULL
            AND p.latest_handshake >= n.last_sample_at - make_interval(secs => n.online_window)) AS online,
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

ALTER TABLE awgd_nodes ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS awgd_own_rows ON awgd_nodes;
CREATE POLICY awgd_own_rows ON awgd_nodes TO awgd_node USING (node = current_user) WITH CHECK (node = current_user);
REVOKE ALL ON awgd_nodes FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON awgd_nodes TO awgd_node;
ALTER TABLE awgd_peers ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS awgd_own_rows ON awgd_peers;
CREATE POLICY awgd_own_rows ON awgd_peers TO awgd_node USING (node = current_user) WITH CHECK (node = current_user);
REVOKE ALL ON awgd_peers FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON awgd_peers TO awgd_node;
ALTER TABLE awgd_periods ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS awgd_own_rows ON awgd_periods;
CREATE POLICY awgd_own_rows ON awgd_periods TO awgd_node USING (node = current_user) WITH CHECK (node = current_user);
REVOKE ALL ON awgd_periods FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON awgd_periods TO awgd_node;
ALTER TABLE awgd_days ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS awgd_own_rows ON awgd_days;
CREATE POLICY awgd_own_rows ON awgd_days TO awgd_node USING (node = current_user) WITH CHECK (node = current_user);
REVOKE ALL ON awgd_days FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON awgd_days TO awgd_node;
REVOKE ALL ON awgd_schema FROM PUBLIC;
GRANT SELECT ON awgd_schema TO awgd_node, awgd_reader;
DO $$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO awgd_node', current_database()); END $$;
REVOKE ALL ON awgd_fleet_nodes FROM PUBLIC;
REVOKE ALL ON awgd_fleet_peers FROM PUBLIC;
REVOKE ALL ON awgd_fleet_periods FROM PUBLIC;
REVOKE ALL ON awgd_fleet_days FROM PUBLIC;
GRANT SELECT ON awgd_fleet_nodes TO awgd_reader;
GRANT SELECT ON awgd_fleet_peers TO awgd_reader;
GRANT SELECT ON awgd_fleet_periods TO awgd_reader;
GRANT SELECT ON awgd_fleet_days TO awgd_reader;

COMMIT;
