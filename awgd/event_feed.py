"""events.subscribe: the events the ledger has just stored, handed to each subscriber in id
order (docs/API.md, "events.subscribe").

Whoever stores events (a sample, an admin's change) publishes them here once the ledger has
them, with their ids. A subscriber is registered before it reads the backlog from the
ledger, so an event stored meanwhile is in its queue too; it then skips every id it has
already sent. Each event is so sent exactly once, in id order.

A subscriber that does not keep up is dropped rather than queued without end: its
connection is closed, and the client resumes with `since`.
"""

from __future__ import annotations

import asyncio
from collections import deque

from awgd.events import Event

# Events queued for one subscriber that has not taken them. A sample that renews every
# plan of a 50,000-peer server stores one event per planned peer at once; a queue longer
# than that belongs to a client that stopped reading.
MAX_QUEUED_EVENTS = 100_000


class Dropped(Exception):
    """The subscriber fell too far behind; it resumes with `since`."""


class Subscriber:
    def __init__(self, types: frozenset[str] | None) -> None:
        self.types = types
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.dropped = False

    def offer(self, events: list[Event]) -> None:
        if self.dropped:
            return
        wanted = [e for e in events if self.types is None or e.type in self.types]
        if not wanted:
            return
        if len(self._queue) + len(wanted) > MAX_QUEUED_EVENTS:
            self.dropped = True
            self._queue.clear()
        else:
            self._queue.extend(wanted)
        self._ready.set()

    async def next_batch(self) -> list[Event]:
        """Every queued event, waiting for one if there is none; raises Dropped."""
        while not self._queue:
            if self.dropped:
                raise Dropped
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            raise Dropped
        batch = list(self._queue)
        self._queue.clear()
        return batch


class EventFeed:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()

    def subscribe(self, types: frozenset[str] | None) -> Subscriber:
        subscriber = Subscriber(types)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(self, events: list[Event]) -> None:
        if events:
            dropped = []
            for subscriber in self._subscribers:
                subscriber.offer(events)
                if subscriber.dropped:
                    dropped.append(subscriber)
            # Its connection is closed as its pusher finds out; it takes nothing meanwhile.
            self._subscribers.difference_update(dropped)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
