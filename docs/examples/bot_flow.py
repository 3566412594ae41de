"""A seller's bot, whole: /buy -> the user's config -> /stats -> /renew (and /lost).

The suite runs this file as it is (tests/test_devices.py) against a real awgd on real
amneziawg-go, with a device brought up from the config the bot sent. Run it yourself with
your token: `AWGD_INTERFACE=awg0 BOT_TOKEN=... python3 bot_flow.py` (needs
`pip install 'awgd-client[bot,config]'`, the bot's user in groups awgd and awgd-admin, and
`[clients] endpoint` in /etc/awgd/awgd.toml).

Payments and the user database are the operator's own: here a dict stands for the database,
and every purchase is free.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import Command
from aiogram.types import Message

from awgd_client import AsyncClient
from awgd_client.aiogram_devices import send_device
from awgd_client.new_device import new_device_async, rekey_device_async
from awgd_client.user_texts import UserTexts, language_for, render_profile

MONTHLY_BYTES = 50 * 10**9  # "50 GB", as it is sold and as /stats shows it
PAID_FOR = timedelta(days=30)


def build_router(awgd: AsyncClient, interface: str, users: dict[int, str], limit_bytes: int = MONTHLY_BYTES) -> Router:
    """`users`: Telegram user id -> their peer's public key (your database)."""
    router = Router()

    @router.message(Command("buy"))
    async def buy(message: Message, bot: Bot) -> None:
        user = message.chat.id
        if user in users:
            await message.answer("You have a config already: /stats, /renew, or /lost for a new one.")
            return
        # The keys are made here; awgd gets the public key and the preshared key only.
        device = await new_device_async(awgd, interface, label=f"tg{user}")
        # A monthly quota from today, paid for 30 days: awgd cuts the peer off when either runs out.
        expires = datetime.now(UTC) + PAID_FOR
        await awgd.plan_set(interface, device.public_key, limit_bytes=limit_bytes, reset="month", expires_at=expires)
        users[user] = device.public_key
        await send_device(bot, user, device, caption="Import this file, scan the code, or paste the key.")

    @router.message(Command("stats"))
    async def stats(message: Message) -> None:
        key = users.get(message.chat.id)
        if key is None:
            await message.answer("No config yet: /buy")
            return
        peer = await awgd.traffic(key, interface, fresh=True)
        # The shipped texts, in the user's language: paused or online, used of the limit, renewal.
        texts = UserTexts(language_for(message.from_user.language_code if message.from_user else None))
        await message.answer(render_profile(texts, "VPN", [peer]) + "\n/renew · /lost", parse_mode="HTML")

    @router.message(Command("renew"))
    async def renew(message: Message) -> None:
        key = users.get(message.chat.id)
        if key is None:
            await message.answer("No config yet: /buy")
            return
        peer = await awgd.traffic(key, interface)
        plan = peer.plan
        # Paid again: 30 more days, and this window's quota given back (traffic.reset takes the
        # window's usage off the books' current period; awgd lifts the quota block at once).
        now = datetime.now(UTC)
        expires = max(now, plan.expires_at or now) + PAID_FOR if plan is not None else now + PAID_FOR
        anchor = plan.anchor if plan is not None else None
        await awgd.plan_set(interface, key, limit_bytes=limit_bytes, reset="month", anchor=anchor, expires_at=expires)
        await awgd.reset(key, interface)
        await message.answer(f"Renewed until {expires:%Y-%m-%d}.")

    @router.message(Command("lost"))
    async def lost(message: Message, bot: Bot) -> None:
        key = users.get(message.chat.id)
        if key is None:
            await message.answer("No config yet: /buy")
            return
        # New keys; the old device stops working, the plan and its usage stay.
        device = await rekey_device_async(awgd, interface, key)
        users[message.chat.id] = device.public_key
        await send_device(bot, message.chat.id, device, caption="Your new config; the old one no longer works.")

    return router


async def main() -> None:
    bot = Bot(os.environ["BOT_TOKEN"])
    dispatcher = Dispatcher()
    async with AsyncClient() as awgd:
        dispatcher.include_router(build_router(awgd, os.environ.get("AWGD_INTERFACE", "awg0"), {}))
        await dispatcher.start_polling(bot)


if __name__ == "__main__":
    asyncio.run(main())
