"""What a VPN user and a bot's admin read: /stats, the plan notices, the admin's answers, in
English or Russian. One renderer, framework-free: the aiogram router and notifier use it, and
a bot on any other framework can too.

    from awgd_client.user_texts import UserTexts, render_profile

    texts = UserTexts("ru", units="decimal")
    html_text = render_profile(texts, "Phone", [await client.traffic(key)])

Every text is HTML (Telegram's `parse_mode="HTML"`), names escaped. The rules that keep a
message from contradicting itself live here, once:
- one renewal instant: with a plan, its window's end; without, the billing period's;
- the state that matters first: paused beats removed beats online;
- the real percentage of the limit, rounded down (a user at 63 % reads 63 %, not the
  threshold that triggered the warning);
- one name per device (`display_name`): the bot's own, else awgd's label, else the key's
  first characters.

Translations are gettext catalogs (`locale/<lang>/LC_MESSAGES/awgd_client.po`, compiled
with Babel: `pybabel compile -D awgd_client -d client/awgd_client/locale`); dates, numbers
and percents are formatted per language by Babel, with the CLDR's data; sizes in decimal
units (GB, what a plan is sold in) or binary (GiB), as the operator chooses. Babel is the
`bot` extra's (Debian: python3-babel).
"""

from __future__ import annotations

import gettext
import html
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

try:
    from babel.dates import format_date, format_timedelta
    from babel.numbers import format_decimal, format_percent
except ImportError as exc:  # pragma: no cover - the bot extra installs it
    raise ImportError(f"awgd_client.user_texts needs Babel (the texts extra; python3-babel): {exc}") from exc

from awgd_client.formatting import JUST_NOW_SECONDS
from awgd_client.models import Event, History, PeerTraffic, Plan, ServerStatus

DOMAIN: Final = "awgd_client"
LOCALE_DIR: Final = Path(__file__).parent / "locale"
LANGUAGES: Final = ("en", "ru")  # English is the catalog's source: its templates are the msgids
Units = Literal["decimal", "binary"]
# A key is shown by its first characters when neither the bot nor awgd has a name for it:
# enough to tell a user's devices apart, short enough for a chat line.
SHORT_KEY_CHARS: Final = 8


def N_(template: str) -> str:
    """Marks a template for `pybabel extract -k N_`; translated when rendered."""
    return template


