"""The admin's bot commands (awgd_client.aiogram_admin) with real aiogram polling the local
Bot API stand-in, over a real awgd (scripted tool counters underneath): each command changes
the server only for an admin, the destructive ones only after Yes, and answers in the
admin's language."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

aiogram = pytest.importorskip("aiogram", reason="the bot extra (aiogram 3) is not installed")

from aiogram import Router  # noqa: E402
from test_aiogram_router import (  # noqa: E402
    ADMIN,
    BOB,
    LAPTOP,
    PHONE,
    FakeTelegram,
    awgd,  # noqa: F401 - the fixture: PHONE, LAPTOP, OTHER on awg0 of a real awgd
    button,
    command,
    is_admin,
    run_bot,
)

from awgd_client import AsyncClient  # noqa: E402
from awgd_client.aiogram_admin import admin_router, parse_plan  # noqa: E402

GB = 10**9


async def ask(fake: FakeTelegram, user: int, text: str, language: str | None = None) -> dict[str, Any]:
    await fake.push(command(user, text, language))
    _, sent = await fake.next_call("sendMessage")
    return sent


async def alert(fake: FakeTelegram, since: int) -> str:
    """The text of the first answer to a button press with a text, among the calls after `since`
    (a press that did its work is answered without one)."""

    def found() -> list[dict[str, Any]]:
        return [p for m, p in fake.calls[since:] if m == "answerCallbackQuery" and "text" in p]

    async with fake.changed:
        await asyncio.wait_for(fake.changed.wait_for(lambda: bool(found())), 30)
    return str(found()[0]["text"])


def buttons(sent: dict[str, Any]) -> dict[str, str]:
    """The question's buttons: "yes" and "no" to their callback data."""
    row = json.loads(sent["reply_markup"])["inline_keyboard"][0]
    return {button["callback_data"].split(":")[2]: button["callback_data"] for button in row}


def router(client: AsyncClient) -> Router:
    return admin_router(client, is_admin)


