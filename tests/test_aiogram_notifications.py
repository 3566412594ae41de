"""The bot's plan notifications and /stats plan lines, with real aiogram polling the local Bot
API stand-in, over a real awgd on real amneziawg-go whose clock (libfaketime) crosses a
midnight: a day plan warns, cuts the user off, gives access back at 00:00, then expires, and
the owner is told each once, across a restart of the bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import test_plans
from test_daemon_rollover import fake_clock, needs_faketime
from test_peers import Server, pings
from test_plans import Subscription
from wgbed import TestBed

aiogram = pytest.importorskip("aiogram", reason="the bot extra (aiogram 3) is not installed")

from aiogram import Bot, Dispatcher  # noqa: E402
from aiogram.client.session.aiohttp import AiohttpSession  # noqa: E402
from aiogram.client.telegram import TelegramAPIServer  # noqa: E402
from test_aiogram_router import FakeTelegram, command, telegram  # noqa: E402

from awgd_client import AsyncClient, DaemonUnavailable, methods  # noqa: E402
from awgd_client.aiogram_notifications import LastIdFile, PlanNotifier  # noqa: E402
from awgd_client.aiogram_router import monitoring_router  # noqa: E402
from awgd_client.models import Event  # noqa: E402

pytestmark = [pytest.mark.wireguard]

ALICE = 1001


bed = test_plans.bed  # two clients on real amneziawg-go 3.1


@contextlib.asynccontextmanager
async def running_bot(api: str, socket: str, owners: dict[str, int], store: Path) -> AsyncIterator[None]:
    """One life of the bot: the router and the notifier, polling until the block ends."""
    bot = Bot("42:TEST", session=AiohttpSession(api=TelegramAPIServer.from_base(api)))
    client = AsyncClient(socket)
    dispatcher = Dispatcher()

    async def profiles(user_id: int) -> list[tuple[str, str]]:
        return [("Phone", k) for k, owner in owners.items() if owner == user_id]

    dispatcher.include_router(monitoring_router(client, profiles, lambda user_id: False))
    PlanNotifier(client, bot, owners.get, store, profiles=profiles).attach(dispatcher)
    polling = asyncio.ensure_future(dispatcher.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        yield
    finally:
        await dispatcher.stop_polling()
        await asyncio.wait_for(polling, 30)
        await client.aclose()
        await bot.session.close()


def sent_to(fake: FakeTelegram, chat: int) -> list[str]:
    return [
        params["text"] for method, params in fake.calls if method == "sendMessage" and params["chat_id"] == str(chat)
    ]


async def told(fake: FakeTelegram, chat: int, count: int) -> list[str]:
    """Wait until `chat` has had `count` messages (an event, not a sleep); returns them."""
    async with fake.changed:
        await asyncio.wait_for(fake.changed.wait_for(lambda: len(sent_to(fake, chat)) >= count), 30)
    return sent_to(fake, chat)


@needs_faketime
def test_the_owner_is_told_once_each_across_a_bot_restart(daemons, bed: TestBed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # awgd's clock starts 40 s before 2026-12-01 00:00 in Moscow; the plan renews daily.
    server = Server(daemons, bed, on_server=(1, 2), env=fake_clock("2026-11-30 23:59:20"))
    user, stranger = bed.peers[0], bed.peers[1]
    key = user.tunnel.public_key
    owners = {key: ALICE}  # the stranger's key has no owner the bot knows
    store = tmp_path / "last-event-id"

    def call(method: str, **params: Any) -> Any:
        return server.result(method, **params)

    async def scenario() -> None:
        async with telegram() as (fake, api):
            async with running_bot(api, server.daemon.socket, owners, store):
                await asyncio.to_thread(bed.ping, user, 2)
                await asyncio.to_thread(server.daemon.result, "traffic.sample")
                used = (await asyncio.to_thread(call, "traffic.get", public_key=key))["period"]["total_bytes"]
                limit = used * 3 // 2
                await asyncio.to_thread(call, "peer.update", public_key=key, label="Dave")  # awgd's own name
                await asyncio.to_thread(call, "plan.set", public_key=key, limit_bytes=limit, reset="day", warn_at=[0.5])
                await asyncio.to_thread(call, "plan.set", public_key=stranger.tunnel.public_key, limit_bytes=0)
                (warning,) = await told(fake, ALICE, 1)
                # The usage (two thirds of the limit), not the 50 % threshold; the bot's name
                # for the device (as in /stats), not awgd's label.
                assert warning.startswith("⚠️ <b>Phone</b>") and re.search(r"\(6\d%\)", warning), warning
                assert "50%" not in warning and "Renews on 1 December" in warning
                await asyncio.to_thread(bed.ping, user, 20)
                await asyncio.to_thread(server.daemon.result, "traffic.sample")
                exceeded = (await told(fake, ALICE, 2))[1]
                assert exceeded.startswith("⛔ <b>Phone</b>") and "paused until 1 December" in exceeded
                await fake.push(command(ALICE, "/stats"))
                stats = (await told(fake, ALICE, 3))[2]
                assert re.search(r"\(\d{3,}%\), 0\u00a0B left\nRenews on 1 December\n", stats), stats
                assert "⛔ VPN paused: the traffic limit is used up" in stats and "Online" not in stats
                assert not await asyncio.to_thread(pings, bed, user)
            assert store.read_text().strip() != ""
            fake.updates.clear()  # as Telegram forgets the updates a bot has fetched
            # The bot is down across the fake midnight: the renewal waits for it.
            feed = Subscription(server.daemon.socket, types=["plan.renewed"])
            feed.sock.settimeout(60)
            renewed = await asyncio.to_thread(feed.event)
            feed.close()
            assert renewed["public_key"] == key and renewed["data"]["quota_lifted"] is True
            assert await asyncio.to_thread(pings, bed, user)
            async with running_bot(api, server.daemon.socket, owners, store):
                back = (await told(fake, ALICE, 4))[3]
                assert back.startswith("✅ <b>Phone</b>") and "until 2 December" in back
                # 5 s into the fake day (or already past it, which expires the plan at once).
                expires = "2026-12-01T00:00:05+03:00"
                await asyncio.to_thread(call, "plan.set", public_key=key, limit_bytes=None, expires_at=expires)
                expired = (await told(fake, ALICE, 5))[4]
                assert expired.startswith("⌛") and "expired on 1 December" in expired
            # Each told once and in order (the third is the /stats answer), and nothing to
            # anyone else: the stranger's key, over its limit of 0, has no owner.
            texts = sent_to(fake, ALICE)
            assert len(texts) == 5 and texts[2].startswith("<b>Your traffic</b>")
            assert [texts[i][0] for i in (0, 1, 3, 4)] == ["⚠", "⛔", "✅", "⌛"]
            assert all(params["chat_id"] == str(ALICE) for method, params in fake.calls if method == "sendMessage")

    asyncio.run(scenario())
    assert isinstance(LastIdFile(store).load(), int)


def test_the_last_id_file_is_kept_whole(tmp_path: Path) -> None:
    store = LastIdFile(tmp_path / "id")
    assert store.load() is None
    store.save(41)
    store.save(42)
    assert store.load() == 42 and [p.name for p in tmp_path.iterdir()] == ["id"]
    (tmp_path / "id").write_text("garbage")
    with pytest.raises(ValueError, match="does not hold an event id"):
        store.load()


def test_a_renewal_that_lifts_nothing_is_not_told() -> None:
    renewed = Event(7, datetime.now(UTC), "plan.renewed", "awg0", "k" * 43 + "=", {"quota_lifted": False})

    class NoBot:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the bot was used: {name}")

    notifier = PlanNotifier(AsyncClient("/nonexistent"), NoBot(), lambda key: ALICE, (lambda: 0, lambda i: None))  # type: ignore[arg-type]
    asyncio.run(notifier.notify(renewed))


def test_an_unreadable_last_id_stops_the_notifier_with_a_clear_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "id"
    store.write_text("not a number")

    async def scenario() -> None:
        notifier = PlanNotifier(AsyncClient("/nonexistent"), None, lambda key: ALICE, store)  # type: ignore[arg-type]
        await notifier.start()
        assert notifier._task is not None
        await asyncio.wait([notifier._task], timeout=10)
        await notifier.stop()  # the bot's shutdown goes on

    asyncio.run(scenario())
    assert any(
        "plan notifications stopped" in r.getMessage() and "does not hold an event id" in r.getMessage()
        for r in caplog.records
    )


def test_a_socket_that_stays_away_is_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26, item 3: subscribe() raises instead of waiting in silence, and the notifier
    says so in a clear line and keeps trying (a socket that comes back is followed)."""
    monkeypatch.setattr(methods, "RESUBSCRIBE_GIVE_UP_SECONDS", 0.5)
    missing = str(tmp_path / "no.sock")
    store = tmp_path / "id"
    store.write_text("0")

    async def scenario() -> None:
        with pytest.raises(DaemonUnavailable, match="is awgd running"):
            async with asyncio.timeout(10):
                async for _ in AsyncClient(missing).subscribe(0):
                    pass
        notifier = PlanNotifier(AsyncClient(missing), None, lambda key: ALICE, store)  # type: ignore[arg-type]
        await notifier.start()
        async with asyncio.timeout(20):
            while not any("cannot follow awgd's events" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.05)
        assert notifier._task is not None and not notifier._task.done()  # still trying
        await notifier.stop()

    with caplog.at_level(logging.ERROR, logger="awgd_client"):
        asyncio.run(scenario())
    line = next(r.getMessage() for r in caplog.records if "cannot follow" in r.getMessage())
    assert missing in line and "is awgd running" in line
