"""Parse `ip -o link show` into each interface's ifindex and administrative state. Pure.

A re-created interface gets a new ifindex, which is how the accounting tells that its
counters restarted (DESIGN.md "Accounting rules", rule 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "5: awg0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 ..."; veth names carry "@peer".
_LINE_RE = re.compile(r"([0-9]{1,10}): ([^\s@:]{1,15})(?:@[^\s:]*)?: <([A-Z0-9_,-]*)>", re.ASCII)


@dataclass(frozen=True, slots=True)
class Link:
    ifindex: int
    up: bool


def parse_ip_link(text: str) -> dict[str, Link]:
    """Lines that do not look like a link are skipped: only the ones we need must parse."""
    links: dict[str, Link] = {}
    for line in text.split("\n"):
        match = _LINE_RE.match(line)
        if match is None:
            continue
        flags = match[3].split(",")
        links[match[2]] = Link(int(match[1]), "UP" in flags)
    return links
