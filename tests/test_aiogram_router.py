"""The aiogram router with real aiogram, polling a local stand-in for the Telegram Bot API,
over a real awgd (scripted tool counters underneath)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from conftest import ScriptedTool, dump, key

aiogram = pytest.importorskip("aiogram", reason="the bot extra (aiogram 3) is not installed")

from aiogram import Bot, Dispatcher, Router  # noqa: E402
from aiogram.client.session.aiohttp import AiohttpSession  # noqa: E402
from aiogram.client.telegram import TelegramAPIServer  # noqa: E402
from aiohttp import web  # noqa: E402

from awgd_client import AsyncClient  # noqa: E402
from awgd_client.aiogram_router import REFRESH, monitoring_router  # noqa: E402
from awgd_client.user_texts import UserTexts  # noqa: E402

size = UserTexts("en").size

PHONE, LAPTOP, OTHER = key("P"), key("L"), key("O")
ALICE, BOB, STRANGER, ADMIN = 1001, 1002, 1003, 1
PROFILES = {ALICE: [("Phone", PHONE), ("Laptop", LAPTOP)], BOB: [("Bob's PC", OTHER)]}
BOT_USER = {"id": 42, "is_bot": True, "first_name": "Test bot", "username": "test_bot"}


class FakeTelegram:
    """The Bot API methods the router needs; records every call, feeds queued updates."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.updates: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.next_message_id = 500
        self.next_update_id = 1

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        form = dict(await request.post())
        # Files (sendDocument, sendPhoto) as their bytes, everything else as text.
        params: dict[str, Any] = {k: v.file.read() if isinstance(v, web.FileField) else str(v) for k, v in form.items()}
        result: Any = True
        if method == "getMe":
            result = BOT_USER
        elif method == "getUpdates":
            offset = int(params.get("offset", 0))
            wait = float(params.get("timeout", 0))  # long polling, as the real API does it
            async with self.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.changed.wait_for(lambda: any(u["update_id"] >= offset for u in self.updates)), wait
                    )
            result = [u for u in self.updates if u["update_id"] >= offset]
        elif method in ("sendMessage", "editMessageText"):
            message_id = int(params.get("message_id", 0)) or self.next_message_id
            self.next_message_id += 1
            result = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": BOT_USER,
                "text": params["text"],
            }
        elif method in ("sendDocument", "sendPhoto"):
            result = {
                "message_id": self.next_message_id,
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": BOT_USER,
            }
            self.next_message_id += 1
        async with self.changed:
            if method != "getUpdates":
                self.calls.append((method, params))
            self.changed.notify_all()
        return web.json_response({"ok": True, "result": result})

    async def push(self, update: dict[str, Any]) -> None:
        async with self.changed:
            update["update_id"] = self.next_update_id
            self.next_update_id += 1
            self.updates.append(update)
            self.changed.notify_all()

    async def next_call(self, *methods: str) -> tuple[str, dict[str, Any]]:
        """Wait for the next recorded call to one of `methods` (an event, not a sleep)."""
        start = len(self.calls)
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: any(m in methods for m, _ in self.calls[start:])), 30)
        return next(c for c in self.calls[start:] if c[0] in methods)


def command(user: int, text: str, language: str | None = None) -> dict[str, Any]:
    sender: dict[str, Any] = {"id": user, "is_bot": False, "first_name": f"user{user}"}
    if language is not None:
        sender["language_code"] = language
    return {
        "message": {
            "message_id": int(time.time() * 1000) % 10**6,
            "date": int(time.time()),
            "chat": {"id": user, "type": "private"},
            "from": sender,
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split(maxsplit=1)[0])}],
        }
    }


def button(user: int, message_id: int, data: str = REFRESH) -> dict[str, Any]:
    """A press of a button of message `message_id`, whose callback data is `data`."""
    return {
        "callback_query": {
            "id": f"cb{time.monotonic_ns()}",
            "chat_instance": "1",
            "data": data,
            "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": user, "type": "private"},
                "from": BOT_USER,
                "text": "status",
            },
        }
    }


async def profiles(user_id: int) -> list[tuple[str, str]]:  # async, as a bot's database call would be
    return PROFILES.get(user_id, [])


def is_admin(user_id: int) -> bool:  # sync is accepted too
    return user_id == ADMIN


@contextlib.asynccontextmanager
async def telegram() -> AsyncIterator[tuple[FakeTelegram, str]]:
    """The stand-in Bot API on a local port: the stand-in and its base URL."""
    fake = FakeTelegram()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def run_bot(
    socket_path: str,
    scenario: Callable[[FakeTelegram], Awaitable[None]],
    router: Callable[[AsyncClient], Router] = lambda client: monitoring_router(client, profiles, is_admin),
) -> None:
    """Real aiogram polling the stand-in Bot API with `router` (the shipped monitoring router
    by default) over awgd at `socket_path`, while `scenario` drives it."""

    async def main() -> None:
        async with telegram() as (fake, api):
            bot = Bot("42:TEST", session=AiohttpSession(api=TelegramAPIServer.from_base(api)))
            dispatcher = Dispatcher()
            client = AsyncClient(socket_path)
            dispatcher.include_router(router(client))
            polling = asyncio.ensure_future(dispatcher.start_polling(bot, handle_signals=False, polling_timeout=1))
            try:
                await scenario(fake)
            finally:
                await dispatcher.stop_polling()
                await asyncio.wait_for(polling, 30)
                await client.aclose()
                await bot.session.close()

    asyncio.run(main())


