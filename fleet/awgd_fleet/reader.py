"""FleetClient: what the bot reads of a fleet, from the central PostgreSQL (docs/FLEET.md).

It reads the views awgd-mirror's rows are shown through, as a role in `awgd_reader`:

    fleet = FleetClient("postgresql://bot:secret@db.example/awgd")
    usage = fleet.traffic(public_key)      # each node's figures and their sum
    for node in fleet.nodes():             # each node's health and how stale it is
        ...

Works with SQLAlchemy 1.4 (Debian 12) and 2.x, over psycopg2 (Debian's python3-psycopg2),
psycopg 3, or any driver the URL names.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from awgd_fleet import schema as fleet_schema

# How long connecting may take before a read fails, rather than a bot's handler hanging.
CONNECT_TIMEOUT_SECONDS = 10
# A read waits at most this long for a lock, and runs at most this long: a node's role that
# locks a table must not hang the bot (the review's D11).
LOCK_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_SECONDS = 30

log = logging.getLogger(__name__)


def session_options(lock_timeout: int, statement_timeout: int) -> str:
    """libpq's `options` for every connection to the fleet's database: the search path
    pinned (awgd_fleet.schema.SEARCH_PATH, never `public`), and the timeouts."""
    path = fleet_schema.SEARCH_PATH.replace(" ", "")
    return f"-c search_path={path} -c lock_timeout={lock_timeout}s -c statement_timeout={statement_timeout}s"


def open_schemas(conn: Connection) -> list[str]:
    """The schemas on the connection's search path in which PUBLIC may create objects."""
    found = conn.execute(
        sa.text(
            "SELECT s FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) AS s"
            " WHERE pg_catalog.has_schema_privilege('public', s, 'CREATE')"
        )
    )
    return [row[0] for row in found]


def with_driver(url: str | sa.engine.URL) -> sa.engine.URL:
    """A bare postgresql:// URL with the driver that is installed: psycopg (3) if it is, else
    psycopg2 (Debian 12's python3-psycopg2). SQLAlchemy's own default differs by version
    (psycopg2 before 2.1, psycopg from 2.1), and would fail where only the other is there."""
    made = sa.engine.make_url(url)
    if made.drivername == "postgresql":
        found = next((name for name in ("psycopg", "psycopg2") if importlib.util.find_spec(name)), None)
        if found is not None:
            made = made.set(drivername=f"postgresql+{found}")
    return made


@dataclass(frozen=True, slots=True)
class NodeTraffic:
    """One node's figures for a peer (a row of awgd_fleet_peers)."""

    node: str
    interface: str
    public_key: str
    label: str | None
    present: bool
    online: bool
    latest_handshake: datetime | None
    period_start: datetime
    period_end: datetime
    period_rx: int
    period_tx: int
    lifetime_rx: int
    lifetime_tx: int
    blocked: tuple[str, ...]
    mirrored_at: datetime
    # Whether the owner bound the key to this node (awgd_keys): True, False (the key is bound
    # to other nodes: these rows are left out of FleetTraffic's sums), None (not bound).
    bound: bool | None = None

    @property
    def period_total(self) -> int:
        return self.period_rx + self.period_tx

    @property
    def lifetime_total(self) -> int:
        return self.lifetime_rx + self.lifetime_tx


@dataclass(frozen=True, slots=True)
class FleetTraffic:
    """A public key across the fleet: each node it is on, and the sums. A node's "period"
    is its own billing period; the sum adds each node's current one. Rows of a node the key
    is not bound to (`bound` False: the owner bound it to others) are in `nodes` but not in
    the sums: a node cannot add usage to a key that lives elsewhere."""

    public_key: str
    nodes: tuple[NodeTraffic, ...]

    @property
    def counted(self) -> tuple[NodeTraffic, ...]:
        return tuple(node for node in self.nodes if node.bound is not False)

    @property
    def period_rx(self) -> int:
        return sum(node.period_rx for node in self.counted)

    @property
    def period_tx(self) -> int:
        return sum(node.period_tx for node in self.counted)

    @property
    def lifetime_rx(self) -> int:
        return sum(node.lifetime_rx for node in self.counted)

    @property
    def lifetime_tx(self) -> int:
        return sum(node.lifetime_tx for node in self.counted)

    @property
    def period_total(self) -> int:
        return self.period_rx + self.period_tx

    @property
    def lifetime_total(self) -> int:
        return self.lifetime_rx + self.lifetime_tx

    @property
    def online(self) -> bool:
        return any(node.online for node in self.counted)


