"""Hand a user their new device in Telegram: the config as a file, its QR code as a photo and
the AmneziaVPN app's key as text. For the operator's own buy or issue command:

    from awgd_client.aiogram_devices import send_device
    from awgd_client.new_device import new_device_async

    @router.message(Command("buy"))
    async def buy(message: Message, bot: Bot) -> None:
        ...  # take the payment
        device = await new_device_async(awgd, "awg0", label=f"tg{message.from_user.id}")
        await awgd.plan_set("awg0", device.public_key, limit_bytes=50 * 1024**3, reset="month")
        await send_device(bot, message.chat.id, device)

Needs aiogram 3 (the `bot` extra) and the `config` extra. The bot keeps nothing secret: the
private key is in what it sends, and in the NewDevice object until it is dropped.
"""

from __future__ import annotations

import html
import re

from aiogram import Bot
from aiogram.types import BufferedInputFile

from awgd_client.new_device import NewDevice

# Telegram's limit on a message's text: a longer key goes as a file.
MAX_MESSAGE_CHARS = 4096
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_-]+")
# The apps name an imported tunnel after its file: short, and plain ASCII (WireGuard's rule for
# interface names is 15 characters).
MAX_NAME_CHARS = 15


def file_name(label: str | None, fallback: str = "vpn") -> str:
    """A file name the apps accept as a tunnel's name, from the peer's label."""
    name = _UNSAFE_IN_NAME.sub("-", label or "").strip("-")[:MAX_NAME_CHARS].strip("-")
    return name or fallback


async def send_device(bot: Bot, chat_id: int, device: NewDevice, *, caption: str | None = None) -> None:
    """The config file (NAME.conf), its QR code, and the `vpn://` key, in three messages."""
    name = file_name(device.peer.label)
    config = device.config_text.encode("utf-8")
    await bot.send_document(chat_id, BufferedInputFile(config, filename=f"{name}.conf"), caption=caption)
    await bot.send_photo(chat_id, BufferedInputFile(device.qr_png(), filename=f"{name}.png"))
    link = device.link
    if len(link) + len("<code></code>") <= MAX_MESSAGE_CHARS:
        await bot.send_message(chat_id, f"<code>{html.escape(link)}</code>", parse_mode="HTML")
    else:
        await bot.send_document(chat_id, BufferedInputFile(link.encode("ascii"), filename=f"{name}.vpn"))
