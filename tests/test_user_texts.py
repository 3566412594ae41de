"""The users' texts (awgd_client.user_texts) in English and Russian, rendered from a real
awgd's answers (scripted tool counters underneath): every text in both languages, each
contradiction a bot once made a test of its own, and the catalogs as Babel compiles them."""

from __future__ import annotations

import dataclasses
import gettext
import re
import string
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ScriptedTool, dump, key

pytest.importorskip("babel", reason="the texts extra (Babel) is not installed")

from babel.messages.pofile import read_po

from awgd_client import Client, Event, PeerTraffic, RateLimit
from awgd_client import user_texts as ut
from awgd_client.user_texts import (
    TEMPLATES,
    UserTexts,
    display_name,
    render_fleet_notice,
    render_history,
    render_notice,
    render_plan,
    render_profile,
    render_stats,
    render_status,
)

PLAIN, WARNED, OVER, PAUSED, EXPIRED, GONE, NEVER, LATE, SLOW = (key(c) for c in "PWOAEGNLS")
GB = 10**9
PO = Path(ut.__file__).parent / "locale" / "ru" / "LC_MESSAGES" / "awgd_client.po"
MO = PO.with_suffix(".mo")
# Words that give an English text away inside a Russian one.
ENGLISH = re.compile(r"\b(Used|of|left|Renews|Resets|Valid|Expired|All time|paused|Online|period|the)\b")


class Recording(UserTexts):
    """UserTexts that remember which texts they rendered."""

    def __init__(self, language: str, **options: Any) -> None:
        super().__init__(language, **options)
        self.used: set[str] = set()

    def __call__(self, key: str, /, **values: Any) -> str:
        self.used.add(key)
        return super().__call__(key, **values)


def counters(peers: dict[str, tuple[int, int]]) -> str:
    """awg0 with `peers` shaking hands now; wg1's peer never did, wg2's an hour ago."""
    idle = dump({"wg1": {NEVER: (0, 0)}}, handshake=0) + dump({"wg2": {LATE: (70, 80)}}, int(time.time()) - 3600)
    return dump({"awg0": peers}) + idle


@pytest.fixture
def server(daemons, scripted_tool: ScriptedTool) -> Iterator[tuple[Any, Client]]:  # type: ignore[no-untyped-def]
    peers = {k: (0, 0) for k in (PLAIN, WARNED, OVER, PAUSED, EXPIRED, GONE, SLOW)}
    scripted_tool.set(counters(peers))
    daemon = daemons(scripted_tool.path).start()
    moved = {PLAIN: (2 * GB, 7 * GB), WARNED: (GB, int(5.3 * GB)), OVER: (GB, 3 * GB)}
    moved |= {PAUSED: (10, 20), EXPIRED: (10, 20), GONE: (5, 5), SLOW: (GB, 3 * GB)}
    scripted_tool.set(counters(moved))
    daemon.result("traffic.sample")
    daemon.result("peer.update", interface="awg0", public_key=WARNED, label="Dave")
    # 6.3 GB of 10: past the 50 % threshold, which the warning must not show as the usage.
    month = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    daemon.result(
        "plan.set",
        interface="awg0",
        public_key=WARNED,
        limit_bytes=10 * GB,
        reset="day",
        warn_at=[0.5],
        expires_at=month,
    )
    daemon.result("plan.set", interface="awg0", public_key=OVER, limit_bytes=4 * GB, reset="month")
    slow = {"over_quota": "throttle", "throttle_kbit": 1000}
    daemon.result("plan.set", interface="awg0", public_key=SLOW, limit_bytes=2 * GB, reset="month", **slow)
    daemon.result("peer.block", interface="awg0", public_key=PAUSED)
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    daemon.result("plan.set", interface="awg0", public_key=EXPIRED, limit_bytes=None, expires_at=past)
    del moved[GONE]  # removed from the server by its operator
    scripted_tool.set(counters(moved))
    daemon.result("traffic.sample")
    with Client(daemon.socket) as client:
        yield daemon, client


def figures(client: Client, public_key: str) -> list[PeerTraffic]:
    return [client.traffic(public_key)]


def events(client: Client) -> list[Event]:
    return list(client.events(limit=1000).events)


