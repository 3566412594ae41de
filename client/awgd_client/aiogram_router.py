"""A ready aiogram 3 router for a VPN bot: /stats for users, /server_status for admins.

    from awgd_client import AsyncClient
    from awgd_client.aiogram_router import monitoring_router

    dp.include_router(monitoring_router(AsyncClient(), profiles=my_profiles, is_admin=my_is_admin))

`profiles(user_id)` returns the user's (name, public_key) pairs from the bot's own database
(sync or async); `is_admin(user_id)` says who may see /server_status (sync or async). A user
is only ever shown the keys `profiles` returns for them. Every text comes from
awgd_client.user_texts, in the user's Telegram language when it is one shipped (English,
Russian), else `default_language`; `language(user_id)` (sync or async, returning a language
code or None) overrides that choice. Install with the `bot` extra (`pip install "./client[bot]"`),
which pulls aiogram 3 and Babel.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, User

from awgd_client.async_client import AsyncClient
from awgd_client.errors import AmbiguousPeer, AwgdError, DaemonUnavailable, SocketPermissionDenied, UnknownPeer
from awgd_client.models import PeerTraffic
from awgd_client.user_texts import Overrides, Units, UserTexts, display_name, language_for, render_stats, render_status

log = logging.getLogger(__name__)

REFRESH = "awgd:status:refresh"

Profiles = Callable[[int], Sequence[tuple[str, str]] | Awaitable[Sequence[tuple[str, str]]]]
IsAdmin = Callable[[int], bool | Awaitable[bool]]
Language = Callable[[int], str | Awaitable[str | None] | None]


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class TextsFor:
    """Which texts a Telegram user reads: their language (the bot's `language` first, then
    Telegram's language_code), the operator's units and overrides. Shared by the router, the
    admin commands and the notifier, so that all three speak alike."""

    def __init__(
        self,
        *,
        texts: Overrides | None = None,
        language: Language | None = None,
        default_language: str = "en",
        units: Units = "decimal",
    ) -> None:
        self._overrides = texts
        self._language = language
        self._default = language_for(default_language)
        self._units = units
        self._made: dict[str, UserTexts] = {}

    async def __call__(self, user: User | int | None) -> UserTexts:
        chosen: str | None = None
        user_id = user if isinstance(user, int) else (user.id if user is not None else None)
        if self._language is not None and user_id is not None:
            chosen = await maybe_await(self._language(user_id))
        if chosen is None and isinstance(user, User):
            chosen = user.language_code
        return self.of(language_for(chosen, self._default))

    def of(self, language: str) -> UserTexts:
        if language not in self._made:
            self._made[language] = UserTexts(language, units=self._units, overrides=self._overrides)
        return self._made[language]


def monitoring_router(
    client: AsyncClient,
    profiles: Profiles,
    is_admin: IsAdmin,
    *,
    texts: Overrides | None = None,
    language: Language | None = None,
    default_language: str = "en",
    units: Units = "decimal",
) -> Router:
    texts_for = TextsFor(texts=texts, language=language, default_language=default_language, units=units)
    router = Router(name="awgd-monitoring")

    @router.message(Command("stats"))
    async def stats(message: Message) -> None:
        user = message.from_user
        if user is None:
            return
        text = await texts_for(user)
        own = list(await maybe_await(profiles(user.id)))
        shown = []
        try:
            for name, key in own:
                figures = await figures_of(client, key)
                shown.append((display_name(key, name, figures[0] if figures else None), figures))
        except AwgdError as exc:
            log_unavailable("/stats", exc)
            await message.answer(text("unavailable"))
            return
        await message.answer(render_stats(text, shown), parse_mode="HTML")

    @router.message(Command("server_status"))
    async def server_status(message: Message) -> None:
        user = message.from_user
        if user is None:
            return
        text = await texts_for(user)
        if not await maybe_await(is_admin(user.id)):
            await message.answer(text("not_admin"))
            return
        try:
            body = render_status(text, await client.server_status())
        except AwgdError as exc:
            log_unavailable("/server_status", exc)
            await message.answer(text("unavailable"))
            return
        await message.answer(body, parse_mode="HTML", reply_markup=_refresh_button(text))

    @router.callback_query(F.data == REFRESH)
    async def refresh(query: CallbackQuery) -> None:
        text = await texts_for(query.from_user)
        if not await maybe_await(is_admin(query.from_user.id)):
            await query.answer(text("not_admin"), show_alert=True)
            return
        try:
            body = render_status(text, await client.server_status())
        except AwgdError as exc:
            log_unavailable("refresh", exc)
            await query.answer(text("unavailable"), show_alert=True)
            return
        if isinstance(query.message, Message):
            await query.message.edit_text(body, parse_mode="HTML", reply_markup=_refresh_button(text))
        await query.answer(text("refreshed"))

    return router


async def figures_of(client: AsyncClient, public_key: str) -> list[PeerTraffic]:
    """The key's figures now: one per interface it is on; none when awgd never saw it."""
    try:
        return [await client.traffic(public_key, fresh=True)]
    except UnknownPeer:
        return []
    except AmbiguousPeer as exc:  # the same key on several interfaces: one profile, summed
        return [await client.traffic(public_key, interface=name, fresh=True) for name in exc.interfaces]


def log_unavailable(what: str, exc: AwgdError) -> None:
    if isinstance(exc, SocketPermissionDenied):
        log.error("%s: awgd refused the bot: %s", what, exc)
    elif isinstance(exc, DaemonUnavailable):
        log.error("%s: awgd is unavailable (%s)", what, exc)
    else:
        log.error("%s: awgd answered with an error: %s", what, exc)


def _refresh_button(text: UserTexts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=text("refresh"), callback_data=REFRESH)]])