@pytest.fixture
def awgd(daemons, scripted_tool: ScriptedTool):  # type: ignore[no-untyped-def]
    scripted_tool.set(dump({"awg0": {PHONE: (0, 0), LAPTOP: (0, 0), OTHER: (0, 0)}}))
    daemon = daemons(scripted_tool.path).start()
    scripted_tool.set(
        dump({"awg0": {PHONE: (1536, 5 * 1024**2), LAPTOP: (2048, 7 * 1024**3), OTHER: (999, 123456789)}})
    )
    daemon.result("traffic.sample")
    return daemon


def test_a_user_sees_exactly_their_own_profiles(awgd) -> None:  # type: ignore[no-untyped-def]
    async def scenario(fake: FakeTelegram) -> None:
        await fake.push(command(ALICE, "/stats"))
        _, sent = await fake.next_call("sendMessage")
        text = sent["text"]
        assert sent["chat_id"] == str(ALICE)
        assert "Phone" in text and "Laptop" in text and "Bob" not in text
        assert f"⬇ {size(5 * 1024**2)} · ⬆ {size(1536)}" in text  # download = server's tx
        assert f"⬇ {size(7 * 1024**3)} · ⬆ {size(2048)}" in text
        assert size(123456789) not in text and OTHER not in text
        assert "Resets on 1 " in text and "🟢 Online" in text
        await fake.push(command(STRANGER, "/stats"))
        _, sent = await fake.next_call("sendMessage")
        assert sent["text"] == "You have no VPN profiles yet."
        await fake.push(command(ALICE, "/stats", language="ru-RU"))  # Telegram's language for the user
        _, sent = await fake.next_call("sendMessage")
        assert "<b>Ваш трафик</b>" in sent["text"] and "🟢 В сети" in sent["text"]  # noqa: RUF001
        assert UserTexts("ru").size(7 * 1024**3) in sent["text"] and "Счётчик обнулится 1 " in sent["text"]
        await fake.push(command(ALICE, "/stats", language="de"))  # not shipped: the default
        _, sent = await fake.next_call("sendMessage")
        assert sent["text"].startswith("<b>Your traffic</b>")

    run_bot(awgd.socket, scenario)


def test_server_status_for_admins_only_and_refresh_edits(awgd, scripted_tool: ScriptedTool) -> None:  # type: ignore[no-untyped-def]
    async def scenario(fake: FakeTelegram) -> None:
        await fake.push(command(BOB, "/server_status"))
        _, sent = await fake.next_call("sendMessage")
        assert sent["text"] == "Sorry, this command is for administrators."
        await fake.push(command(ADMIN, "/server_status"))
        _, sent = await fake.next_call("sendMessage")
        assert "✅ healthy" in sent["text"] and "<b>awg0</b>: 3/3 online" in sent["text"]
        assert "⬇ what users downloaded" in sent["text"]
        assert json.loads(sent["reply_markup"])["inline_keyboard"][0][0]["callback_data"] == REFRESH
        message_id = fake.next_message_id - 1
        scripted_tool.set("", "Unable to list interfaces: Permission denied\n", 1)
        awgd.call("traffic.sample")  # now the server has a problem to show
        await fake.push(button(ADMIN, message_id))
        _, edited = await fake.next_call("editMessageText")
        assert edited["message_id"] == str(message_id)
        assert "needs attention" in edited["text"] and "Permission denied" in edited["text"]
        _, answered = await fake.next_call("answerCallbackQuery")
        assert answered["text"] == "Updated"
        await fake.push(button(BOB, message_id))  # a non-admin pressing it gets a refusal, no edit
        _, answered = await fake.next_call("answerCallbackQuery")
        assert "administrators" in answered["text"]

    run_bot(awgd.socket, scenario)


def test_daemon_down_gives_a_friendly_message(awgd, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.ERROR, logger="awgd_client.aiogram_router")

    async def scenario(fake: FakeTelegram) -> None:
        awgd.stop(signal.SIGTERM)
        await fake.push(command(ALICE, "/stats"))
        _, sent = await fake.next_call("sendMessage")
        assert sent["text"] == "Traffic figures are unavailable right now. Please try again later."
        await fake.push(command(ADMIN, "/server_status"))
        _, sent = await fake.next_call("sendMessage")
        assert sent["text"] == "Traffic figures are unavailable right now. Please try again later."
        await fake.push(command(STRANGER, "/stats"))  # the bot is still alive
        _, sent = await fake.next_call("sendMessage")
        assert sent["text"] == "You have no VPN profiles yet."

    run_bot(awgd.socket, scenario)
    assert any("awgd is unavailable" in r.getMessage() and "is awgd running" in r.getMessage() for r in caplog.records)


def test_texts_can_be_overridden_and_the_language_chosen(awgd) -> None:  # type: ignore[no-untyped-def]
    def router(client: AsyncClient) -> Router:
        return monitoring_router(
            client,
            profiles,
            is_admin,
            texts={"no_profiles": "Нет профилей: /buy"},
            language=lambda user_id: "ru" if user_id == BOB else None,
            units="binary",
        )

    async def scenario(fake: FakeTelegram) -> None:
        await fake.push(command(STRANGER, "/stats"))
        _, sent = await fake.next_call("sendMessage")
        assert sent["text"] == "Нет профилей: /buy"
        await fake.push(command(BOB, "/stats", language="en"))  # the bot's own choice wins
        _, sent = await fake.next_call("sendMessage")
        assert "Ваш трафик" in sent["text"] and "⬇ 118\u00a0МиБ" in sent["text"]  # noqa: RUF001 - 123456789 B, binary

    run_bot(awgd.socket, scenario, router)