def renewed_event(peer: PeerTraffic) -> Event:
    """plan.renewed as awgd stores it (the real one needs a midnight: test_aiogram_notifications)."""
    assert peer.plan is not None and peer.plan.end is not None
    data = {"start": peer.plan.start.isoformat(), "end": peer.plan.end.isoformat(), "previous_used_bytes": 1}
    return Event(1, peer.plan.start, "plan.renewed", peer.interface, peer.public_key, data | {"quota_lifted": True})


@pytest.mark.parametrize("language", ["en", "ru"])
def test_every_text_renders_in_both_languages(server, language: str) -> None:  # type: ignore[no-untyped-def]
    _, client = server
    texts = Recording(language)
    profiles = [
        (display_name(k, None, f[0] if f else None), f)
        for k in (PLAIN, WARNED, OVER, PAUSED, EXPIRED, GONE, SLOW)
        for f in [figures(client, k)]
    ]
    profiles.append(("Unknown", []))
    profiles.append(("Old phone", [dataclasses.replace(figures(client, PLAIN)[0], present=False, replaced_by=OVER)]))
    profiles.append(("Tablet", figures(client, NEVER)))
    profiles.append(("Laptop", figures(client, LATE)))
    limited = dataclasses.replace(figures(client, PLAIN)[0], rate_limit=RateLimit(2000, None))
    profiles.append(("Router", [limited]))
    # Stalled as awgd answers it (a real one: tests/test_stalls.py, on amneziawg-go too).
    stalled = dataclasses.replace(figures(client, NEVER)[0], stalled=True)
    profiles.append(("Watch", [stalled]))
    shown = [render_stats(texts, profiles), render_stats(texts, []), texts("unavailable")]
    status = client.server_status()
    shown.append(render_status(texts, status))
    shown.append(
        render_status(
            texts,
            dataclasses.replace(
                status, healthy=False, interfaces=(), sampler=dataclasses.replace(status.sampler, last_error="boom")
            ),
        )
    )
    # A fleet plan's block (tests/test_fleet_plans.py makes real ones) and its quota notices.
    for reason in ("fleet_quota", "fleet_expired"):
        fleet_blocked = dataclasses.replace(figures(client, PLAIN)[0], blocked=(reason,))
        shown.append(render_stats(texts, [("Phone", [fleet_blocked])]))
    shown.append(render_fleet_notice(texts, "quota.warning", 83 * GB, 100 * GB) or "")
    shown.append(render_fleet_notice(texts, "quota.exceeded", 100 * GB, 100 * GB) or "")
    assert render_fleet_notice(texts, "quota.warning", 100 * GB, 100 * GB) is None  # the cut-off says it
    some_stalled = tuple(dataclasses.replace(i, peers_stalled=2) for i in status.interfaces)
    shown.append(render_status(texts, dataclasses.replace(status, interfaces=some_stalled)))
    for event in events(client):
        peer = client.traffic(event.public_key) if event.public_key else None
        if event.public_key and (
            notice := render_notice(texts, event, display_name(event.public_key, None, peer), peer)
        ):
            shown.append(notice)
    for kind in ("peer.stalled", "peer.recovered"):
        event = Event(1, stalled.sampled_at or datetime.now(UTC), kind, stalled.interface, stalled.public_key, {})
        shown.append(render_notice(texts, event, "Watch", stalled) or "")
    warned = client.traffic(WARNED)
    shown.append(render_notice(texts, renewed_event(warned), "Dave", warned) or "")
    slowed = client.traffic(SLOW)
    shown.append(render_notice(texts, renewed_event(slowed), "Dave", slowed) or "")
    never_renews = dataclasses.replace(slowed, plan=dataclasses.replace(slowed.plan, end=None))  # type: ignore[arg-type]
    exceeded = next(e for e in events(client) if e.type == "quota.exceeded" and e.public_key == SLOW)
    shown.append(render_notice(texts, exceeded, "Dave", never_renews) or "")
    shown.append(
        render_notice(texts, dataclasses.replace(renewed_event(warned), data={"quota_lifted": True}), "Dave", None)
        or ""
    )
    once = dataclasses.replace(warned, plan=dataclasses.replace(warned.plan, end=None))  # type: ignore[arg-type]
    for event in events(client):
        if (
            event.type in ("quota.warning", "quota.exceeded") and event.public_key == WARNED
        ) or event.type == "quota.exceeded":
            shown.append(render_notice(texts, event, "Dave", once) or "")
    history = client.history(PLAIN, granularity="day", limit=3)
    shown.append(render_history(texts, "Phone", history))
    shown.append(render_history(texts, "Phone", dataclasses.replace(history, buckets=())))
    for reset in ("month", "week", "day", "period", "none"):
        shown.append(render_plan(texts, 10 * GB, reset, None))
    shown.append(render_plan(texts, None, "month", datetime(2027, 3, 1, tzinfo=UTC)))
    # The admin commands' own (tests/test_aiogram_admin.py drives them through aiogram).
    for admin_key in [k for k in TEMPLATES if k.startswith("admin_") or k in ("not_admin", "refresh", "refreshed")]:
        fields = {name: "X" for _, name, _, _ in string.Formatter().parse(TEMPLATES[admin_key]) if name}
        shown.append(texts(admin_key, **fields))
    assert texts.used == set(TEMPLATES), sorted(set(TEMPLATES) - texts.used)
    for text in shown:
        assert text and "{" not in text and "}" not in text, text
        if language == "ru":
            assert not ENGLISH.search(re.sub(r"<[^>]+>|\[[^]]*\]|/\w+|PEER|SIZE|awgd|VPN|[A-Z]{2,}", "", text)), text


