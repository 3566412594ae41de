"""`/etc/awgd/awgd.toml`: every key optional, every mistake named (DESIGN.md "Config").

A missing file means all defaults. An unknown key, a wrong type, a bad cron expression,
an unknown timezone or a relative socket path is a ConfigError naming the key and the
reason; the daemon turns it into exit status 78 (EX_CONFIG), as sysexits.h suggests.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from awgd.client_settings import Clients, ClientSettingError, parse_clients
from awgd.events import RETENTION_DAYS
from awgd.periods import validate_schedule
from awgd.stalls import DEFAULT_STALL_SECONDS, MIN_STALL_SECONDS
from awgd.trusted_path import UntrustedPath, read_trusted_file
from awgd.uapi_reader import DEFAULT_SOCKET_DIRS
from awgd_client.names import interface_name_problem

DEFAULT_PATH = "/etc/awgd/awgd.toml"
# A plan set mid-window counts the window's earlier usage from the day buckets, so they are
# kept at least as long as the longest renewing window (a month).
MIN_DAY_RETENTION_DAYS = 31
EX_CONFIG = 78
# The managing role's group (docs/API.md "Access"): the package creates it, empty.
DEFAULT_ADMIN_GROUP = "awgd-admin"
DEFAULT_FLEET_GROUP = "awgd-fleet"
READERS = ("auto", "uapi", "tool")
_GROUP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


class ConfigError(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def system_zone() -> ZoneInfo:
    """The system's IANA zone: $TZ, /etc/timezone, the /etc/localtime link, else UTC."""
    candidates = [os.environ.get("TZ", "").removeprefix(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Config:
    tool: str = "auto"
    # How samples read the counters: "uapi" (the control sockets), "tool", or "auto" (the
    # sockets where they are, else the tool). awgd.uapi_reader.
    reader: str = "auto"
    socket_dirs: tuple[str, ...] = DEFAULT_SOCKET_DIRS
    exec_prefix: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    online_window: int = 180
    stall_seconds: int = DEFAULT_STALL_SECONDS  # awgd.stalls
    tool_timeout: float = 10.0
    config_dir: str = ""  # "" = the tool's own directory (awgd.wg_config.config_dir)
    names_file: str = ""  # "" = Amnezia's clientsTable, where it exists
    sampling_schedule: str = "* * * * *"
    periods_schedule: str = "0 0 1 * *"
    timezone: str = ""  # as written; "" = the system's
    ledger_url: str = "sqlite:////var/lib/awgd/ledger.sqlite3"
    day_retention_days: int = 400
    # Hour buckets (traffic.history by hour) older than this are pruned; 0 keeps none.
    hour_retention_days: int = 31
    events_retention_days: int = 30
    # How often the interfaces are sampled while a limited peer is past its last warning
    # threshold and below its limit: the overshoot past a limit is one such interval.
    plans_fast_sampling_seconds: int = 10
    # When day buckets are pruned and the ledger's file is checked: daily, at a quiet hour.
    maintenance_schedule: str = "17 3 * * *"
    socket: str = "/run/awgd/awgd.sock"
    group: str = "awgd"
    admin_groups: tuple[str, ...] = (DEFAULT_ADMIN_GROUP,)
    fleet_groups: tuple[str, ...] = (DEFAULT_FLEET_GROUP,)  # awgd-mirror's: fleet.sync
    max_connections_per_uid: int = 64
    zone: ZoneInfo = field(default_factory=system_zone)
    clients: Clients = field(default_factory=Clients)  # [clients]: what users' devices are told

    @property
    def zone_name(self) -> str:
        return self.zone.key

    def effective(self) -> dict[str, dict[str, Any]]:
        """The config as TOML-shaped data, defaults filled in (for --check-config)."""
        shown: dict[str, dict[str, Any]] = {}
        for section, keys in SCHEMA.items():
            for key, (name, _) in keys.items():
                value = getattr(self, name)
                shown.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
        shown["periods"]["timezone"] = self.timezone or self.zone_name
        shown.update(self.clients.effective())
        return shown


def _string_list(check: Callable[[str], str | None]) -> Callable[[Any], str | None]:
    def validate(value: Any) -> str | None:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return "must be a list of strings"
        for item in value:
            problem = check(item)
            if problem:
                return problem
        return None

    return validate


def _reader(value: Any) -> str | None:
    return None if value in READERS else 'must be "auto", "uapi" or "tool"'


def _absolute_dir(item: str) -> str | None:
    if not os.path.isabs(item) or "\x00" in item or "\n" in item:
        return "items must be absolute paths"
    return None


def _tool(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if value in ("auto", "awg", "wg") or (os.path.isabs(value) and "\x00" not in value):
        return None
    return 'must be "auto", "awg", "wg" or an absolute path'


def _optional_path(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if value and (not value.startswith("/") or "\x00" in value):
        return 'must be an absolute path, or "" for the default'
    return None


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    return None if value > 0 else "must be greater than 0"


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    return None if 0 < value <= 3600 else "must be between 0 and 3600 seconds"


def _schedule(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    try:
        validate_schedule(value)
    except ValueError as exc:
        return f"bad cron expression: {exc}"
    return None


def _timezone(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if value == "":
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {value!r}"
    return None


def _url(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    return None if value.startswith("sqlite:") else "only sqlite:/// URLs are supported"


def _socket(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not os.path.isabs(value):
        return "must be an absolute path"
    return None if len(value.encode()) < 108 else "is longer than a Unix socket path may be (107 bytes)"


def _group(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    return None if value == "" or _GROUP_RE.fullmatch(value) else "is not a valid group name"


def _iface(name: str) -> str | None:
    problem = interface_name_problem(name)
    return None if problem is None else f"{name!r} is not an interface name: it {problem}"


def _at_least(low: int) -> Callable[[Any], str | None]:
    def validate(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"must be an integer >= {low}"
        return None

    return validate


def _prefix_item(item: str) -> str | None:
    return None if item and "\x00" not in item else "items must be non-empty strings"


def _group_item(item: str) -> str | None:
    return _group(item) if item else "items must be non-empty group names"


# Its own shape (defaults, and a table per interface): awgd.client_settings reads it.
CLIENTS_SECTION = "clients"
# section -> key -> (Config field, validator)
SCHEMA: dict[str, dict[str, tuple[str, Callable[[Any], str | None]]]] = {
    "wireguard": {
        "tool": ("tool", _tool),
        "reader": ("reader", _reader),
        "socket_dirs": ("socket_dirs", _string_list(_absolute_dir)),
        "exec_prefix": ("exec_prefix", _string_list(_prefix_item)),
        "interfaces": ("interfaces", _string_list(_iface)),
        "online_window": ("online_window", _positive_int),
        "stall_seconds": ("stall_seconds", _at_least(MIN_STALL_SECONDS)),
        "tool_timeout": ("tool_timeout", _positive_number),
        "config_dir": ("config_dir", _optional_path),
        "names_file": ("names_file", _optional_path),
    },
    "sampling": {"schedule": ("sampling_schedule", _schedule)},
    "periods": {"schedule": ("periods_schedule", _schedule), "timezone": ("timezone", _timezone)},
    "ledger": {
        "url": ("ledger_url", _url),
        "day_retention_days": ("day_retention_days", _at_least(MIN_DAY_RETENTION_DAYS)),
        "hour_retention_days": ("hour_retention_days", _at_least(0)),
        "maintenance_schedule": ("maintenance_schedule", _schedule),
    },
    "events": {"retention_days": ("events_retention_days", _at_least(RETENTION_DAYS))},
    "plans": {"fast_sampling_seconds": ("plans_fast_sampling_seconds", _positive_int)},
    "rpc": {
        "socket": ("socket", _socket),
        "group": ("group", _group),
        "admin_groups": ("admin_groups", _string_list(_group_item)),
        "fleet_groups": ("fleet_groups", _string_list(_group_item)),
        "max_connections_per_uid": ("max_connections_per_uid", _positive_int),
    },
}


def parse(data: dict[str, Any]) -> Config:
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section == CLIENTS_SECTION:
            if not isinstance(content, dict):
                raise ConfigError(section, "must be a table")
            try:
                values["clients"] = parse_clients(content)
            except ClientSettingError as exc:
                raise ConfigError(exc.key, exc.reason) from None
            continue
        keys = SCHEMA.get(section)
        if keys is None:
            raise ConfigError(section, "unknown section")
        if not isinstance(content, dict):
            raise ConfigError(section, "must be a table")
        for key, value in content.items():
            if key not in keys:
                raise ConfigError(f"{section}.{key}", "unknown key")
            name, validate = keys[key]
            problem = validate(value)
            if problem:
                raise ConfigError(f"{section}.{key}", problem)
            values[name] = tuple(value) if isinstance(value, list) else value
    if "tool_timeout" in values:
        values["tool_timeout"] = float(values["tool_timeout"])
    timezone = values.get("timezone", "")
    values["zone"] = ZoneInfo(timezone) if timezone else system_zone()
    return Config(**values)


def load(path: str | None) -> Config:
    """Read the file (missing = defaults when it is the default path)."""
    target = os.path.abspath(path or DEFAULT_PATH)
    try:
        # The file names what awgd runs as root (wireguard.tool, exec_prefix), so a root
        # awgd reads it only when nobody but root could have written it or anything on the
        # way to it (awgd.trusted_path). A non-root awgd cannot run anything as root: it
        # reads the file without these checks.
        raw = read_trusted_file(target, check=os.geteuid() == 0)
    except FileNotFoundError:
        if path is None:
            return parse({})
        raise ConfigError(target, "no such file") from None
    except UntrustedPath as exc:
        raise ConfigError(target, f"{exc}; it names programs awgd runs as root") from None
    except OSError as exc:
        raise ConfigError(target, f"cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(target, "not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(target, f"not valid TOML ({exc})") from None
    return parse(data)