@dataclass(frozen=True, slots=True)
class FleetNode:
    """A node as its mirror last wrote it. `stale_seconds` is measured on the database's
    clock (since the mirror last wrote), so a node whose own clock is off still shows how
    far behind it is."""

    node: str
    version: str | None
    healthy: bool
    last_sample_at: datetime | None
    last_success_at: datetime | None
    mirrored_at: datetime
    stale_seconds: float


# Fleet plans (docs/FLEET.md, "Fleet plans"): what a planner (a role in awgd_planner) writes.
FLEET_RESETS = ("month", "week", "day", "none")
OVER_QUOTA = ("block", "throttle")
# The same bounds as a node's plan.set (awgd.plans), so that a plan the centre takes every node takes.
MAX_LIMIT_BYTES = 2**60
MAX_WARN_AT = 10
MIN_KBIT, MAX_KBIT = 8, 10_000_000
MAX_USER_CHARS = 128


class BadFleetPlan(ValueError):
    """A fleet plan or member that no node would take; the message names the field."""


@dataclass(frozen=True, slots=True)
class FleetUserUsage:
    """A fleet user's plan and its usage in the latest window its nodes reported (the sum of
    its members' shares; traffic booked while blocked is not in it)."""

    fleet_user: str
    plan: dict[str, Any]
    version: int
    window_start: datetime | None  # None: no node reported yet
    used: int
    limit_bytes: int | None


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """A fleet user's quota event, stored once for the user (not once per node)."""

    id: int
    at: datetime
    fleet_user: str
    type: str  # quota.warning, quota.exceeded
    window_start: datetime
    version: int
    threshold: float
    used_bytes: int
    limit_bytes: int | None