# Every text, by key. A bot overrides any of them by key (`texts=`), in its own words.
TEMPLATES: Final[Mapping[str, str]] = {
    # /stats
    "no_profiles": N_("You have no VPN profiles yet."),
    "stats_header": N_("<b>Your traffic</b>"),
    "profile_name": N_("<b>{name}</b>"),
    "state_paused": N_("⛔ VPN paused: {reasons}"),
    "state_throttled": N_("🐢 Slowed to {speed}: the traffic limit is used up"),
    "state_removed": N_("🚫 This profile is no longer on the server"),
    "state_replaced": N_("🔁 Replaced by a new config"),
    "state_stalled": N_(
        "⚠️ Connects, but no traffic passes: the app's settings do not match the server's. "
        "Delete this profile in the app and import your config again."
    ),
    "state_online": N_("🟢 Online"),
    "state_last_seen": N_("⚪ Last connected {ago}"),
    "state_never": N_("⚪ Not connected yet"),
    "reason_quota": N_("the traffic limit is used up"),
    "reason_expired": N_("the plan expired"),
    "reason_admin": N_("by the administrator"),
    # A fleet plan's (one quota over several servers): the user's traffic on all of them.
    "reason_fleet_quota": N_("the traffic limit of your subscription is used up on all servers"),
    "reason_fleet_expired": N_("your subscription expired"),
    "usage_period": N_("This period: ⬇ {download} · ⬆ {upload}"),
    "usage_plan": N_("Used {used} of {limit} ({percent}), {remaining} left"),
    "usage_plan_unlimited": N_("Used {used}, no limit"),
    "renews_on": N_("Renews on {day}"),
    "resets_on": N_("Resets on {day}"),
    "valid_until": N_("Valid until {day}"),
    "expired_on": N_("Expired on {day}"),
    "lifetime": N_("All time: {total}"),
    "speed_limit": N_("Speed: up to ⬇ {down} · ⬆ {up}"),
    "speed_any": N_("unlimited"),
    "unavailable": N_("Traffic figures are unavailable right now. Please try again later."),
    # the plan notices
    "notice_quota_warning": N_("⚠️ <b>{name}</b>: {used} of {limit} used ({percent}). Renews on {renews}."),
    "notice_quota_warning_final": N_("⚠️ <b>{name}</b>: {used} of {limit} used ({percent})."),
    "notice_quota_exceeded": N_("⛔ <b>{name}</b>: all {limit} are used. The VPN is paused until {renews}."),
    "notice_quota_exceeded_final": N_("⛔ <b>{name}</b>: all {limit} are used. The VPN is paused."),
    # A fleet plan's (one quota over several servers): the subscription, not one device.
    "notice_fleet_warning": N_("⚠️ Your subscription: {used} of {limit} used on all servers ({percent})."),
    "notice_fleet_exceeded": N_("⛔ Your subscription: all {limit} are used on all servers. The VPN is paused."),
    "notice_quota_throttled": N_(
        "🐢 <b>{name}</b>: all {limit} are used. The speed is limited to {speed} until {renews}."
    ),
    "notice_quota_throttled_final": N_("🐢 <b>{name}</b>: all {limit} are used. The speed is limited to {speed}."),
    "notice_plan_renewed_full_speed": N_(
        "✅ <b>{name}</b>: a new period started, full speed again ({limit} until {renews})."
    ),
    "notice_plan_renewed": N_("✅ <b>{name}</b>: a new period started, the VPN works again ({limit} until {renews})."),
    "notice_plan_renewed_unlimited": N_("✅ <b>{name}</b>: a new period started, the VPN works again."),
    "notice_plan_expired": N_("⌛ <b>{name}</b>: your plan expired on {day}. The VPN is paused."),
    "notice_peer_stalled": N_(
        "⚠️ <b>{name}</b>: your app connects, but no traffic passes. Its settings do not match the "
        "server's: delete this profile in the app and import your config again."
    ),
    "notice_peer_recovered": N_("✅ <b>{name}</b>: the connection works again."),
    # /server_status, for admins
    "not_admin": N_("Sorry, this command is for administrators."),
    "status_header": N_("<b>Server status</b>: {health}"),
    "healthy": N_("✅ healthy"),
    "unhealthy": N_("⚠️ needs attention"),
    "status_period": N_("Period {start} to {end}; last sample {ago}"),
    "status_error": N_("Last error: {error}"),
    "interface": N_("{state} <b>{name}</b>: {online}/{peers} online · ⬇ {download} · ⬆ {upload}"),
    "interface_stalled": N_("⚠️ Connected without traffic: {count}"),
    "status_legend": N_("⬇ what users downloaded, ⬆ what they uploaded, this period"),
    "no_interfaces": N_("No interfaces."),
    "refresh": N_("🔄 Refresh"),
    "refreshed": N_("Updated"),
    # the admin's commands
    "admin_help": N_(
        "<b>Admin commands</b> (PEER: a label or a key's first characters)\n"
        "/user PEER: the user's figures\n"
        "/history PEER: usage by day\n"
        "/pause PEER, /resume PEER\n"
        "/plan PEER SIZE [month|week|day|period|none] [YYYY-MM-DD expiry]\n"
        "/topup PEER SIZE: add to the current plan's limit\n"
        "SIZE as people write it: 10GB, 500MB, 10GiB, unlimited"
    ),
    "admin_usage": N_("Usage: {usage}"),
    "admin_no_peer": N_("No peer matches {query}."),
    "admin_many_peers": N_("{query} matches several peers: {names}. Give more of the key."),
    "admin_confirm_pause": N_("Pause <b>{name}</b>? The VPN stops for this user until /resume."),
    "admin_confirm_plan": N_("Set <b>{name}</b>'s plan to {plan}? It replaces the current one."),
    "admin_yes": N_("✅ Yes"),
    "admin_no": N_("✖️ Cancel"),
    "admin_cancelled": N_("Cancelled, nothing changed."),
    "admin_stale": N_("This question has expired: send the command again."),
    "admin_paused": N_("⏸ <b>{name}</b> is paused."),
    "admin_resumed": N_("▶️ <b>{name}</b> is resumed."),
    "admin_plan_set": N_("📋 <b>{name}</b>: the plan is set."),
    "admin_topped_up": N_("➕ <b>{name}</b>: {amount} added to the limit."),  # noqa: RUF001
    "admin_no_plan": N_("<b>{name}</b> has no plan with a limit to top up: set one with /plan."),
    "admin_refused": N_("awgd refused: {message}"),
    "plan_limit_month": N_("{limit} a month"),
    "plan_limit_week": N_("{limit} a week"),
    "plan_limit_day": N_("{limit} a day"),
    "plan_limit_period": N_("{limit} a billing period"),
    "plan_limit_none": N_("{limit} once, never renewed"),
    "plan_unlimited": N_("no limit"),
    "plan_expiring": N_("{plan}, valid until {day}"),
    "history_header": N_("<b>{name}</b>: usage by day"),
    "history_day": N_("{day}: ⬇ {download} · ⬆ {upload}"),
    "history_empty": N_("No usage recorded yet."),
}

