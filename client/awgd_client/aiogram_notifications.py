"""Tell users about their plans from an aiogram 3 bot: a warning before the quota runs out,
the cut-off, the access given back when a new window starts, the plan's expiry.

    from awgd_client import AsyncClient
    from awgd_client.aiogram_notifications import PlanNotifier

    notifier = PlanNotifier(AsyncClient(), bot, owner_of=my_owner_of, last_id="/var/lib/mybot/awgd-last-event")
    notifier.attach(dp)  # runs while the dispatcher polls

`owner_of(public_key)` returns the Telegram chat id of the key's owner, or None (sync or
async). `last_id` is where the notifier keeps the id of the last event it handled: a file
path, or a pair of callables `(load() -> int | None, save(int))` (sync or async) for the
bot's own database. With it, each message goes out exactly once across bot restarts: events
that happened while the bot was down are told when it is back, and none is told twice. (A
crash in the instant between Telegram accepting a message and the id being saved sends that
one message again on restart: a duplicate is better than a user never told.)

The messages, each for the key's owner, are awgd_client.user_texts.render_notice's:
`quota.warning`, `quota.exceeded`, `plan.renewed` when the new window gives back what the
quota took, and `plan.expired`. Give the notifier the router's `profiles` and the device is
called by the same name as in /stats; `language(chat_id)` picks each owner's language (else
`default_language`); `texts` and `units` as in awgd_client.aiogram_router.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter, TelegramServerError

from awgd_client.aiogram_router import Language, Profiles, TextsFor, maybe_await
from awgd_client.async_client import AsyncClient
from awgd_client.errors import AwgdError, InvalidParams
from awgd_client.models import Event, PeerTraffic
from awgd_client.user_texts import (
    NOTIFIED,
    PLAN_EVENTS,
    SHORT_KEY_CHARS,
    Overrides,
    Units,
    display_name,
    render_fleet_notice,
    render_notice,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Telegram or awgd being away is retried from this pause, doubled up to the cap: a message is
# late rather than lost, and a long outage costs one attempt a minute.
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 60.0

OwnerOf = Callable[[str], int | Awaitable[int | None] | None]
Load = Callable[[], int | Awaitable[int | None] | None]
Save = Callable[[int], Awaitable[None] | None]
LastId = str | os.PathLike[str] | tuple[Load, Save]


class LastIdFile:
    """The last handled event id in a file of its own, replaced atomically on each save."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{self.path} does not hold an event id: {text[:40]!r}") from None

    def save(self, last_id: int) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(f"{last_id}\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class _Notifier:
    """What both notifiers share: where the last event told is kept, the texts, and running
    while a dispatcher runs (`run`, each notifier's own, as a task)."""

    def __init__(
        self,
        bot: Bot,
        last_id: LastId,
        *,
        texts: Overrides | None,
        language: Language | None,
        default_language: str,
        units: Units,
    ) -> None:
        self._bot = bot
        if isinstance(last_id, tuple):
            self._load, self._save = last_id
        else:
            stored = LastIdFile(last_id)
            self._load, self._save = stored.load, stored.save
        self._texts_for = TextsFor(texts=texts, language=language, default_language=default_language, units=units)
        self._task: asyncio.Task[None] | None = None

    def attach(self, dispatcher: Dispatcher) -> None:
        """Run while `dispatcher` runs: started at its startup, stopped at its shutdown."""
        dispatcher.startup.register(self.start)
        dispatcher.shutdown.register(self.stop)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run())
            self._task.add_done_callback(_report_end)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):  # an end is logged as it happens
                await task

    async def run(self) -> None:
        raise NotImplementedError

    async def _send(self, chat: int, body: str) -> None:
        try:
            await self._bot.send_message(chat, body, parse_mode="HTML")
        except (TelegramRetryAfter, TelegramNetworkError, TelegramServerError):
            raise  # passing: retried
        except TelegramAPIError as exc:
            # The user blocked the bot, the chat is gone, the text was refused: retrying cannot help.
            log.warning("chat %s cannot be told: %s", chat, exc)

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = RETRY_FIRST_DELAY
        while True:
            try:
                return await attempt()
            except TelegramRetryAfter as exc:
                await asyncio.sleep(exc.retry_after)
                continue
            except (TelegramNetworkError, TelegramServerError, AwgdError, OSError, TimeoutError) as exc:
                log.warning("could not %s (again in %g s): %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)


class PlanNotifier(_Notifier):
    def __init__(
        self,
        client: AsyncClient,
        bot: Bot,
        owner_of: OwnerOf,
        last_id: LastId,
        *,
        profiles: Profiles | None = None,
        texts: Overrides | None = None,
        language: Language | None = None,
        default_language: str = "en",
        units: Units = "decimal",
    ) -> None:
        super().__init__(bot, last_id, texts=texts, language=language, default_language=default_language, units=units)
        self._client = client
        self._owner_of = owner_of
        self._profiles = profiles

    async def run(self) -> None:
        """Tell every event after the stored id, then each new one, forever."""
        since = await maybe_await(self._load())
        if since is None:  # the first run: from now on, not the server's whole history
            since = await self._retrying("read the last event id", self._newest_id)
            await maybe_await(self._save(since))
        delay = RETRY_FIRST_DELAY
        types = list(NOTIFIED)
        while True:
            try:
                async for event in self._client.subscribe(since, types):
                    await self.notify(event)
                    await maybe_await(self._save(event.id))
                    since, delay = event.id, RETRY_FIRST_DELAY
            except InvalidParams as exc:
                if types == list(PLAN_EVENTS):
                    log.error("plan notifications cannot follow awgd's events (again in %g s): %s", delay, exc)
                else:  # an awgd before API v3 knows no stalls: its plans are still told
                    log.warning("awgd does not know every event this bot tells (%s): plans only", exc)
                    types = list(PLAN_EVENTS)
                    continue
            except AwgdError as exc:
                # A socket that refuses this user or stays away: users are not being told.
                log.error("plan notifications cannot follow awgd's events (again in %g s): %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    async def _newest_id(self) -> int:
        return (await self._client.events(limit=1)).last_id

    async def notify(self, event: Event) -> None:
        """Message the owner of the event's key, if the event is one to tell and it has one."""
        if event.public_key is None or event.type not in NOTIFIED:
            return
        if event.type == "plan.renewed" and not event.data.get("quota_lifted"):
            return  # a window starting is news only to a user it gives access back to
        chat = await maybe_await(self._owner_of(event.public_key))
        if chat is None:
            return
        peer = await self._peer(event)
        body = render_notice(await self._texts_for(chat), event, await self._name(chat, event.public_key, peer), peer)
        if body is None:
            return
        await self._retrying(f"tell chat {chat} about {event.type} #{event.id}", lambda: self._send(chat, body))

    async def _name(self, chat: int, public_key: str, peer: PeerTraffic | None) -> str:
        """The device's name as /stats shows it: the bot's own first (its profiles of the
        owner), else awgd's label, else the key's first characters."""
        own = None
        if self._profiles is not None:
            profiles = await maybe_await(self._profiles(chat))
            own = next((name for name, key in profiles if key == public_key), None)
        return display_name(public_key, own, peer)

    async def _peer(self, event: Event) -> PeerTraffic | None:
        """The peer's label and plan for the message; the message goes out without them when
        awgd cannot say (the peer was removed meanwhile)."""
        assert event.public_key is not None
        try:
            return await self._client.traffic(event.public_key, interface=event.interface)
        except AwgdError as exc:
            log.info("no details of %s for its %s message: %s", event.public_key[:SHORT_KEY_CHARS], event.type, exc)
            return None


class FleetEvents(Protocol):
    """Where fleet plans' events are read (awgd_fleet.FleetClient has it; this package does
    not need awgd_fleet installed)."""

    def fleet_events(self, after: int = 0, limit: int = 100) -> list[Any]: ...

    def last_fleet_event_id(self) -> int: ...


# Fleet events read per poll, and the pause between polls: a fleet event is stored by a
# node's mirror round (about a sample apart), so a few seconds late is on time.
FLEET_EVENTS_PER_READ = 100
FLEET_POLL_SECONDS = 10.0


class FleetNotifier(_Notifier):
    """Tell users about their fleet plans (one quota over several servers, awgd_fleet): a
    warning before the subscription's traffic runs out, and the cut-off. Each event is stored
    once for the user centrally (not once per server), and told once, as PlanNotifier tells
    a node's: `last_id` keeps the last one told.

        notifier = FleetNotifier(FleetClient(url), bot, chat_of=my_chat_of, last_id="/var/lib/mybot/fleet-last")
        notifier.attach(dp)

    `chat_of(fleet_user)` is the Telegram chat of the fleet user's owner, or None."""

    def __init__(
        self,
        fleet: FleetEvents,
        bot: Bot,
        chat_of: OwnerOf,
        last_id: LastId,
        *,
        texts: Overrides | None = None,
        language: Language | None = None,
        default_language: str = "en",
        units: Units = "decimal",
        poll_seconds: float = FLEET_POLL_SECONDS,
    ) -> None:
        super().__init__(bot, last_id, texts=texts, language=language, default_language=default_language, units=units)
        self._fleet = fleet
        self._chat_of = chat_of
        self._poll = poll_seconds

    async def run(self) -> None:
        since = await maybe_await(self._load())
        if since is None:  # the first run: from now on
            since = await self._reading(self._fleet.last_fleet_event_id)
            await maybe_await(self._save(since))
        while True:
            found = await self._reading(functools.partial(self._fleet.fleet_events, since, FLEET_EVENTS_PER_READ))
            for event in found:
                await self.notify(event)
                await maybe_await(self._save(event.id))
                since = event.id
            if len(found) < FLEET_EVENTS_PER_READ:
                await asyncio.sleep(self._poll)

    async def notify(self, event: Any) -> None:
        chat = await maybe_await(self._chat_of(event.fleet_user))
        if chat is None:
            return
        body = render_fleet_notice(await self._texts_for(chat), event.type, event.used_bytes, event.limit_bytes)
        if body is None:
            return
        what = f"tell chat {chat} about fleet {event.type} #{event.id}"
        await self._retrying(what, lambda: self._send(chat, body))

    async def _reading(self, read: Callable[[], T]) -> T:
        """A read of the central database (a blocking call) in a thread, retried while it is away."""
        delay = RETRY_FIRST_DELAY
        while True:
            try:
                return await asyncio.to_thread(read)
            except Exception as exc:  # the database's driver raises its own kinds
                log.warning("could not read the fleet's events (again in %g s): %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)


def _report_end(task: asyncio.Task[None]) -> None:
    """run() only ends by failing (an unreadable last id): say so when it happens, not at
    the bot's shutdown, so the operator learns why users are no longer told."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("plan notifications stopped: %s", exc)