def fleet_plan(
    *,
    limit_bytes: int | None,
    reset: str,
    anchor: date,
    timezone: str,
    expires_at: datetime | None = None,
    warn_at: tuple[float, ...] = (0.8,),
    over_quota: str = "block",
    throttle_kbit: int | None = None,
) -> dict[str, Any]:
    """A fleet plan as the nodes take it (fleet.sync), checked; raises BadFleetPlan."""
    if limit_bytes is not None and (isinstance(limit_bytes, bool) or not 0 <= limit_bytes <= MAX_LIMIT_BYTES):
        raise BadFleetPlan(f"limit_bytes must be null or an integer from 0 to {MAX_LIMIT_BYTES}")
    if reset not in FLEET_RESETS:
        raise BadFleetPlan(f"reset must be one of {', '.join(FLEET_RESETS)} (a period is each node's own)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadFleetPlan(f"timezone {timezone!r} is not an IANA time zone") from None
    if expires_at is not None and expires_at.tzinfo is None:
        raise BadFleetPlan("expires_at must be an aware datetime")
    if len(warn_at) > MAX_WARN_AT or any(not 0 < f < 1 for f in warn_at):
        raise BadFleetPlan(f"warn_at must hold at most {MAX_WARN_AT} fractions f with 0 < f < 1")
    if over_quota not in OVER_QUOTA:
        raise BadFleetPlan("over_quota must be block or throttle")
    if (over_quota == "throttle") != (throttle_kbit is not None):
        raise BadFleetPlan("throttle_kbit is required with over_quota throttle, and only then")
    if throttle_kbit is not None and not MIN_KBIT <= throttle_kbit <= MAX_KBIT:
        raise BadFleetPlan(f"throttle_kbit must be from {MIN_KBIT} to {MAX_KBIT}")
    return {
        "limit_bytes": limit_bytes,
        "reset": reset,
        "anchor": anchor.isoformat(),
        "timezone": timezone,
        "expires_at": None if expires_at is None else expires_at.isoformat(),
        "warn_at": sorted(set(warn_at)),
        "over_quota": over_quota,
        "throttle_kbit": throttle_kbit,
    }


_SET_USER = sa.text(
    "INSERT INTO awgd.awgd_fleet_users (fleet_user, plan) VALUES (:user, CAST(:plan AS jsonb))"
    " ON CONFLICT (fleet_user) DO UPDATE SET plan = excluded.plan RETURNING version"
)
_REMOVE_USER = sa.text("DELETE FROM awgd.awgd_fleet_users WHERE fleet_user = :user")
_ADD_MEMBER = sa.text(
    "INSERT INTO awgd.awgd_fleet_members (node, interface, public_key, fleet_user)"
    " VALUES (:node, :interface, :public_key, :user)"
    " ON CONFLICT (node, interface, public_key) DO UPDATE SET fleet_user = excluded.fleet_user"
)
_REMOVE_MEMBER = sa.text(
    "DELETE FROM awgd.awgd_fleet_members WHERE node = :node AND interface = :interface AND public_key = :public_key"
)
_USER_USAGE = sa.text(
    "SELECT fleet_user, plan, version, window_start, used, limit_bytes FROM awgd.awgd_fleet_user_usage"
    " WHERE fleet_user = :user"
)
_FLEET_EVENTS = sa.text(
    "SELECT id, at, fleet_user, type, window_start, version, threshold, used_bytes, limit_bytes"
    " FROM awgd.awgd_fleet_events WHERE id > :after ORDER BY id LIMIT :limit"
)

_LAST_FLEET_EVENT = sa.text("SELECT COALESCE(pg_catalog.max(id), 0) FROM awgd.awgd_fleet_events")
_TRAFFIC = sa.text(
    "SELECT node, interface, public_key, label, present, online, latest_handshake, period_start, period_end,"
    " period_rx, period_tx, lifetime_rx, lifetime_tx, blocked, mirrored_at, bound"
    " FROM awgd.awgd_fleet_peers WHERE public_key = :public_key ORDER BY node, interface"
)
_NODES = sa.text(
    "SELECT node, version, healthy, last_sample_at, last_success_at, mirrored_at,"
    " extract(epoch FROM pg_catalog.now() - mirrored_at) AS stale_seconds FROM awgd.awgd_fleet_nodes ORDER BY node"
)


def _node_traffic(row: Any) -> NodeTraffic:
    return NodeTraffic(
        node=row.node,
        interface=row.interface,
        public_key=row.public_key,
        label=row.label,
        present=bool(row.present),
        online=bool(row.online),
        latest_handshake=row.latest_handshake,
        period_start=row.period_start,
        period_end=row.period_end,
        period_rx=int(row.period_rx),
        period_tx=int(row.period_tx),
        lifetime_rx=int(row.lifetime_rx),
        lifetime_tx=int(row.lifetime_tx),
        blocked=tuple(row.blocked or ()),
        mirrored_at=row.mirrored_at,
        bound=row.bound,
    )


class FleetClient:
    def __init__(self, url: str | sa.engine.URL, **engine_options: Any) -> None:
        options: dict[str, Any] = {"pool_pre_ping": True, "future": True, **engine_options}
        made = with_driver(url)
        if made.get_backend_name() == "postgresql":
            pinned = session_options(LOCK_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS)
            options.setdefault("connect_args", {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "options": pinned})
        self.engine = sa.create_engine(made, **options)
        self._checked = made.get_backend_name() != "postgresql"

    def _connect(self) -> Connection:
        conn = self.engine.connect()
        if not self._checked:  # once: says so in the log, reads all the same
            self._checked = True
            for schema in open_schemas(conn):
                log.warning(
                    "PUBLIC may create objects in schema %s, on the search path:"
                    " REVOKE CREATE ON SCHEMA %s FROM PUBLIC",
                    schema,
                    schema,
                )
        return conn

    def traffic(self, public_key: str) -> FleetTraffic:
        """The peer's figures on every node that has it (none: an empty `nodes`)."""
        with self._connect() as conn:
            found = conn.execute(_TRAFFIC, {"public_key": public_key}).all()
        return FleetTraffic(public_key, tuple(_node_traffic(row) for row in found))

    def nodes(self) -> list[FleetNode]:
        with self._connect() as conn:
            found = conn.execute(_NODES).all()
        return [
            FleetNode(
                node=row.node,
                version=row.version,
                healthy=bool(row.healthy),
                last_sample_at=row.last_sample_at,
                last_success_at=row.last_success_at,
                mirrored_at=row.mirrored_at,
                stale_seconds=float(row.stale_seconds),
            )
            for row in found
        ]

    # ---- fleet plans: a role in awgd_planner ---------------------------------------------------

    def set_fleet_plan(self, fleet_user: str, plan: dict[str, Any]) -> int:
        """Create the fleet user, or replace its plan (a top-up: a higher limit); every node
        with a member takes it at its mirror's next round. `plan` comes from fleet_plan().
        Returns the plan's version (it goes up with every change)."""
        if not 1 <= len(fleet_user) <= MAX_USER_CHARS or not fleet_user.isprintable():
            raise BadFleetPlan(f"a fleet user's id must be 1-{MAX_USER_CHARS} printable characters")
        with self.engine.begin() as conn:
            return int(conn.execute(_SET_USER, {"user": fleet_user, "plan": json.dumps(plan)}).scalar_one())

    def remove_fleet_user(self, fleet_user: str) -> None:
        """Forget the user and its members: the nodes lift its fleet blocks at their next round."""
        with self.engine.begin() as conn:
            conn.execute(_REMOVE_USER, {"user": fleet_user})

    def add_fleet_peer(self, fleet_user: str, node: str, interface: str, public_key: str) -> None:
        """Count the peer (on `node`) in the user's quota; a peer belongs to one user at most."""
        with self.engine.begin() as conn:
            conn.execute(
                _ADD_MEMBER, {"user": fleet_user, "node": node, "interface": interface, "public_key": public_key}
            )

    def remove_fleet_peer(self, node: str, interface: str, public_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(_REMOVE_MEMBER, {"node": node, "interface": interface, "public_key": public_key})

    def fleet_usage(self, fleet_user: str) -> FleetUserUsage | None:
        """The user's plan and usage in its latest reported window; None: no such user."""
        with self._connect() as conn:
            row = conn.execute(_USER_USAGE, {"user": fleet_user}).one_or_none()
        if row is None:
            return None
        limit = None if row.limit_bytes is None else int(row.limit_bytes)
        return FleetUserUsage(row.fleet_user, dict(row.plan), int(row.version), row.window_start, int(row.used), limit)

    def fleet_events(self, after: int = 0, limit: int = 100) -> list[FleetEvent]:
        """The fleet users' quota events after id `after`, oldest first (a notifier keeps the
        last id it told about)."""
        with self._connect() as conn:
            found = conn.execute(_FLEET_EVENTS, {"after": after, "limit": limit}).all()
        return [
            FleetEvent(
                int(row.id),
                row.at,
                row.fleet_user,
                row.type,
                row.window_start,
                int(row.version),
                float(row.threshold),
                int(row.used_bytes),
                None if row.limit_bytes is None else int(row.limit_bytes),
            )
            for row in found
        ]

    def last_fleet_event_id(self) -> int:
        """The newest fleet event's id (0: none yet): where a new notifier starts."""
        with self._connect() as conn:
            return int(conn.execute(_LAST_FLEET_EVENT).scalar_one())

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
