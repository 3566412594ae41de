"""A ready aiogram 3 router for a VPN bot: /stats for users, /server_status for admins.

    from awgd_client import AsyncClient
    from awgd_client.aiogram_router import monitoring_router

    dp.include_router(monitoring_router(AsyncClient(), profiles=my_profiles, is_admin=my_is_admin))

`profiles(user_id)` returns the user's (label, public_key) pairs from the bot's own database
(sync or async); `is_admin(user_id)` says who may see /server_status (sync or async). A user
is only ever shown the keys `profiles` returns for them. Install with the `bot` extra
(`pip install "./client[bot]"`), which pulls aiogram 3.
"""

from __future__ import annotations

import html
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from awgd_client.async_client import AsyncClient
from awgd_client.errors import AmbiguousPeer, AwgdError, DaemonUnavailable, SocketPermissionDenied, UnknownPeer
from awgd_client.formatting import format_ago, format_bytes
from awgd_client.models import PeerTraffic, ServerStatus

log = logging.getLogger(__name__)

REFRESH = "awgd:status:refresh"

DEFAULT_TEXTS: dict[str, str] = {
    "no_profiles": "You have no VPN profiles yet.",
    "stats_header": "<b>Your traffic</b>",
    "profile": (
        "<b>{label}</b>\nThis period: ⬇ {download} · ⬆ {upload} (resets on {resets})\nAll time: {lifetime}\n{presence}"
    ),
    "profile_unused": "<b>{label}</b>\nNo traffic yet.",
    "online": "🟢 online",
    "last_seen": "⚪ last seen {ago}",
    "never_seen": "⚪ not connected yet",
    "unavailable": "Traffic figures are unavailable right now. Please try again later.",
    "not_admin": "Sorry, this command is for administrators.",
    "status_header": "<b>Server status</b>: {health}",
    "healthy": "✅ healthy",
    "unhealthy": "⚠️ needs attention",
    "status_period": "Period {start} to {end}; last sample {ago}",
    "status_error": "Last error: {error}",
    "interface": "{state} <b>{name}</b>: {online}/{peers} online · ⬇ {download} · ⬆ {upload}",
    "interface_up": "🟢",
    "interface_down": "🔴",
    "no_interfaces": "No interfaces.",
    "refresh": "🔄 Refresh",
    "refreshed": "Updated",
    # /stats, for a key with a plan (awgd API v2)
    "plan": "Plan: {used} of {limit} used, {remaining} left{renews}",
    "plan_unlimited": "Plan: {used} used{renews}",
    "plan_renews": " · renews on {day}",
    "plan_expires": "Plan expires on {day}",
    "blocked": "⛔ VPN paused: {reasons}",
    "reason_quota": "the quota is used up",
    "reason_expired": "the plan expired",
    "reason_admin": "by the administrator",
    # messages from awgd_client.aiogram_notifications
    "notice_quota_warning": "⚠️ <b>{label}</b>: {used} of your {limit} used ({percent}%). Renews on {renews}.",
    "notice_quota_exceeded": "⛔ <b>{label}</b>: all of your {limit} is used. The VPN is paused until {renews}.",
    "notice_quota_exceeded_final": "⛔ <b>{label}</b>: all of your {limit} is used. The VPN is paused.",
    "notice_plan_renewed": "✅ <b>{label}</b>: a new window started, the VPN works again ({limit} until {renews}).",
    "notice_plan_expired": "⌛ <b>{label}</b>: your plan expired on {expires}. The VPN is paused.",
}

Texts = Mapping[str, str] | Callable[[str, dict[str, Any]], str | None]
Profiles = Callable[[int], Sequence[tuple[str, str]] | Awaitable[Sequence[tuple[str, str]]]]
IsAdmin = Callable[[int], bool | Awaitable[bool]]


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class BotTexts:
    """Overrides first, then English. A dict maps a name to a template (str.format fields as in
    DEFAULT_TEXTS); a callable gets (key, values) and returns the text, or None for the default."""

    def __init__(self, texts: Texts | None) -> None:
        self._texts = texts

    def __call__(self, key: str, /, **values: Any) -> str:
        if callable(self._texts):
            custom = self._texts(key, values)
            if custom is not None:
                return custom
        elif self._texts is not None and key in self._texts:
            return self._texts[key].format(**values)
        return DEFAULT_TEXTS[key].format(**values)


