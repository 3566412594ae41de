"""awgd-mirror: copies one node's figures into the fleet's central PostgreSQL (docs/FLEET.md).

An unprivileged process beside awgd (group `awgd`, for the socket). Each round reads what
changed since its cursor (traffic.changes, page by page) and writes it, with the node's
health and the new cursor, in one PostgreSQL transaction:

- every figure written is absolute (a lifetime, a period's or a day's total), keyed by node,
  interface and public key, so a round written twice, or replayed after a crash, counts
  nothing twice;
- the cursor lives in the same transaction as the figures it covers: a round cut short (the
  database or the mirror killed mid-write) leaves the old cursor, and the next round sends
  the same changes again;
- after an outage the daemon answers the old cursor with everything since it, from its
  ledger, so nothing is lost (awgd.change_feed).

The node writes as its own role, named like the node, through the schema's functions, which
write only its own rows (awgd_fleet.schema). Times written are the node's;
`mirrored_at` is the database's clock (`now()`), which is what staleness is measured on.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ProgrammingError, SQLAlchemyError

from awgd_client import change_rows, methods
from awgd_client.errors import AwgdError, InvalidParams, PermissionDenied
from awgd_client.sync_client import Client
from awgd_fleet import schema as fleet_schema
from awgd_fleet.reader import open_schemas, session_options, with_driver

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/awgd/mirror.toml"
# The systemd credential the password may come in (LoadCredential=fleet-password:...).
CREDENTIAL = "fleet-password"
# Peers per traffic.changes page (the most it gives): a page is one RPC answer of about 1.5
# MiB, and a round's pages go into one COPY.
PAGE_PEERS = 10000
# Other periods' or days' rows per INSERT statement (one JSON parameter of about 1 MiB).
ROWS_PER_STATEMENT = 5000
# After a sample the mirror asks again this long after the daemon's next sample is due (a
# sample of a large server takes a moment to commit); never longer than POLL_SECONDS.
AFTER_SAMPLE_SECONDS = 1.0
POLL_SECONDS = 10.0
# A round with nothing new still writes the node's row this often, so a node that is fine
# but idle does not look stale.
HEARTBEAT_SECONDS = 60.0
# Waits after a failed round: doubling from the first to the most, while the database or the
# daemon stays away.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
# An RPC page waits this long: a 50,000-peer catch-up is one page at a time.
RPC_TIMEOUT_SECONDS = 60.0
# fleet.sync's users per request, by their JSON's size: a request line holds 1 MiB (docs/API.md,
# "Limits"), and one user has at most 1,000 members (about 70 KiB).
SYNC_PAGE_BYTES = 512 * 1024
# A round writes every share of this node's fleet users this often, whatever it believes the
# database holds (an owner may have deleted rows); in between, the changed ones.
FULL_REPORT_SECONDS = 600.0
# How long connecting to the database may take before the round counts as failed.
CONNECT_TIMEOUT_SECONDS = 10
# A round waits at most this long for a lock, and a statement runs at most this long: a
# node role that holds a table lock (the review's D11) fails the others' rounds, which are
# retried, instead of stalling them. A 50,000-peer round's longest statement takes 0.3 s.
LOCK_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_SECONDS = 60


class MirrorError(Exception):
    """Something the operator has to fix (the message says what); not retried."""


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    url: str
    node: str
    socket: str
    password_file: str | None = None

    @classmethod
    def load(cls, path: str) -> MirrorConfig:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except OSError as exc:
            raise MirrorError(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise MirrorError(f"{path} is not TOML: {exc}") from None
        fleet = raw.get("fleet")
        rpc = raw.get("rpc", {})
        if not isinstance(fleet, dict) or not isinstance(fleet.get("url"), str) or not fleet["url"]:
            raise MirrorError(f"{path}: [fleet] url is required (a PostgreSQL URL)")
        if not isinstance(rpc, dict):
            raise MirrorError(f"{path}: [rpc] must be a table")
        node = fleet.get("node", socket.gethostname())
        if not isinstance(node, str) or not node or len(node) > 63:
            raise MirrorError(f"{path}: [fleet] node must be a name of 1 to 63 characters (a PostgreSQL role)")
        password_file = fleet.get("password_file")
        if password_file is not None and not isinstance(password_file, str):
            raise MirrorError(f"{path}: [fleet] password_file must be a path")
        socket_path = rpc.get("socket", methods.DEFAULT_SOCKET)
        if not isinstance(socket_path, str):
            raise MirrorError(f"{path}: [rpc] socket must be a path")
        return cls(fleet["url"], node, socket_path, password_file)

    def engine_url(self) -> sa.engine.URL:
        """The URL with its password from password_file or the systemd credential, if any,
        and the installed driver (awgd_fleet.reader.with_driver)."""
        url = with_driver(self.url)
        secret = self.password_file
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if secret is None and credentials and os.path.exists(os.path.join(credentials, CREDENTIAL)):
            secret = os.path.join(credentials, CREDENTIAL)
        if secret is not None:
            try:
                password = Path(secret).read_text().strip()
                mode = os.stat(secret).st_mode
            except OSError as exc:
                raise MirrorError(f"cannot read the password file {secret}: {exc.strerror}") from None
            if secret == self.password_file and mode & 0o077:
                log.warning(
                    "the password file %s may be read by others than its owner (mode %o): give it to the unit"
                    " as a credential (LoadCredential=%s:%s) and chmod 600 it",
                    secret,
                    mode & 0o777,
                    CREDENTIAL,
                    secret,
                )
            url = url.set(password=password)
        return url


@dataclass(frozen=True, slots=True)
class Round:
    peers: int
    periods: int
    days: int
    wrote: bool


def _iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# A page's peers go into a temporary table by COPY, as the rows traffic.changes sends them (each
# one line of COPY text, awgd_client.change_rows), with the page's period and day appended: no
# work per peer here. One UPDATE ... FROM then rewrites the peers already there and an INSERT adds
# the others, if any. An upsert per row, or one upsert from JSON, cost several times as much
# (tests/bench/NOTES.md). Instants travel as Unix seconds and days as ISO dates.
_MOVES = """
CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.awgd_moves (
    interface text, public_key text, label text, present boolean, latest_handshake bigint, first_seen bigint,
    lifetime_rx bigint, lifetime_tx bigint, period_rx bigint, period_tx bigint, day_rx bigint, day_tx bigint,
    blocked text, plan text, period_start bigint, period_end bigint, day date
) ON COMMIT DELETE ROWS
"""
_COPY_MOVES = "COPY pg_temp.awgd_moves FROM STDIN"
# The node's role writes through the schema's functions alone (awgd_fleet.schema).
_PEERS = sa.text("SELECT awgd.mirror_peers(:moved)")
# Other periods and days (a mirror that fell behind across a day or a period): few, so each
# kind is one INSERT ... SELECT FROM json_to_recordset(one JSON text) ... ON CONFLICT per batch.
_PERIODS = sa.text("SELECT awgd.mirror_periods(CAST(:rows AS json))")
_DAYS = sa.text("SELECT awgd.mirror_days(CAST(:rows AS json))")
_CURSOR = sa.text("SELECT awgd.mirror_cursor()")
# Fleet plans (docs/FLEET.md): this node's fleet users, with the others' usage, and its report.
_FLEET_PLANS = sa.text(
    "SELECT fleet_user, version, plan, others_window, others, members, as_of FROM awgd.fleet_plans()"
)
_FLEET_REPORT = sa.text("SELECT awgd.fleet_report(CAST(:rows AS json))")
_NOW = sa.text("SELECT pg_catalog.now()")
_NODE = sa.text(
    "SELECT awgd.mirror_node(:version, :healthy, :last_sample_at, :last_success_at, :online_window, :cursor)"
)


# The order of a traffic.changes answer's `periods` and `days` rows, as the statements name them.
_PERIOD_FIELDS = ("i", "k", "s", "e", "rx", "tx")
_DAY_FIELDS = ("i", "k", "d", "rx", "tx")


class Moves:
    """A round's peers, as COPY text for awgd_moves: each page's rows with its period and day."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.peers = 0

    def add(self, page: dict[str, Any]) -> None:
        rows = page["rows"]
        if not rows:
            return
        start, end = page["period"]
        day = page["day"]
        tail = f"\t{int(start)}\t{int(end)}\t{change_rows.NULL if day is None else change_rows.text(day)}\n"
        self.parts.append(tail.join(rows) + tail)  # each row, then its tail: one C-level join
        self.peers += len(rows)

    def write(self, conn: Connection) -> None:
        if not self.peers:
            return
        conn.execute(sa.text(_MOVES))
        # The function reads it as the tables' owner; no other session can reach it.
        conn.execute(sa.text("GRANT SELECT ON pg_temp.awgd_moves TO PUBLIC"))
        _copy(conn, _COPY_MOVES, "".join(self.parts))
        # It joins by hash, whatever the planner believes (enable_nestloop off): on statistics
        # of awgd_peers taken before a node's first round it would take that node's rows for
        # one, and join 500 moves to 50,000 peers by scanning them all for each move.
        conn.execute(_PEERS, {"moved": self.peers})