def test_admin_commands_change_the_server_only_when_confirmed(awgd) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    awgd.result("peer.update", interface="awg0", public_key=PHONE, label="Phone")
    zone = ZoneInfo(awgd.result("server.status")["timezone"])

    def peer(key: str) -> dict[str, Any]:
        return awgd.result("traffic.get", public_key=key)  # type: ignore[no-any-return]

    async def scenario(fake: FakeTelegram) -> None:
        # Not an admin: refused, nothing changes.
        sent = await ask(fake, BOB, "/pause Phone")
        assert sent["text"] == "Sorry, this command is for administrators." and "reply_markup" not in sent
        assert "Admin commands" in (await ask(fake, ADMIN, "/admin"))["text"]
        # /pause asks; a stranger's press and Cancel change nothing; Yes pauses, once.
        question = await ask(fake, ADMIN, "/pause phone")  # the label, any case
        assert question["text"] == "Pause <b>Phone</b>? The VPN stops for this user until /resume."
        choice, message_id = buttons(question), fake.next_message_id - 1
        mark = len(fake.calls)
        await fake.push(button(BOB, message_id, choice["yes"]))
        assert "administrators" in await alert(fake, mark) and peer(PHONE)["blocked"] == []
        await fake.push(button(ADMIN, message_id, choice["yes"]))
        _, done = await fake.next_call("editMessageText")
        assert done["text"].startswith("⏸ <b>Phone</b> is paused.\n\n<b>Phone</b>\n⛔ VPN paused: by the administrator")
        assert peer(PHONE)["blocked"] == ["admin"]
        mark = len(fake.calls)
        await fake.push(button(ADMIN, message_id, choice["yes"]))  # pressed again: stale, not a second change
        assert "expired" in await alert(fake, mark)
        resumed = await ask(fake, ADMIN, "/resume Phone")
        assert resumed["text"].startswith("▶️ <b>Phone</b> is resumed.") and peer(PHONE)["blocked"] == []
        # /plan: Cancel leaves no plan; Yes sets it, with a plain date as midnight in awgd's zone.
        question = await ask(fake, ADMIN, "/plan Phone 10GB month 2027-01-31")
        assert "10\u00a0GB a month, valid until 31 January" in question["text"]
        await fake.push(button(ADMIN, fake.next_message_id - 1, buttons(question)["no"]))
        _, cancelled = await fake.next_call("editMessageText")
        assert cancelled["text"] == "Cancelled, nothing changed." and peer(PHONE)["plan"] is None
        question = await ask(fake, ADMIN, "/plan Phone 10GB month 2027-01-31")
        await fake.push(button(ADMIN, fake.next_message_id - 1, buttons(question)["yes"]))
        _, done = await fake.next_call("editMessageText")
        assert done["text"].startswith("📋 <b>Phone</b>: the plan is set.") and "of 10\u00a0GB" in done["text"]
        plan = peer(PHONE)["plan"]
        assert plan["limit_bytes"] == 10 * GB and plan["reset"] == "month"
        assert datetime.fromisoformat(plan["expires_at"]) == datetime(2027, 1, 31, tzinfo=zone)
        # /topup adds to this plan's limit and keeps the rest of it.
        topped = await ask(fake, ADMIN, f"/topup {PHONE[:6]} 5GB")
        assert topped["text"].startswith("➕ <b>Phone</b>: 5\u00a0GB added to the limit.")  # noqa: RUF001
        after = peer(PHONE)["plan"]
        assert after["limit_bytes"] == 15 * GB and after["expires_at"] == plan["expires_at"]
        assert "no plan with a limit" in (await ask(fake, ADMIN, f"/topup {LAPTOP} 1GB"))["text"]
        # A top-up lifts a quota block at once.
        awgd.result("plan.set", interface="awg0", public_key=LAPTOP, limit_bytes=1000)
        assert peer(LAPTOP)["blocked"] == ["quota"]
        await ask(fake, ADMIN, f"/topup {LAPTOP[:8]} 10GiB")
        assert peer(LAPTOP)["blocked"] == [] and peer(LAPTOP)["plan"]["limit_bytes"] == 1000 + 10 * 2**30
        # /history and /user read; mistakes explain themselves.
        history = await ask(fake, ADMIN, "/history Phone")
        assert history["text"].startswith("<b>Phone</b>: usage by day\n") and "⬇" in history["text"]
        assert "Used " in (await ask(fake, ADMIN, "/user Phone"))["text"]
        assert (await ask(fake, ADMIN, "/pause nobody"))["text"] == "No peer matches nobody."
        assert (await ask(fake, ADMIN, "/plan Phone lots"))["text"].startswith("Usage: /plan PEER SIZE")
        assert (await ask(fake, ADMIN, "/pause"))["text"] == "Usage: /pause PEER"
        assert peer(PHONE)["blocked"] == []
        # The admin's own language.
        russian = await ask(fake, ADMIN, "/topup Phone 1GB", language="ru")
        assert russian["text"].startswith("➕ <b>Phone</b>: к лимиту добавлено 1\u00a0ГБ.")  # noqa: RUF001

    run_bot(awgd.socket, scenario, router)


def test_plan_words() -> None:
    assert parse_plan(["10GB"]).limit_bytes == 10 * GB
    wanted = parse_plan(["10GiB", "2027-01-31", "week"])
    assert (wanted.limit_bytes, wanted.reset, str(wanted.expires_on)) == (10 * 2**30, "week", "2027-01-31")
    assert parse_plan(["unlimited", "none"]).limit_bytes is None
    for bad in ([], ["lots"], ["10GB", "fortnight"]):
        with pytest.raises(ValueError):
            parse_plan(bad)


def test_what_awgd_refuses_is_said_in_its_words(awgd) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    awgd.result("plan.set", interface="awg0", public_key=PHONE, limit_bytes=GB)

    async def scenario(fake: FakeTelegram) -> None:
        sent = await ask(fake, ADMIN, f"/topup {PHONE[:8]} 2000PB")  # beyond plan.set's 2^60
        assert sent["text"].startswith("awgd refused: invalid params: limit_bytes"), sent["text"]

    run_bot(awgd.socket, scenario, router)
    assert awgd.result("traffic.get", public_key=PHONE)["plan"]["limit_bytes"] == GB