def test_sizes_dates_and_percents_follow_the_language_and_the_units() -> None:
    en, ru = UserTexts("en"), UserTexts("ru")
    assert en.size(10 * GB) == "10\u00a0GB" and ru.size(10 * GB) == "10\u00a0ГБ"  # a plan sold as 10 GB
    assert en.size(9_300_000_000) == "9.3\u00a0GB" and ru.size(9_300_000_000) == "9,3\u00a0ГБ"
    binary = UserTexts("ru", units="binary")
    assert binary.size(10 * 2**30) == "10\u00a0ГиБ" and UserTexts("en", units="binary").size(1536) == "1.5\u00a0KiB"
    assert (
        en.size(512) == "512\u00a0B"
        and en.size(999 * GB) == "999\u00a0GB"
        and en.size(1234 * 10**15) == "1,234\u00a0PB"
    )
    assert en.percent(63, 100) == "63%" and ru.percent(63, 100).replace("\u00a0", " ") == "63 %"
    assert en.percent(999, 1000) == "99%"  # never rounded up to the limit
    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    assert en.day(new_year) == "1 January" and ru.day(new_year) == "1 января"
    assert en.ago(new_year - timedelta(minutes=3), new_year) == "3 minutes ago"
    assert ru.ago(new_year - timedelta(minutes=3), new_year) == "3 минуты назад"
    assert ru.ago(new_year, new_year) == "только что"
    assert en.speed(2000) == "2\u00a0Mbit/s" and en.speed(500) == "500\u00a0kbit/s"
    assert ru.speed(1500) == "1,5\u00a0Мбит/с"  # noqa: RUF001
    assert ru.speed(None) == "без ограничений"
    assert ut.language_for("ru-RU") == "ru" and ut.language_for("de") == "en" and ut.language_for(None, "ru") == "ru"
    with pytest.raises(ValueError, match="language"):
        UserTexts("de")


def test_one_renewal_instant(server) -> None:  # type: ignore[no-untyped-def]
    _, client = server
    warned = figures(client, WARNED)
    text = render_profile(UserTexts("en"), "Dave", warned)
    assert text.count("Renews on") == 1 and "Resets on" not in text  # the plan's window, not the period's too
    plain = render_profile(UserTexts("en"), "Phone", figures(client, PLAIN))
    assert plain.count("Resets on") == 1 and "Renews on" not in plain
    notice = next(e for e in events(client) if e.type == "quota.warning")
    assert UserTexts("en").day(warned[0].plan.end) in (render_notice(UserTexts("en"), notice, "Dave", warned[0]) or "")  # type: ignore[union-attr]


def test_a_throttled_peer_is_slowed_not_paused(server) -> None:  # type: ignore[no-untyped-def]
    _, client = server
    peer = client.traffic(SLOW)
    assert peer.blocked == () and peer.rate_limit is not None and peer.rate_limit.down_kbit == 1000
    text = render_profile(UserTexts("en"), "Phone", [peer])
    assert "🐢 Slowed to 1\u00a0Mbit/s: the traffic limit is used up" in text and "paused" not in text
    assert text.count("Renews on") == 1
    exceeded = next(e for e in events(client) if e.type == "quota.exceeded" and e.public_key == SLOW)
    notice = render_notice(UserTexts("en"), exceeded, "Phone", peer) or ""
    assert "The speed is limited to 1\u00a0Mbit/s until" in notice and "paused" not in notice


