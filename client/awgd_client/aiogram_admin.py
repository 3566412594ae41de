"""The admin's everyday commands in an aiogram 3 bot, opt-in, for the users the operator names:

    from awgd_client.aiogram_admin import admin_router

    dp.include_router(admin_router(AsyncClient(), is_admin=my_is_admin))

/admin (the list), /user PEER, /history PEER, /pause PEER, /resume PEER,
/plan PEER SIZE [month|week|day|period|none] [YYYY-MM-DD], /topup PEER SIZE. A PEER is
awgd's label of the peer (any case) or the first characters of its key. /pause and /plan ask
first, with Yes and Cancel buttons only the asking admin can press, for
`CONFIRM_SECONDS`. Every answer is awgd_client.user_texts' (the user's figures as the user
sees them in /stats), in the admin's language. The socket the bot uses must let it change
peers: its user in one of awgd's `rpc.admin_groups` (docs/bots.md).
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from awgd_client.aiogram_router import IsAdmin, Language, TextsFor, log_unavailable, maybe_await
from awgd_client.async_client import AsyncClient
from awgd_client.errors import AmbiguousPeer, AwgdError, RemoteError, UnknownPeer
from awgd_client.formatting import parse_size
from awgd_client.models import PeerTraffic
from awgd_client.names import is_public_key
from awgd_client.user_texts import (
    Overrides,
    Units,
    UserTexts,
    display_name,
    render_history,
    render_plan,
    render_profile,
)

log = logging.getLogger(__name__)

# How long a Yes button works: long enough to read the question, short enough that a
# forgotten one cannot be pressed days later against a changed server.
CONFIRM_SECONDS = 300
# Questions kept at once; the oldest goes first (each is a few hundred bytes).
MAX_PENDING = 1000
# The shortest key prefix a PEER may be: 24 bits, unique among any server's peers in practice.
MIN_KEY_PREFIX = 4
WINDOWS = ("month", "week", "day", "period", "none")
# How many days of /history: a month, which fits one chat message.
HISTORY_DAYS = 31
_CALLBACK = "awgd:admin:"


class AdminInputError(Exception):
    """What the admin typed does not say what to do; the message is the answer."""


@dataclass(frozen=True, slots=True)
class PlanRequest:
    limit_bytes: int | None
    reset: str
    expires_on: date | None


def parse_plan(words: list[str]) -> PlanRequest:
    """`SIZE [window] [YYYY-MM-DD]`, in any order after SIZE; raises ValueError."""
    if not words:
        raise ValueError("no size")
    size, rest = words[0], words[1:]
    limit = None if size.lower() in ("unlimited", "none", "-") else parse_size(size)
    reset, expires = "month", None
    for word in rest:
        if word.lower() in WINDOWS:
            reset = word.lower()
        else:
            expires = date.fromisoformat(word)
    return PlanRequest(limit, reset, expires)


# An admin command's body: the message, its arguments, the admin's texts, the admin's id.
Handler = Callable[[Message, CommandObject, UserTexts, int], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    admin: int
    asked_at: float
    run: Callable[[], Awaitable[str]]


def admin_router(
    client: AsyncClient,
    is_admin: IsAdmin,
    *,
    texts: Overrides | None = None,
    language: Language | None = None,
    default_language: str = "en",
    units: Units = "decimal",
) -> Router:
    texts_for = TextsFor(texts=texts, language=language, default_language=default_language, units=units)
    router = Router(name="awgd-admin")
    pending: dict[str, _Pending] = {}

    def admin_command(name: str) -> Callable[[Handler], Handler]:
        """Register `/name` for admins: anyone else gets the refusal; a mistake in what the
        admin typed, or awgd's refusal, is answered in the admin's texts."""

        def register(handle: Handler) -> Handler:
            @router.message(Command(name))
            async def handler(message: Message, command: CommandObject) -> None:
                user = message.from_user
                if user is None:
                    return
                text = await texts_for(user)
                if not await maybe_await(is_admin(user.id)):
                    await message.answer(text("not_admin"))
                    return
                try:
                    await handle(message, command, text, user.id)
                except AdminInputError as exc:
                    await message.answer(str(exc), parse_mode="HTML")
                except RemoteError as exc:
                    await message.answer(text("admin_refused", message=html.escape(exc.message)), parse_mode="HTML")
                except AwgdError as exc:
                    log_unavailable(f"/{name}", exc)
                    await message.answer(text("unavailable"))

            return handle

        return register

    async def peer_of(text: UserTexts, command: CommandObject, usage: str) -> tuple[PeerTraffic, list[str]]:
        words = (command.args or "").split()
        if not words:
            raise AdminInputError(text("admin_usage", usage=html.escape(usage)))
        return await find_peer(client, text, words[0]), words[1:]

    def ask(admin: int, run: Callable[[], Awaitable[str]]) -> str:
        now = time.monotonic()
        for token in [t for t, p in pending.items() if now - p.asked_at > CONFIRM_SECONDS]:
            del pending[token]
        while len(pending) >= MAX_PENDING:
            del pending[next(iter(pending))]
        token = secrets.token_urlsafe(9)
        pending[token] = _Pending(admin, now, run)
        return token

    @admin_command("admin")
    async def help_(message: Message, command: CommandObject, text: UserTexts, admin: int) -> None:
        await message.answer(text("admin_help"), parse_mode="HTML")

    @admin_command("user")
    async def user(message: Message, command: CommandObject, text: UserTexts, admin: int) -> None:
        peer, _ = await peer_of(text, command, "/user PEER")
        await message.answer(_profile(text, peer), parse_mode="HTML")

    @admin_command("history")
    async def history(message: Message, command: CommandObject, text: UserTexts, admin: int) -> None:
        peer, _ = await peer_of(text, command, "/history PEER")
        days = await client.history(peer.public_key, interface=peer.interface, granularity="day", limit=HISTORY_DAYS)
        name = display_name(peer.public_key, None, peer)
        await message.answer(render_history(text, name, days), parse_mode="HTML")

    @admin_command("pause")
    async def pause(message: Message, command: CommandObject, text: UserTexts, admin: int) -> None:
        peer, _ = await peer_of(text, command, "/pause PEER")
        name = display_name(peer.public_key, None, peer)

        async def run() -> str:
            done = await client.block_peer(peer.interface, peer.public_key)
            return f"{text('admin_paused', name=html.escape(name))}\n\n{_profile(text, done)}"

        question = text("admin_confirm_pause", name=html.escape(name))
        await message.answer(question, parse_mode="HTML", reply_markup=_buttons(text, ask(admin, run)))

    @admin_command("resume")
    async def resume(message: Message, command: CommandObject, text: UserTexts, admin: int) -> None:
        peer, _ = await peer_of(text, command, "/resume PEER")
        done = await client.unblock_peer(peer.interface, peer.public_key)
        name = html.escape(display_name(peer.public_key, None, done))
        await message.answer(f"{text('admin_resumed', name=name)}\n\n{_profile(text, done)}", parse_mode="HTML")

    @admin_command("plan")
    async def plan(message: Message, command: CommandObject, text: UserTexts, admin: int) -> None:
        usage = "/plan PEER SIZE [month|week|day|period|none] [YYYY-MM-DD]"
        peer, words = await peer_of(text, command, usage)
        try:
            wanted = parse_plan(words)
        except ValueError:
            raise AdminInputError(text("admin_usage", usage=html.escape(usage))) from None
        expires = None if wanted.expires_on is None else await _midnight(client, wanted.expires_on)
        name = display_name(peer.public_key, None, peer)

        async def run() -> str:
            done = await client.plan_set(
                peer.interface, peer.public_key, limit_bytes=wanted.limit_bytes, reset=wanted.reset, expires_at=expires
            )
            return f"{text('admin_plan_set', name=html.escape(name))}\n\n{_profile(text, done)}"

        shown = render_plan(text, wanted.limit_bytes, wanted.reset, expires)
        question = text("admin_confirm_plan", name=html.escape(name), plan=shown)
        await message.answer(question, parse_mode="HTML", reply_markup=_buttons(text, ask(admin, run)))

    @admin_command("topup")
    async def topup(message: Message, command: CommandObject, text: UserTexts, admin: int) -> None:
        usage = "/topup PEER SIZE"
        peer, words = await peer_of(text, command, usage)
        try:
            (amount,) = [parse_size(word) for word in words]
        except ValueError:
            raise AdminInputError(text("admin_usage", usage=html.escape(usage))) from None
        name = html.escape(display_name(peer.public_key, None, peer))
        current = peer.plan
        if current is None or current.limit_bytes is None:
            raise AdminInputError(text("admin_no_plan", name=name))
        # The same plan with a larger limit: a new limit lifts "quota" (or a throttle) at once
        # when it is above the usage, and starts the warnings over (API: plan.set).
        more = current.plan_set_args() | {"limit_bytes": current.limit_bytes + amount}
        done = await client.plan_set(peer.interface, peer.public_key, **more)
        body = f"{text('admin_topped_up', name=name, amount=text.size(amount))}\n\n{_profile(text, done)}"
        await message.answer(body, parse_mode="HTML")

    @router.callback_query(F.data.startswith(_CALLBACK))
    async def confirmed(query: CallbackQuery) -> None:
        text = await texts_for(query.from_user)
        if not await maybe_await(is_admin(query.from_user.id)):
            await query.answer(text("not_admin"), show_alert=True)
            return
        _, _, rest = (query.data or "").partition(_CALLBACK)
        choice, _, token = rest.partition(":")
        asked = pending.get(token)
        if asked is None or asked.admin != query.from_user.id or time.monotonic() - asked.asked_at > CONFIRM_SECONDS:
            await query.answer(text("admin_stale"), show_alert=True)
            return
        del pending[token]  # a second press finds nothing: the change is made once
        if choice != "yes":
            body = text("admin_cancelled")
        else:
            try:
                body = await asked.run()
            except RemoteError as exc:
                body = text("admin_refused", message=html.escape(exc.message))
            except AwgdError as exc:
                log_unavailable("a confirmed admin command", exc)
                body = text("unavailable")
        if isinstance(query.message, Message):
            await query.message.edit_text(body, parse_mode="HTML")
        await query.answer()

    return router


async def find_peer(client: AsyncClient, text: UserTexts, query: str) -> PeerTraffic:
    """A whole key; else the one peer whose label is `query` (any case); else the one whose
    key starts with it."""
    shown = html.escape(query)
    if is_public_key(query):
        try:
            return await client.traffic(query)
        except UnknownPeer:
            raise AdminInputError(text("admin_no_peer", query=shown)) from None
        except AmbiguousPeer as exc:
            names = ", ".join(f"{query[:8]}… ({name})" for name in exc.interfaces)
            raise AdminInputError(text("admin_many_peers", query=shown, names=html.escape(names))) from None
    peers = (await client.traffic_list(limit=10000, sort="public_key")).peers
    wanted = query.casefold()
    found = [p for p in peers if p.label is not None and p.label.casefold() == wanted]
    if not found and len(query) >= MIN_KEY_PREFIX:
        found = [p for p in peers if p.public_key.startswith(query)]
    if not found:
        raise AdminInputError(text("admin_no_peer", query=shown))
    if len(found) > 1:
        names = ", ".join(f"{display_name(p.public_key, None, p)} ({p.public_key[:8]}…)" for p in found[:10])
        raise AdminInputError(text("admin_many_peers", query=shown, names=html.escape(names)))
    return found[0]


async def _midnight(client: AsyncClient, day: date) -> datetime:
    """00:00 of `day` in awgd's zone, where plan windows start too."""
    zone_name = (await client.server_status()).timezone
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.combine(day, datetime.min.time()).astimezone()
    return datetime.combine(day, datetime.min.time(), tzinfo=zone)


def _profile(text: UserTexts, peer: PeerTraffic) -> str:
    return render_profile(text, display_name(peer.public_key, None, peer), [peer])


def _buttons(text: UserTexts, token: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=text("admin_yes"), callback_data=f"{_CALLBACK}yes:{token}"),
                InlineKeyboardButton(text=text("admin_no"), callback_data=f"{_CALLBACK}no:{token}"),
            ]
        ]
    )