def _copy(conn: Connection, statement: str, text: str) -> None:
    """COPY ... FROM STDIN of `text`, in the connection's transaction, with whichever driver
    it is: psycopg (3) or Debian 12's psycopg2."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if hasattr(cursor, "copy"):  # psycopg 3
            with cursor.copy(statement) as copy:
                copy.write(text)
        else:
            cursor.copy_expert(statement, io.StringIO(text))
    finally:
        cursor.close()


def _pages_of(users: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """fleet.sync's pages: each well inside a request line's 1 MiB; at least one (maybe empty)."""
    pages: list[list[dict[str, Any]]] = [[]]
    size = 0
    for user in users:
        length = len(json.dumps(user, default=str))
        if pages[-1] and size + length > SYNC_PAGE_BYTES:
            pages.append([])
            size = 0
        pages[-1].append(user)
        size += length
    return pages


def _batches(conn: Connection, statement: sa.TextClause, rows: list[dict[str, Any]]) -> None:
    for at in range(0, len(rows), ROWS_PER_STATEMENT):
        conn.execute(statement, {"rows": json.dumps(rows[at : at + ROWS_PER_STATEMENT])})


class Mirror:
    def __init__(self, config: MirrorConfig) -> None:
        self.config = config
        self.engine: Engine = sa.create_engine(
            config.engine_url(),
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": "awgd-mirror",
                "options": session_options(LOCK_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS),
            },
            future=True,  # SQLAlchemy 1.4's 2.0-style API; the default on 2.x
        )
        self.client = Client(config.socket, timeout=RPC_TIMEOUT_SECONDS)
        self._last_status: Any = None
        self._heartbeat_at = 0.0
        self._checked = False
        self._next_sample_at: datetime | None = None
        # Whether the node held fleet users at the last round (so an empty answer is still
        # passed on, once, to lift their blocks), and whether it lets this mirror (fleet.sync).
        self._fleet_held = True
        self._fleet_refused: str | None = None
        # What the database holds of this node's shares, as the last committed round wrote
        # them, and the plan versions it saw: a round writes only the shares that changed,
        # and those of users whose plan changed (their thresholds are judged again), and all
        # of them every FULL_REPORT_SECONDS (and after a start).
        self._shares: dict[tuple[str, str], tuple[str, float, int]] = {}
        self._versions: dict[str, int] = {}
        self._full_report_at = 0.0

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()

    def check(self, conn: Connection) -> None:
        """The schema is there, at this version, and the role is the node's (MirrorError)."""
        role = conn.execute(sa.text("SELECT current_user")).scalar_one()
        if role != self.config.node:
            raise MirrorError(
                f"connected as role {role!r}, but this node is {self.config.node!r}: each node writes as its own"
                f' role, named like the node (CREATE ROLE "{self.config.node}" LOGIN ... IN ROLE awgd_node)'
            )
        try:
            version = conn.execute(sa.text("SELECT pg_catalog.max(version) FROM awgd.awgd_schema")).scalar_one()
        except ProgrammingError:  # no such table, or no right to read it (a lost connection is retried)
            raise MirrorError(
                "the fleet schema is not in this database (or this role may not read it):"
                " run `awgd-mirror --print-schema | psql` as the database's owner"
            ) from None
        creators = open_schemas(conn)
        if creators:
            raise MirrorError(
                f"PUBLIC may create objects in schema {', '.join(creators)}, on this connection's search path:"
                " anyone could plant a function there that the mirror would run (REVOKE CREATE ON SCHEMA"
                f" {creators[0]} FROM PUBLIC)"
            )
        if version != fleet_schema.SCHEMA_VERSION:
            raise MirrorError(
                f"the fleet schema is at version {version}, this mirror writes version"
                f" {fleet_schema.SCHEMA_VERSION}: run this version's `awgd-mirror --print-schema | psql`"
                " as the database's owner"
            )

    def run_round(self) -> Round:
        """One round: everything changed since the stored cursor, in one transaction."""
        status = self.client.call("server.status")
        self._next_sample_at = _iso(status["sampler"]["next_sample_at"])
        with self.engine.begin() as conn:
            # The commit need not wait for the database's disk: should PostgreSQL lose a
            # committed round in a crash, it loses the cursor with it, and the round is sent again.
            conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
            if not self._checked:
                self.check(conn)
                self._checked = True
            cursor = conn.execute(_CURSOR).scalar_one_or_none()
            moves = Moves()
            periods_written = days_written = 0
            online_window = None
            new_cursor = cursor
            first = True
            for page in self._pages(cursor):
                if first:
                    new_cursor, first = page["cursor"], False
                    online_window = page["online_window"]
                moves.add(page)
                # A page's other periods and days at once (a year of them for each of its
                # peers after a long outage), in key order, the order of the tables' primary
                # keys: in the order the daemon pages in, day rows took a fifth more room.
                periods = sorted(page["periods"])
                days = sorted(page["days"])
                _batches(conn, _PERIODS, [dict(zip(_PERIOD_FIELDS, row, strict=True)) for row in periods])
                _batches(conn, _DAYS, [dict(zip(_DAY_FIELDS, row, strict=True)) for row in days])
                periods_written += len(periods)
                days_written += len(days)
            moves.write(conn)
            reported = self._fleet_round(conn)
            sampler = status["sampler"]
            health = (status["version"], status["healthy"], sampler["last_sample_at"], sampler["last_success_at"])
            now = time.monotonic()
            idle = not moves.peers and new_cursor == cursor and health == self._last_status
            quiet = idle and now - self._heartbeat_at < HEARTBEAT_SECONDS
            values = {
                "version": status["version"],
                "healthy": status["healthy"],
                "last_sample_at": _iso(sampler["last_sample_at"]),
                "last_success_at": _iso(sampler["last_success_at"]),
                "online_window": online_window,
                "cursor": new_cursor,
            }
            if not quiet:
                conn.execute(_NODE, values)
        self._fleet_reported(reported)  # committed
        if quiet:
            return Round(0, 0, 0, wrote=False)
        self._last_status, self._heartbeat_at = health, now
        return Round(moves.peers, periods_written, days_written, wrote=True)

    def _fleet_reported(self, reported: tuple[dict[tuple[str, str], tuple[str, float, int]], dict[str, int]]) -> None:
        """A round committed: the shares it wrote and the plan versions it saw are what the
        database holds now."""
        shares, versions = reported
        self._shares.update(shares)
        self._versions = versions

    def _fleet_round(self, conn: Connection) -> tuple[dict[tuple[str, str], tuple[str, float, int]], dict[str, int]]:
        """Pass the centre's word on this node's fleet users to awgd (fleet.sync) and write
        back what each member used in its window (docs/FLEET.md, "Fleet plans"). The node
        decides; a round cut short changes nothing the node would regret: it ignores news
        older than what it holds, and its shares are sent again next round. Returns the shares
        written and the versions seen, for _fleet_reported once the round has committed."""
        if self._fleet_refused is not None:
            return {}, self._versions
        found = conn.execute(_FLEET_PLANS).all()
        if not found and not self._fleet_held:
            return {}, {}
        as_of = found[0].as_of if found else conn.execute(_NOW).scalar_one()
        users = [
            {
                "user": row.fleet_user,
                "version": int(row.version),
                "plan": row.plan,
                "others": None
                if row.others_window is None
                else {"window_start": row.others_window.isoformat(), "used_bytes": int(row.others)},
                "members": row.members,
            }
            for row in found
        ]
        try:
            pages = _pages_of(users)
            for page in pages[:-1]:
                self.client.call("fleet.sync", users=page, as_of=as_of.isoformat(), more=True)
            answer = self.client.call("fleet.sync", users=pages[-1], as_of=as_of.isoformat())
        except InvalidParams as exc:
            # A plan the node will not take (the planner's mistake): the figures are mirrored
            # all the same, and the node keeps what it held.
            log.warning("awgd refused this round's fleet plans: %s", exc)
            return {}, self._versions
        except PermissionDenied as exc:
            self._fleet_refused = str(exc)
            log.warning(
                "awgd does not take fleet plans from this mirror (%s): add its group to rpc.fleet_groups"
                " and restart the mirror; figures are mirrored all the same",
                exc,
            )
            return {}, self._versions
        self._fleet_held = bool(answer["users"])
        versions = {row.fleet_user: int(row.version) for row in found}
        now = time.monotonic()
        full = now - self._full_report_at >= FULL_REPORT_SECONDS
        held, seen = self._shares, self._versions
        written: dict[tuple[str, str], tuple[str, float, int]] = {}
        report = []
        for share in answer["usage"]:
            key = (share["interface"], share["public_key"])
            user = share["user"]
            figure = (user, datetime.fromisoformat(share["window_start"]).timestamp(), share["used_bytes"])
            if full or held.get(key) != figure or seen.get(user) != versions.get(user):
                written[key] = figure
                report.append({"i": key[0], "k": key[1], "u": user, "w": figure[1], "used": figure[2]})
        if report:
            conn.execute(_FLEET_REPORT, {"rows": json.dumps(report)})
        if full:
            self._full_report_at = now
            self._shares = {}
        return written, versions

    def _pages(self, cursor: str | None) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            page = self.client.call("traffic.changes", cursor=cursor, after=after, limit=PAGE_PEERS)
            if page.get("columns") != list(change_rows.COLUMNS):
                raise MirrorError(
                    "awgd's traffic.changes rows have other columns than this mirror writes: run the mirror"
                    " of the same awgd version"
                )
            yield page
            if not page["more"]:
                return
            after = page["next"]

    def wait_seconds(self) -> float:
        """Until just after the daemon's next sample (as the last round's server.status had
        it), at most POLL_SECONDS."""
        due = self._next_sample_at
        if due is None:
            return POLL_SECONDS
        left = (due - datetime.now(UTC)).total_seconds() + AFTER_SAMPLE_SECONDS
        return min(max(left, AFTER_SAMPLE_SECONDS), POLL_SECONDS)