def monitoring_router(
    client: AsyncClient, profiles: Profiles, is_admin: IsAdmin, *, texts: Texts | None = None
) -> Router:
    text = BotTexts(texts)
    router = Router(name="awgd-monitoring")

    @router.message(Command("stats"))
    async def stats(message: Message) -> None:
        user = message.from_user
        if user is None:
            return
        own = list(await maybe_await(profiles(user.id)))
        if not own:
            await message.answer(text("no_profiles"))
            return
        try:
            parts = [text("stats_header")]
            for label, public_key in own:
                parts.append(await _profile(client, text, label, public_key))
        except AwgdError as exc:
            _log_unavailable("/stats", exc)
            await message.answer(text("unavailable"))
            return
        await message.answer("\n\n".join(parts), parse_mode="HTML")

    @router.message(Command("server_status"))
    async def server_status(message: Message) -> None:
        user = message.from_user
        if user is None or not await maybe_await(is_admin(user.id)):
            await message.answer(text("not_admin"))
            return
        try:
            body = _status(text, await client.server_status())
        except AwgdError as exc:
            _log_unavailable("/server_status", exc)
            await message.answer(text("unavailable"))
            return
        await message.answer(body, parse_mode="HTML", reply_markup=_refresh_button(text))

    @router.callback_query(F.data == REFRESH)
    async def refresh(query: CallbackQuery) -> None:
        if not await maybe_await(is_admin(query.from_user.id)):
            await query.answer(text("not_admin"), show_alert=True)
            return
        try:
            body = _status(text, await client.server_status())
        except AwgdError as exc:
            _log_unavailable("refresh", exc)
            await query.answer(text("unavailable"), show_alert=True)
            return
        if isinstance(query.message, Message):
            await query.message.edit_text(body, parse_mode="HTML", reply_markup=_refresh_button(text))
        await query.answer(text("refreshed"))

    return router


def _log_unavailable(what: str, exc: AwgdError) -> None:
    if isinstance(exc, SocketPermissionDenied):
        log.error("%s: awgd refused the bot: %s", what, exc)
    elif isinstance(exc, DaemonUnavailable):
        log.error("%s: awgd is unavailable (%s)", what, exc)
    else:
        log.error("%s: awgd answered with an error: %s", what, exc)


async def _profile(client: AsyncClient, text: BotTexts, label: str, public_key: str) -> str:
    try:
        figures = [await client.traffic(public_key, fresh=True)]
    except UnknownPeer:
        return text("profile_unused", label=html.escape(label))
    except AmbiguousPeer as exc:  # the same key on several interfaces: one profile, summed
        figures = [await client.traffic(public_key, interface=name, fresh=True) for name in exc.interfaces]
    return _profile_text(text, label, figures)


def _profile_text(text: BotTexts, label: str, figures: list[PeerTraffic]) -> str:
    download = sum(f.period.tx_bytes for f in figures)  # the server's tx is the user's download
    upload = sum(f.period.rx_bytes for f in figures)
    lifetime = sum(f.lifetime.total_bytes for f in figures)
    handshakes = [f.latest_handshake for f in figures if f.latest_handshake is not None]
    if any(f.online for f in figures):
        presence = text("online")
    elif handshakes:
        presence = text("last_seen", ago=format_ago(max(handshakes)))
    else:
        presence = text("never_seen")
    lines = [
        text(
            "profile",
            label=html.escape(label),
            download=format_bytes(download),
            upload=format_bytes(upload),
            resets=day_of(figures[0].period.end),
            lifetime=format_bytes(lifetime),
            presence=presence,
        )
    ]
    for figure in figures:
        lines += _plan_lines(text, figure)
    return "\n".join(lines)


def _plan_lines(text: BotTexts, figure: PeerTraffic) -> list[str]:
    """What the plan allows, what is left and when it renews; whether and why it is paused."""
    lines = []
    plan = figure.plan
    if plan is not None:
        renews = "" if plan.end is None else text("plan_renews", day=day_of(plan.end))
        used = format_bytes(plan.used_bytes)
        if plan.limit_bytes is None:
            lines.append(text("plan_unlimited", used=used, renews=renews))
        else:
            limit, remaining = format_bytes(plan.limit_bytes), format_bytes(plan.remaining_bytes or 0)
            lines.append(text("plan", used=used, limit=limit, remaining=remaining, renews=renews))
        if plan.expires_at is not None and "expired" not in figure.blocked:
            lines.append(text("plan_expires", day=day_of(plan.expires_at)))
    if figure.blocked:
        reasons = ", ".join(text(f"reason_{r}") if f"reason_{r}" in DEFAULT_TEXTS else r for r in figure.blocked)
        lines.append(text("blocked", reasons=reasons))
    return lines


def day_of(moment: datetime) -> str:
    return f"{moment.day} {moment.strftime('%b')}"


def _status(text: BotTexts, status: ServerStatus) -> str:
    lines = [
        text("status_header", health=text("healthy") if status.healthy else text("unhealthy")),
        text(
            "status_period",
            start=day_of(status.period.start),
            end=day_of(status.period.end),
            ago=format_ago(status.sampler.last_success_at),
        ),
    ]
    if status.sampler.last_error:
        lines.append(text("status_error", error=html.escape(status.sampler.last_error)))
    for iface in status.interfaces:
        lines.append(
            text(
                "interface",
                state=text("interface_up") if iface.up else text("interface_down"),
                name=html.escape(iface.name),
                online=iface.peers_online,
                peers=iface.peers,
                download=format_bytes(iface.period.tx_bytes),
                upload=format_bytes(iface.period.rx_bytes),
            )
        )
    if not status.interfaces:
        lines.append(text("no_interfaces"))
    return "\n".join(lines)


def _refresh_button(text: BotTexts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=text("refresh"), callback_data=REFRESH)]])
