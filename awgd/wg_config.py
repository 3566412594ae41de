"""An interface's config file (`wg0.conf`, `awg0.conf`): read it, and find peers' names in it. Pure.

The file is INI-like: `[Interface]` and `[Peer]` sections of `Key = Value` lines, with `#`
comments. awgd keeps every line as it is: a section is its header and the lines up to the
next section's lead, where a section's **lead** is the run of comment lines directly above
its header (no blank line between). Tools that manage WireGuard servers keep a peer's name
in a comment, either in that lead or inside the section:

    # friendly_name = Phone        (MindFlavor's prometheus_wireguard_exporter)
    # Name = Phone                 (wg-portal, wireguard-ui, and others)
    [Peer]
    PublicKey = ...

Both keys are understood, with `=` or `:`, in any letter case; the last one wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from awgd.config import Config
from awgd_client.names import is_public_key

# Where interfaces' config files live when `wireguard.config_dir` does not say: awg-quick's
# and wg-quick's directories, and, through exec_prefix, Amnezia's container's.
AWG_CONFIG_DIR = "/etc/amnezia/amneziawg"
WG_CONFIG_DIR = "/etc/wireguard"
AMNEZIA_CONFIG_DIR = "/opt/amnezia/awg"
# A label as the API defines it (docs/API.md): at most this many characters, none a control.
MAX_LABEL_CHARS = 64
_NAME_COMMENT_RE = re.compile(r"#\s*(?:friendly_name|name)\s*[=:]\s*(.*?)\s*", re.IGNORECASE)
_HEADER_RE = re.compile(r"\[\s*([A-Za-z]+)\s*\]")
_SETTING_RE = re.compile(r"([A-Za-z0-9_]+)\s*=\s*(.*?)\s*")


@dataclass(frozen=True, slots=True)
class Section:
    kind: str  # "Interface", "Peer", or whatever the header says
    lead: tuple[str, ...]  # the comment lines directly above the header
    lines: tuple[str, ...]  # the header and every line up to the next section's lead

    def settings(self) -> dict[str, str]:
        """`Key = Value` lines, keys as written (the last of a repeated key wins)."""
        found = {}
        for line in self.lines[1:]:
            match = _SETTING_RE.fullmatch(line.strip())
            if match:
                found[match[1]] = match[2]
        return found

    def value(self, key: str) -> str | None:
        """A setting by key, in any letter case (WireGuard's own keys are case-insensitive)."""
        wanted = key.lower()
        found = None
        for name, value in self.settings().items():
            if name.lower() == wanted:
                found = value
        return found

    @property
    def public_key(self) -> str | None:
        value = self.value("PublicKey") if self.kind.lower() == "peer" else None
        return value if is_public_key(value) else None

    def name(self) -> str | None:
        """The peer's name from a name comment in its lead or its lines (module doc)."""
        found = None
        for line in (*self.lead, *self.lines[1:]):
            match = _NAME_COMMENT_RE.fullmatch(line.strip())
            if match:
                found = clean_label(match[1])
        return found


@dataclass(frozen=True, slots=True)
class ConfigFile:
    preamble: tuple[str, ...]  # lines before the first section's lead
    sections: tuple[Section, ...]

    def peers(self) -> list[Section]:
        return [section for section in self.sections if section.kind.lower() == "peer"]


def config_dir(config: Config, tool: str | None) -> str:
    """The directory of interfaces' config files: `wireguard.config_dir`, or the default of the
    tool that answered (`tool`), or Amnezia's when the interfaces live in a container."""
    if config.config_dir:
        return config.config_dir
    if config.exec_prefix:
        return AMNEZIA_CONFIG_DIR
    return WG_CONFIG_DIR if tool == "wg" else AWG_CONFIG_DIR


def config_path(config: Config, tool: str | None, interface: str) -> str:
    return f"{config_dir(config, tool)}/{interface}.conf"


def parse_config(text: str) -> ConfigFile:
    """Split a config file into its sections, every line kept as written."""
    lines = text.splitlines()
    heads = [index for index, line in enumerate(lines) if _HEADER_RE.fullmatch(line.strip())]
    leads = [_lead_start(lines, head) for head in heads]
    sections = []
    for number, head in enumerate(heads):
        end = leads[number + 1] if number + 1 < len(heads) else len(lines)
        kind = _HEADER_RE.fullmatch(lines[head].strip())[1]  # type: ignore[index]  # a header, by `heads`
        sections.append(Section(kind, tuple(lines[leads[number] : head]), tuple(lines[head:end])))
    preamble = tuple(lines[: leads[0]]) if heads else tuple(lines)
    return ConfigFile(preamble, tuple(sections))


def _lead_start(lines: list[str], head: int) -> int:
    start = head
    while start > 0 and lines[start - 1].strip().startswith("#"):
        start -= 1
    return start


def peer_names(text: str) -> dict[str, str]:
    """Public key -> name, for every peer of a config file that has a name comment."""
    names = {}
    for section in parse_config(text).peers():
        key, name = section.public_key, section.name()
        if key is not None and name:
            names[key] = name
    return names


def clean_label(text: str) -> str | None:
    """A name as a label: control characters dropped, at most MAX_LABEL_CHARS; None if empty."""
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()[:MAX_LABEL_CHARS]
    return cleaned or None
