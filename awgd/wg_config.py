"""An interface's config file (`wg0.conf`, `awg0.conf`): read it, find peers' names in it, and
edit its peers. Pure: text in, text out (the file itself is read and replaced by awgd.server_files).

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

Edits (`add_peer`, `remove_peer`, `update_peer`) touch only the lines of the peer they are
about: comments, `[Interface]`, other peers and their order stay byte for byte. A peer awgd
adds is written as `# Name = LABEL` (when it has one) above its `[Peer]`, then PublicKey,
PresharedKey, AllowedIPs and PersistentKeepalive. A block is never written here (the ledger
holds blocks): a config file never locks a user out on its own.
"""

from __future__ import annotations

import re
import unicodedata
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


# What the writer refuses in a value awg-quick reads (a `Key = Value` line): a line break
# would start a new line (a section, a PreUp run as root), `#` ends the value, `[` and `=`
# are read as a header or a key. Labels go into a comment, where only a line break matters.
_UNSAFE_IN_VALUE = frozenset("#[]=")


class UnsafeText(ValueError):
    """A value or label the writer will not put into a config file, whoever asked: a second
    wall behind the API's checks of params."""


# Line breaks and other controls, as the API refuses them in labels (awgd.api).
_CONTROLS = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _controls(text: str) -> bool:
    return any(unicodedata.category(ch) in _CONTROLS for ch in text)


def _value(key: str, value: str) -> str:
    if any(ch in _UNSAFE_IN_VALUE for ch in value) or _controls(value) or value != value.strip():
        raise UnsafeText(f"refused to write {key}: its value holds a character that would change the file's meaning")
    return value


def _key(key: str, value: str) -> str:
    """A key is base64 of 32 bytes: its padding `=` is the only one a value may hold."""
    if not is_public_key(value):
        raise UnsafeText(f"refused to write {key}: not a 44-character base64 key")
    return value


def _label(label: str) -> str:
    if _controls(label) or len(label) > MAX_LABEL_CHARS:
        raise UnsafeText("refused to write a label: it holds a control character or is too long")
    return label


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


def add_peer(
    text: str,
    public_key: str,
    *,
    allowed_ips: tuple[str, ...],
    preshared_key: str | None = None,
    keepalive: int | None = None,
    label: str | None = None,
) -> str:
    """The file with the peer's section appended (replacing any section it already had).
    Raises UnsafeText."""
    body = [f"# Name = {_label(label)}"] if label else []
    body += ["[Peer]", f"PublicKey = {_key('PublicKey', public_key)}"]
    if preshared_key:
        body.append(f"PresharedKey = {_key('PresharedKey', preshared_key)}")
    if allowed_ips:
        body.append(f"AllowedIPs = {_value('AllowedIPs', ', '.join(allowed_ips))}")
    if keepalive:
        body.append(f"PersistentKeepalive = {_value('PersistentKeepalive', str(int(keepalive)))}")
    kept = _without(text, public_key)
    if kept and not kept.endswith("\n"):
        kept += "\n"
    if kept.strip() and not kept.endswith("\n\n"):
        kept += "\n"
    return kept + "\n".join(body) + "\n"


def remove_peer(text: str, public_key: str) -> str:
    """The file without the peer's section (its lead comments too)."""
    return _without(text, public_key)


def update_peer(
    text: str,
    public_key: str,
    *,
    allowed_ips: tuple[str, ...] | None = None,
    keepalive: int | None = None,
    label: str | None = None,
    set_label: bool = False,
) -> str:
    """The file with the peer's AllowedIPs, PersistentKeepalive (0 = off) or name comment
    changed in place; a setting it lacked is added after its PublicKey line. Unchanged when
    the file has no section for the peer. Raises UnsafeText."""
    if allowed_ips is not None:
        _value("AllowedIPs", ", ".join(allowed_ips))
    if label is not None and set_label:
        _label(label)
    lines = text.splitlines(keepends=True)
    spans = _spans(text, public_key)
    for start, head, end in reversed(spans):
        section = lines[head:end]
        if allowed_ips is not None:
            section = _set(section, "AllowedIPs", ", ".join(allowed_ips) if allowed_ips else None)
        if keepalive is not None:
            section = _set(section, "PersistentKeepalive", str(int(keepalive)) if keepalive else None)
        lead = lines[start:head]
        if set_label:
            lead = [line for line in lead if not _NAME_COMMENT_RE.fullmatch(line.strip())]
            section = [line for line in section if not _NAME_COMMENT_RE.fullmatch(line.strip())]
            if label:
                lead.append(f"# Name = {label}\n")
        lines[start:end] = lead + section
    return "".join(lines)


def rekey_peer(text: str, public_key: str, new_public_key: str, preshared_key: str | None) -> str:
    """The file with the peer's section under its new key (peer.rekey): PublicKey replaced,
    PresharedKey replaced (or removed when None), every other line of it as it was. Unchanged
    when the file has no section for the peer. Raises UnsafeText."""
    _key("PublicKey", new_public_key)
    if preshared_key is not None:
        _key("PresharedKey", preshared_key)
    lines = text.splitlines(keepends=True)
    for _, head, end in reversed(_spans(text, public_key)):
        section = _set(lines[head:end], "PublicKey", new_public_key)
        lines[head:end] = _set(section, "PresharedKey", preshared_key)
    return "".join(lines)


def _set(section: list[str], key: str, value: str | None) -> list[str]:
    newline = "\n"
    wanted = key.lower()
    kept: list[str] = []
    done = False
    for line in section:
        match = _SETTING_RE.fullmatch(line.strip())
        if match and match[1].lower() == wanted:
            if value is not None and not done:
                kept.append(f"{key} = {value}{newline}")
                done = True
            continue
        kept.append(line)
    if value is not None and not done:
        at = next(
            (
                i + 1
                for i, line in enumerate(kept)
                if (m := _SETTING_RE.fullmatch(line.strip())) and m[1].lower() == "publickey"
            ),
            len(kept),
        )
        if at > 0 and not kept[at - 1].endswith(newline):
            kept[at - 1] += newline
        kept.insert(at, f"{key} = {value}{newline}")
    return kept


def _spans(text: str, public_key: str) -> list[tuple[int, int, int]]:
    """(lead start, header, end) line numbers of each section of the peer, in file order."""
    lines = text.splitlines()
    heads = [index for index, line in enumerate(lines) if _HEADER_RE.fullmatch(line.strip())]
    spans = []
    for number, head in enumerate(heads):
        end = _lead_start(lines, heads[number + 1]) if number + 1 < len(heads) else len(lines)
        section = Section(_HEADER_RE.fullmatch(lines[head].strip())[1], (), tuple(lines[head:end]))  # type: ignore[index]
        if section.public_key == public_key:
            spans.append((_lead_start(lines, head), head, end))
    return spans


def _without(text: str, public_key: str) -> str:
    lines = text.splitlines(keepends=True)
    for start, _, end in reversed(_spans(text, public_key)):
        # The blank lines that ended the section go too, unless it was the last one: then the
        # blank lines before it go, so the file does not end in an empty line it did not have.
        last = end == len(lines)
        del lines[start:end]
        while last and lines and not lines[-1].strip():
            lines.pop()
    return "".join(lines)


def clean_label(text: str) -> str | None:
    """A name as a label: control characters dropped, at most MAX_LABEL_CHARS; None if empty."""
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()[:MAX_LABEL_CHARS]
    return cleaned or None
