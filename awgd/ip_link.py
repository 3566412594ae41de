"""Parse `ip -o link show` into each interface's ifindex and administrative state. Pure.

A re-created interface gets a new ifindex, which is how the accounting tells that its
counters restarted (docs/DESIGN.md "Accounting", rule 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from awgd_client.names import is_interface_name

# "5: awg0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 ..."; veth names carry "@peer".
_LINE_RE = re.compile(r"([0-9]{1,10}): ([^\s@:]+)(?:@[^\s:]*)?: <([A-Z0-9_,-]*)>")


# "... mtu 1420 qdisc htb state UNKNOWN ...": the root qdisc, which says whether the speed
# limits awgd set up are still there (awgd.shaper); busybox's ip prints it too.
_QDISC_RE = re.compile(r" qdisc ([A-Za-z0-9_-]{1,32})")


@dataclass(frozen=True, slots=True)
class Link:
    ifindex: int
    up: bool
    qdisc: str | None = None  # the root qdisc's kind, as `ip` names it


def parse_ip_link(text: str) -> dict[str, Link]:
    """Lines that do not look like a link are skipped: only the ones we need must parse."""
    links: dict[str, Link] = {}
    for line in text.split("\n"):
        match = _LINE_RE.match(line)
        if match is None or not is_interface_name(match[2]):
            continue
        flags = match[3].split(",")
        qdisc = _QDISC_RE.search(line, match.end())
        links[match[2]] = Link(int(match[1]), "UP" in flags, qdisc[1] if qdisc else None)
    return links