def serve(mirror: Mirror, stop: threading.Event, *, once: bool) -> int:
    """Rounds until `stop`; each failure is logged once, then retried with a growing wait."""
    delay = RETRY_FIRST_SECONDS
    failing: str | None = None
    while not stop.is_set():
        try:
            done = mirror.run_round()
        except MirrorError:
            raise
        except AwgdError as exc:
            problem = f"awgd did not answer: {exc}"
        except SQLAlchemyError as exc:
            problem = f"the database did not take the round: {_reason(exc)}"
            mirror.engine.dispose()  # reconnect from scratch
        else:
            if failing is not None:
                log.info("mirroring again (after: %s)", failing)
            failing, delay = None, RETRY_FIRST_SECONDS
            if done.wrote:
                log.debug("mirrored %d peers, %d periods, %d days", done.peers, done.periods, done.days)
            if once:
                return 0
            stop.wait(mirror.wait_seconds())
            continue
        if problem != failing:
            log.warning("%s (retrying; nothing is lost: the next round sends it)", problem)
            failing = problem
        if once:
            return 1
        stop.wait(delay)
        delay = min(delay * 2, RETRY_MAX_SECONDS)
    return 0


def _reason(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="awgd-mirror", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    parser.add_argument("--print-schema", action="store_true", help="print the SQL of the central database and exit")
    parser.add_argument("--once", action="store_true", help="mirror one round and exit (1 if it failed)")
    parser.add_argument("--verbose", action="store_true", help="log every round")
    args = parser.parse_args(argv)
    if args.print_schema:
        sys.stdout.write(fleet_schema.schema_sql())
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(levelname)s: %(message)s"
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        config = MirrorConfig.load(args.config)
        mirror = Mirror(config)
    except MirrorError as exc:
        log.error("%s", exc)
        return 2
    except (SQLAlchemyError, ImportError) as exc:
        log.error("cannot use the database URL: %s", exc)
        return 2
    log.info("mirroring node %s (awgd at %s) into the fleet database", config.node, config.socket)
    try:
        return serve(mirror, stop, once=args.once)
    except MirrorError as exc:
        log.error("%s", exc)
        return 2
    finally:
        mirror.close()


if __name__ == "__main__":
    sys.exit(main())
