"""Numbers and times for humans: IEC units with one decimal, "3 min ago", and sizes as
people write them ("10GiB", "500MB")."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(count: int) -> str:
    """format_bytes(1536) == "1.5 KiB"; below 1 KiB the exact count: "512 B"."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*", re.IGNORECASE)
_FACTORS = {"B": 1} | {f"{p}{i}B": (1024 if i else 1000) ** (n + 1) for n, p in enumerate("KMGTP") for i in ("", "I")}


def parse_size(text: str) -> int:
    """parse_size("10GiB") == 10 * 2**30, "500MB" == 500 * 10**6, "1.5 GiB", "4096"; raises
    ValueError for anything else."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 10GiB, 500MB, 1048576)")
    number, unit = match.groups()
    factor = _FACTORS[(unit or "B").upper()]
    return int(float(number) * factor) if "." in number else int(number) * factor


_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bit(?:/s)?|bps)?\s*")
_RATE_FACTORS = {"": 1, "k": 1, "m": 1000, "g": 1000_000}


def parse_rate(text: str) -> int | None:
    """A speed as people write it, in kbit/s: "10M" and "10Mbit" 10000, "500k" 500, "2000"
    2000 (kbit/s), "1.5M" 1500; "none" (or "-", "unlimited") None. Raises ValueError."""
    if text.strip().lower() in ("none", "-", "unlimited"):
        return None
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a speed: {text!r} (e.g. 10M = 10 Mbit/s, 500k = 500 kbit/s, none)")
    number, unit = match.groups()
    return round(float(number) * _RATE_FACTORS[unit.lower()])


def format_rate(kbit: int | None) -> str:
    """format_rate(2000) == "2M", 500 "500k", 1500 "1.5M", None "-" (the shape parse_rate reads)."""
    if kbit is None:
        return "-"
    if kbit >= 1000:
        return f"{kbit / 1000:g}M" if kbit % 100 == 0 else f"{kbit / 1000:.2f}M"
    return f"{kbit}k"


def format_duration(seconds: float) -> str:
    """The two largest units: "45 s", "3 min", "2 h 5 min", "3 d 4 h"."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_ago(moment: datetime | None, now: datetime | None = None) -> str:
    """ "3 min ago", "just now" (under 5 s ago), "in 20 s" and "in 3 s" for the future (a
    sample due in 3 s is not "just now"), "now" within a second, "never" for None."""
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if -1 < seconds < 0:
        return "now"
    if seconds < 0:
        return f"in {format_duration(-seconds)}"
    if seconds < JUST_NOW_SECONDS:
        return "just now"
    return f"{format_duration(seconds)} ago"


# Under this, "just now": samples are seconds apart, and "2 s ago" reads as a glitch.
JUST_NOW_SECONDS = 5


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """plural(1, "peer") == "1 peer", plural(3, "peer") == "3 peers"."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def parse_fraction(text: str) -> float:
    """A warning threshold as people write it: "80%", "80 %", "0.8"; strictly between 0 and 1.
    Raises ValueError naming the forms it takes."""
    given = text.strip()
    try:
        value = float(given[:-1]) / 100 if given.endswith("%") else float(given)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise ValueError(f"not a threshold: {text!r} (a share of the limit: 80% or 0.8, above 0 and below 100%)")
    return value


# Eighths of a character cell, so that a bar's length shows small differences too.
_EIGHTHS = " ▏▎▍▌▋▊▉"
BAR_WIDTH = 30


def bar(value: int, peak: int, width: int = BAR_WIDTH, *, unicode: bool = True) -> str:
    """`value` as a bar `width` cells long at `peak`: Unicode blocks, or `#` (plain text: not
    a terminal, NO_COLOR). A value above zero always shows at least a sliver."""
    if peak <= 0 or value <= 0:
        return ""
    if not unicode:
        return "#" * max(1, round(width * value / peak))
    eighths = max(1, round(8 * width * min(value, peak) / peak))
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")