def test_paused_beats_online(server) -> None:  # type: ignore[no-untyped-def]
    _, client = server
    for public_key, reason in ((PAUSED, "by the administrator"), (OVER, "the traffic limit is used up")):
        peer = client.traffic(public_key)
        assert peer.online  # its app still shakes hands
        text = render_profile(UserTexts("en"), "Phone", [peer])
        assert f"⛔ VPN paused: {reason}" in text and "Online" not in text
    expired = render_profile(UserTexts("en"), "Phone", [client.traffic(EXPIRED)])
    assert "the plan expired" in expired and "Expired on" in expired and "Renews" not in expired


def test_the_warning_shows_the_usage_not_the_threshold(server) -> None:  # type: ignore[no-untyped-def]
    _, client = server
    warning = next(e for e in events(client) if e.type == "quota.warning")
    assert warning.data["threshold"] == 0.5
    peer = client.traffic(WARNED)
    text = render_notice(UserTexts("en"), warning, display_name(WARNED, None, peer), peer) or ""
    assert "(63%)" in text and "50%" not in text and "6.3\u00a0GB of 10\u00a0GB" in text
    assert "(63\u00a0%)" in (render_notice(UserTexts("ru"), warning, "Dave", peer) or "")
    # A warning in the sample that also goes over the limit is not told: the cut-off is.
    over = next(e for e in events(client) if e.type == "quota.warning" and e.public_key == OVER)
    assert render_notice(UserTexts("en"), over, "Phone", client.traffic(OVER)) is None


def test_one_name_for_a_device(server) -> None:  # type: ignore[no-untyped-def]
    _, client = server
    peer = client.traffic(WARNED)  # awgd's label: Dave
    assert display_name(WARNED, "Dave's phone", peer) == "Dave's phone"  # the bot's own name first
    assert display_name(WARNED, None, peer) == "Dave"
    assert display_name(PLAIN, None, client.traffic(PLAIN)) == PLAIN[:8] + "…"
    assert display_name(PLAIN) == PLAIN[:8] + "…"


def test_a_removed_profile_is_not_one_that_never_connected(server) -> None:  # type: ignore[no-untyped-def]
    _, client = server
    gone = render_profile(UserTexts("en"), "Phone", figures(client, GONE))
    assert "no longer on the server" in gone and "Not connected yet" not in gone
    never = render_profile(UserTexts("en"), "Tablet", figures(client, NEVER))
    assert "Not connected yet" in never and "no longer" not in never
    unknown = render_profile(UserTexts("en"), "New", [])
    assert "Not connected yet" in unknown


def test_overrides_come_first_untranslated() -> None:
    texts = UserTexts("ru", overrides={"no_profiles": "Профилей нет — купите: /buy"})
    assert render_stats(texts, []) == "Профилей нет — купите: /buy"
    assert texts("not_admin") == "Извините, эта команда только для администраторов."
    by_function = UserTexts("en", overrides=lambda key, values: "[x]" if key == "state_never" else None)
    assert "[x]" in render_profile(by_function, "Tablet", [])


def test_the_catalog_is_complete_and_compiled() -> None:
    with PO.open("rb") as handle:
        catalog = read_po(handle)
    units = set(ut._DECIMAL_UNITS) | set(ut._BINARY_UNITS) | {ut._JUST_NOW, ut._KBIT, ut._MBIT}
    wanted = set(TEMPLATES.values()) | units
    found = {m.id for m in catalog if m.id}
    assert found == wanted, (wanted - found, found - wanted)
    fields = string.Formatter()
    for message in catalog:
        if not message.id:
            continue
        assert message.string and not message.fuzzy, message.id
        names = {f[1] for f in fields.parse(str(message.id)) if f[1]}
        assert {f[1] for f in fields.parse(str(message.string)) if f[1]} == names, message.id
        assert message.id.count("<b>") == message.string.count("<b>"), message.id
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for message in catalog:  # the .mo is this .po compiled (pybabel compile), not an older one
        if message.id:
            assert compiled.gettext(str(message.id)) == message.string
