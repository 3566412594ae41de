"""`fleet.sync`'s params and result (docs/API.md, "fleet.sync"): the central database's word on
the fleet users with peers on this node, as awgd-mirror passes it on, checked into plain
data (awgd.fleet_plans.FleetUser). Pure; every mistake is a BadFleet naming the field."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from awgd.fleet_plans import FLEET_RESETS, MAX_FLEET_USERS, MAX_USER_CHARS, FleetUser, PeerKey
from awgd.plans import BadPlan, parse_plan
from awgd_client.names import interface_name_problem, is_public_key

# A user with more peers on one node than this is a bot's loop gone wrong.
MAX_MEMBERS = 1000
# An IANA name is at most a few dozen characters (America/Argentina/ComodRivadavia: 32).
MAX_ZONE_CHARS = 64
_PLAN_FIELDS = frozenset(
    {"limit_bytes", "reset", "anchor", "expires_at", "warn_at", "over_quota", "throttle_kbit", "timezone"}
)
_USER_FIELDS = frozenset({"user", "version", "plan", "others", "members"})


class BadFleet(ValueError):
    """A fleet.sync param that is not valid; the message names it."""


def parse_sync(raw: Any, raw_as_of: Any) -> tuple[list[FleetUser], float]:
    """The users and the centre's clock (Unix seconds) of a fleet.sync call; raises BadFleet."""
    as_of = _instant(raw_as_of, "as_of")
    if not isinstance(raw, list) or len(raw) > MAX_FLEET_USERS:
        raise BadFleet(f"users must be a list of at most {MAX_FLEET_USERS} fleet users")
    users = [_user(item, f"users[{index}]", as_of) for index, item in enumerate(raw)]
    check_distinct(users)
    return users, as_of


def check_distinct(users: list[FleetUser]) -> None:
    """Each user once, each peer in one user at most (across a sync's pages too)."""
    names: set[str] = set()
    owners: dict[PeerKey, str] = {}
    for index, user in enumerate(users):
        if user.user in names:
            raise BadFleet(f"users[{index}].user {user.user!r} is listed twice")
        names.add(user.user)
        for key in user.members:
            if key in owners:
                raise BadFleet(f"users[{index}]: peer {key[1]} on {key[0]} is a member of {owners[key]!r} too")
            owners[key] = user.user


def _user(item: Any, where: str, as_of: float) -> FleetUser:
    if not isinstance(item, dict):
        raise BadFleet(f"{where} must be an object")
    unknown = sorted(set(item) - _USER_FIELDS)
    if unknown:
        raise BadFleet(f"{where}: unknown field {_shown(unknown[0])}")
    name = item.get("user")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_USER_CHARS or not name.isprintable():
        raise BadFleet(f"{where}.user must be 1-{MAX_USER_CHARS} printable characters")
    version = item.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**63:
        raise BadFleet(f"{where}.version must be an integer >= 0")
    plan_raw = item.get("plan")
    if not isinstance(plan_raw, dict):
        raise BadFleet(f"{where}.plan must be an object")
    unknown = sorted(set(plan_raw) - _PLAN_FIELDS)
    if unknown:
        raise BadFleet(f"{where}.plan: unknown field {_shown(unknown[0])}")
    zone = plan_raw.get("timezone")
    if not isinstance(zone, str) or not 0 < len(zone) <= MAX_ZONE_CHARS or not zone.isprintable():
        raise BadFleet(f"{where}.plan.timezone must be an IANA time zone name")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadFleet(f"{where}.plan.timezone {zone!r} is not a time zone this server knows") from None
    if plan_raw.get("reset") not in FLEET_RESETS:
        raise BadFleet(f"{where}.plan.reset must be one of {', '.join(FLEET_RESETS)} (a period is each node's own)")
    if plan_raw.get("anchor") is None:
        raise BadFleet(f"{where}.plan.anchor is required: every node must reckon the same windows")
    try:
        plan = parse_plan({k: v for k, v in plan_raw.items() if k != "timezone"}, date(1970, 1, 2))
    except BadPlan as exc:
        raise BadFleet(f"{where}.plan: {exc}") from None
    others_raw = item.get("others")
    others_window, others = 0, 0
    if others_raw is not None:
        if not isinstance(others_raw, dict) or set(others_raw) - {"window_start", "used_bytes"}:
            raise BadFleet(f"{where}.others must be null or an object with window_start and used_bytes")
        others_window = int(_instant(others_raw.get("window_start"), f"{where}.others.window_start"))
        used = others_raw.get("used_bytes")
        if isinstance(used, bool) or not isinstance(used, int) or not 0 <= used < 2**62:
            raise BadFleet(f"{where}.others.used_bytes must be an integer >= 0")
        others = used
    members_raw = item.get("members", [])
    if not isinstance(members_raw, list) or len(members_raw) > MAX_MEMBERS:
        raise BadFleet(f"{where}.members must be a list of at most {MAX_MEMBERS} peers")
    members: set[PeerKey] = set()
    for number, member in enumerate(members_raw):
        there = f"{where}.members[{number}]"
        if not isinstance(member, dict) or set(member) != {"interface", "public_key"}:
            raise BadFleet(f"{there} must be an object with interface and public_key")
        interface, public_key = member["interface"], member["public_key"]
        if interface_name_problem(interface) is not None:
            raise BadFleet(f"{there}.interface is not an interface name")
        if not is_public_key(public_key):
            raise BadFleet(f"{there}.public_key is not a key")
        members.add((str(interface), str(public_key)))
    return FleetUser(name, plan, zone, version, as_of, others_window, others, frozenset(members))


def _instant(value: Any, where: str) -> float:
    if not isinstance(value, str) or len(value) > 40:
        raise BadFleet(f"{where} must be an ISO 8601 time with an offset")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadFleet(f"{where} must be an ISO 8601 time with an offset") from None
    if when.tzinfo is None:
        raise BadFleet(f"{where} must have an offset (e.g. +00:00 or Z)")
    return when.astimezone(UTC).timestamp()


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 40 and name.isprintable() else "(unprintable)"