# Units, translated as the rest (Russian writes ГБ, ГиБ).
_DECIMAL_UNITS: Final = (N_("B"), N_("kB"), N_("MB"), N_("GB"), N_("TB"), N_("PB"))
_BINARY_UNITS: Final = (N_("B"), N_("KiB"), N_("MiB"), N_("GiB"), N_("TiB"), N_("PiB"))

_JUST_NOW: Final = N_("just now")
_KBIT: Final = N_("kbit/s")
_MBIT: Final = N_("Mbit/s")

Overrides = Mapping[str, str] | Callable[[str, dict[str, Any]], str | None]


@lru_cache(maxsize=len(LANGUAGES))
def _catalog(language: str) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=language == "en")


def language_for(code: str | None, default: str = "en") -> str:
    """The shipped language for a Telegram `language_code` ("ru", "ru-RU"), else `default`."""
    base = (code or "").split("-")[0].split("_")[0].lower()
    return base if base in LANGUAGES else default


class UserTexts:
    """The texts in one language, with a bot's overrides first (a dict of key to template,
    or a callable `(key, values) -> text or None`; an override is used as given, untranslated).
    """

    def __init__(self, language: str = "en", *, units: Units = "decimal", overrides: Overrides | None = None) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}")
        if units not in ("decimal", "binary"):
            raise ValueError(f"units must be decimal or binary, not {units!r}")
        self.language = language
        self.units = units
        self._overrides = overrides
        self._gettext = _catalog(language).gettext

    def __call__(self, key: str, /, **values: Any) -> str:
        if callable(self._overrides):
            custom = self._overrides(key, values)
            if custom is not None:
                return custom
        elif self._overrides is not None and key in self._overrides:
            return self._overrides[key].format(**values)
        return self._gettext(TEMPLATES[key]).format(**values)

    def size(self, count: int) -> str:
        """1500000000 is "1.5 GB" (decimal) or "1.4 GiB" (binary); "1,5 ГБ" in Russian."""
        base, names = (1000, _DECIMAL_UNITS) if self.units == "decimal" else (1024, _BINARY_UNITS)
        value, index = float(max(0, count)), 0
        while value >= base and index < len(names) - 1:
            value /= base
            index += 1
        pattern = "#,##0" if index == 0 or value >= 100 else "#,##0.#"
        return f"{format_decimal(value, pattern, locale=self.language)}\u00a0{self._gettext(names[index])}"

    def speed(self, kbit: int | None) -> str:
        """2000 is "2 Mbit/s", 500 "500 kbit/s" (in the user's language); None "unlimited"."""
        if kbit is None:
            return self("speed_any")
        if kbit < 1000:
            return f"{format_decimal(kbit, '#,##0', locale=self.language)}\u00a0{self._gettext(_KBIT)}"
        value = format_decimal(kbit / 1000, "#,##0.#", locale=self.language)
        return f"{value}\u00a0{self._gettext(_MBIT)}"

    def percent(self, used: int, limit: int) -> str:
        """The share of `limit` used, rounded down: 63 % until 64 % is reached."""
        share = 1.0 if limit <= 0 else (100 * max(0, used) // limit) / 100
        return format_percent(share, locale=self.language)

    def day(self, moment: datetime) -> str:
        """The local day of `moment` in its own offset (awgd's zone): "2 January", "2 января"."""
        return format_date(moment.date(), "d MMMM", locale=self.language)

    def ago(self, moment: datetime, now: datetime | None = None) -> str:
        delta = moment - (now or datetime.now(UTC))
        if -JUST_NOW_SECONDS < delta.total_seconds() <= 0:
            return self._gettext(_JUST_NOW)
        return format_timedelta(delta, add_direction=True, locale=self.language)


def display_name(public_key: str, bot_name: str | None = None, peer: PeerTraffic | None = None) -> str:
    """The one name a device goes by in every message: the bot's own, else awgd's label,
    else the key's first characters."""
    if bot_name:
        return bot_name
    if peer is not None and peer.label:
        return peer.label
    return f"{public_key[:SHORT_KEY_CHARS]}…"


# ---- /stats -------------------------------------------------------------------------------


def render_stats(
    texts: UserTexts, profiles: Sequence[tuple[str, Sequence[PeerTraffic]]], now: datetime | None = None
) -> str:
    """The user's /stats: each (name, figures) profile; figures empty for a key awgd has not
    seen (never connected), several for a key on several interfaces (summed)."""
    if not profiles:
        return texts("no_profiles")
    return "\n\n".join([texts("stats_header"), *(render_profile(texts, n, f, now) for n, f in profiles)])


def render_profile(texts: UserTexts, name: str, figures: Sequence[PeerTraffic], now: datetime | None = None) -> str:
    lines = [texts("profile_name", name=html.escape(name)), _state(texts, figures, now)]
    plan = next((f.plan for f in figures if f.plan is not None), None)
    if plan is not None:
        lines += _plan_lines(texts, plan, blocked=_reasons(figures))
    elif figures:
        download = sum(f.period.tx_bytes for f in figures)  # the server's tx is the user's download
        upload = sum(f.period.rx_bytes for f in figures)
        lines.append(texts("usage_period", download=texts.size(download), upload=texts.size(upload)))
        lines.append(texts("resets_on", day=texts.day(figures[0].period.end)))
    limit = next((f.rate_limit for f in figures if f.rate_limit is not None), None)
    if limit is not None:
        lines.append(texts("speed_limit", down=texts.speed(limit.down_kbit), up=texts.speed(limit.up_kbit)))
    if figures:
        lines.append(texts("lifetime", total=texts.size(sum(f.lifetime.total_bytes for f in figures))))
    return "\n".join(lines)


def _reasons(figures: Sequence[PeerTraffic]) -> tuple[str, ...]:
    return tuple(sorted({reason for f in figures for reason in f.blocked}))


def _state(texts: UserTexts, figures: Sequence[PeerTraffic], now: datetime | None) -> str:  # noqa: PLR0911
    reasons = _reasons(figures)
    if reasons:  # a paused VPN is what the user needs to know, whether the app is running or not
        return texts("state_paused", reasons=", ".join(_reason(texts, r) for r in reasons))
    throttled = next((f.plan for f in figures if f.plan is not None and f.plan.throttling), None)
    if throttled is not None:  # slowed, not cut off: the app works, slowly
        return texts("state_throttled", speed=texts.speed(throttled.throttle_kbit))
    if figures and not any(f.present for f in figures):
        if any(f.replaced_by for f in figures):
            return texts("state_replaced")
        return texts("state_removed")
    if any(f.stalled and f.present for f in figures) and not any(f.online for f in figures):
        return texts("state_stalled")
    if any(f.online for f in figures):
        return texts("state_online")
    handshakes = [f.latest_handshake for f in figures if f.latest_handshake is not None]
    if handshakes:
        return texts("state_last_seen", ago=texts.ago(max(handshakes), now))
    return texts("state_never")


def _reason(texts: UserTexts, reason: str) -> str:
    key = f"reason_{reason}"
    return texts(key) if key in TEMPLATES else html.escape(reason)


def _plan_lines(texts: UserTexts, plan: Plan, blocked: tuple[str, ...]) -> list[str]:
    if plan.limit_bytes is None:
        lines = [texts("usage_plan_unlimited", used=texts.size(plan.used_bytes))]
    else:
        lines = [
            texts(
                "usage_plan",
                used=texts.size(plan.used_bytes),
                limit=texts.size(plan.limit_bytes),
                percent=texts.percent(plan.used_bytes, plan.limit_bytes),
                remaining=texts.size(plan.remaining_bytes or 0),
            )
        ]
    if "expired" in blocked:
        if plan.expires_at is not None:
            lines.append(texts("expired_on", day=texts.day(plan.expires_at)))
        return lines  # an expired plan does not renew: only a new plan gives access back
    if plan.end is not None and (plan.expires_at is None or plan.end < plan.expires_at):
        lines.append(texts("renews_on", day=texts.day(plan.end)))
    if plan.expires_at is not None:
        lines.append(texts("valid_until", day=texts.day(plan.expires_at)))
    return lines


# ---- the plan notices ---------------------------------------------------------------------

FLEET_EVENTS: Final = ("quota.warning", "quota.exceeded")
PLAN_EVENTS: Final = ("quota.warning", "quota.exceeded", "plan.renewed", "plan.expired")
NOTIFIED: Final = (*PLAN_EVENTS, "peer.stalled", "peer.recovered")


def render_fleet_notice(texts: UserTexts, kind: str, used: int, limit: int | None) -> str | None:
    """The owner's message for a fleet plan's quota event (awgd_fleet's FleetEvent: its type,
    used and limit bytes), or None when it is not news (a warning at the limit itself)."""
    if limit is None or kind not in FLEET_EVENTS:
        return None
    fields = {"used": texts.size(used), "limit": texts.size(limit), "percent": texts.percent(used, limit)}
    if kind == "quota.warning":
        return None if used >= limit else texts("notice_fleet_warning", **fields)
    return texts("notice_fleet_exceeded", **fields)


def render_notice(  # noqa: PLR0911 - one return per kind of message
    texts: UserTexts, event: Event, name: str, peer: PeerTraffic | None
) -> str | None:
    """The owner's message for a plan event, or None for an event that is not news to them
    (a window starting that gives nothing back, a warning at the limit itself). `peer` is the key's figures now, or None
    when awgd could not say (the message then says what the event itself carries)."""
    if event.type not in NOTIFIED or (event.type == "plan.renewed" and not event.data.get("quota_lifted")):
        return None
    if event.type in ("peer.stalled", "peer.recovered"):
        return texts("notice_" + event.type.replace(".", "_"), name=html.escape(name))
    data, plan = event.data, peer.plan if peer is not None else None
    throttling_plan = plan is not None and plan.over_quota == "throttle"
    fields: dict[str, Any] = {"name": html.escape(name)}
    limit = _int(data.get("limit_bytes"))
    if limit is None and plan is not None:
        limit = plan.limit_bytes
    if limit is not None:
        fields["limit"] = texts.size(limit)
    renews = plan.end if plan is not None else None
    if renews is not None:
        fields["renews"] = texts.day(renews)
    if event.type == "plan.expired":
        expires = _moment(data.get("expires_at")) or event.at
        return texts("notice_plan_expired", name=fields["name"], day=texts.day(expires))
    if event.type == "plan.renewed":
        end = _moment(data.get("end"))
        if end is None or limit is None:
            return texts("notice_plan_renewed_unlimited", name=fields["name"])
        key = "notice_plan_renewed_full_speed" if throttling_plan else "notice_plan_renewed"
        return texts(key, **fields | {"renews": texts.day(end)})
    if limit is None:  # a quota event always carries its limit; an older daemon's may not
        return None
    if event.type == "quota.warning":
        used = _int(data.get("used_bytes")) or 0
        if used >= limit:
            return None  # the same sample went over the limit: the cut-off's message says it
        fields |= {"used": texts.size(used), "percent": texts.percent(used, limit)}
        return texts("notice_quota_warning" if "renews" in fields else "notice_quota_warning_final", **fields)
    if throttling_plan and plan is not None:
        fields["speed"] = texts.speed(plan.throttle_kbit)
        return texts("notice_quota_throttled" if "renews" in fields else "notice_quota_throttled_final", **fields)
    return texts("notice_quota_exceeded" if "renews" in fields else "notice_quota_exceeded_final", **fields)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# ---- for admins ---------------------------------------------------------------------------


def render_status(texts: UserTexts, status: ServerStatus, now: datetime | None = None) -> str:
    last = status.sampler.last_success_at
    lines = [
        texts("status_header", health=texts("healthy") if status.healthy else texts("unhealthy")),
        texts(
            "status_period",
            start=texts.day(status.period.start),
            end=texts.day(status.period.end),
            ago=texts.ago(last, now) if last is not None else "-",
        ),
    ]
    if status.sampler.last_error:
        lines.append(texts("status_error", error=html.escape(status.sampler.last_error)))
    for iface in status.interfaces:
        lines.append(
            texts(
                "interface",
                state="🟢" if iface.up else "🔴",
                name=html.escape(iface.name),
                online=iface.peers_online,
                peers=iface.peers,
                download=texts.size(iface.period.tx_bytes),
                upload=texts.size(iface.period.rx_bytes),
            )
        )
        if iface.peers_stalled:
            lines.append(texts("interface_stalled", count=iface.peers_stalled))
    lines.append(texts("status_legend") if status.interfaces else texts("no_interfaces"))
    return "\n".join(lines)


def render_plan(texts: UserTexts, limit_bytes: int | None, reset: str, expires_at: datetime | None) -> str:
    """A plan as an admin is asked to confirm it: "10 GB a month, valid until 1 March"."""
    if limit_bytes is None:
        plan = texts("plan_unlimited")
    else:
        plan = texts(f"plan_limit_{reset}", limit=texts.size(limit_bytes))
    return plan if expires_at is None else texts("plan_expiring", plan=plan, day=texts.day(expires_at))


def render_history(texts: UserTexts, name: str, history: History) -> str:
    lines = [texts("history_header", name=html.escape(name))]
    used = [b for b in history.buckets if b.total_bytes]
    lines += [
        texts(
            "history_day",
            day=texts.day(b.start),
            download=texts.size(b.tx_bytes),
            upload=texts.size(b.rx_bytes),
        )
        for b in used
    ]
    if not used:
        lines.append(texts("history_empty"))
    return "\n".join(lines)
