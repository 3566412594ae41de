"""Amnezia's clientsTable: the names the Amnezia app shows for its clients. Pure.

A JSON list, kept by the app in its container (`/opt/amnezia/awg/clientsTable`):
`[{"clientId": PUBLIC_KEY, "userData": {"clientName": NAME, "creationDate": ...}}, ...]`.
awgd reads names from it (awgd.peer_names) and, when it adds, renames or removes a peer on
a server that has one, keeps it in step (awgd.peer_admin), so the app shows the same clients.
Entries awgd does not touch are kept as they were, fields it does not know included.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from awgd.wg_config import clean_label
from awgd_client.names import is_public_key


def parse_clients_table(text: str) -> dict[str, str]:
    """Public key -> name; entries that are not as expected are skipped."""
    names: dict[str, str] = {}
    for entry in _entries(text) or []:
        if not isinstance(entry, dict):
            continue
        key, user = entry.get("clientId"), entry.get("userData")
        name = user.get("clientName") if isinstance(user, dict) else None
        if isinstance(key, str) and is_public_key(key) and isinstance(name, str):
            label = clean_label(name)
            if label:
                names[key] = label
    return names


def set_client(text: str, public_key: str, name: str | None, created: datetime) -> str:
    """The table with the client's name set (its entry added when it had none)."""
    entries = _entries(text)
    if entries is None:
        return text  # not a table awgd understands: left alone
    for entry in entries:
        if isinstance(entry, dict) and entry.get("clientId") == public_key:
            user = entry.get("userData")
            if not isinstance(user, dict):
                user = entry["userData"] = {}
            user["clientName"] = name or ""
            break
    else:
        # The app's own format for a creation date: "Fri Nov 27 17:02:02 2026".
        entries.append(
            {"clientId": public_key, "userData": {"clientName": name or "", "creationDate": created.strftime("%c")}}
        )
    return _dump(entries)


def rekey_client(text: str, public_key: str, new_public_key: str) -> str:
    """The table with the client's entry under its new key, its name and date kept."""
    entries = _entries(text)
    if entries is None:
        return text  # not a table awgd understands: left alone
    for entry in entries:
        if isinstance(entry, dict) and entry.get("clientId") == public_key:
            entry["clientId"] = new_public_key
    return _dump(entries)


def remove_client(text: str, public_key: str) -> str:
    entries = _entries(text)
    if entries is None:
        return text  # not a table awgd understands: left alone
    return _dump([e for e in entries if not (isinstance(e, dict) and e.get("clientId") == public_key)])


def _entries(text: str) -> list[Any] | None:
    try:
        data = json.loads(text) if text.strip() else []
    except ValueError:
        return None
    return data if isinstance(data, list) else None


def _dump(entries: list[Any]) -> str:
    return json.dumps(entries, indent=4, ensure_ascii=False) + "\n"
