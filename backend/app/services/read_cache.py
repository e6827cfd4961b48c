"""A per-process cache of the API's hottest reads, dropped by every new event.

What the dashboard and monitors poll (the bot status, the first pages of trades) changes only when something is
written: the scheduler writes its rows and their event in one transaction (``db.outbox``), and the API's own
writes go through this process. So a read is kept until

- any event is committed: ``invalidate()`` is called by the events fan-out (``EventBroadcaster.on_events``) on
  PostgreSQL's ``NOTIFY`` as soon as it arrives, before the event is read or sent to any WebSocket client, and
  on SQLite after each poll that found new events;
- this process wrote something a cached read shows (the endpoints call ``invalidate()``);
- it is ``ttl_seconds`` old (``API_READ_CACHE_SECONDS``), which bounds how long a change that comes with no event
  (realised P&L written onto a sell's trade after its fill; run-time settings written by another API worker)
  can take to show. ``ttl_seconds=0`` turns the cache off: every request reads the database.

Requests that miss together share one read (single flight), and a request never gets a value read before the
last invalidation it could have seen.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

READ_CACHE_SECONDS = 1.0


class ReadCache(Generic[T]):
    def __init__(
        self,
        ttl_seconds: float = READ_CACHE_SECONDS,
        *,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._generation = 0
        self._entries: OrderedDict[Hashable, tuple[T, float]] = OrderedDict()
        self._loading: dict[tuple[Hashable, int], asyncio.Future[T]] = {}
        self.hits = 0
        self.misses = 0

    def invalidate(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value of ``key``, or ``load()``'s (awaited once for all requests that miss together)."""
        if self.ttl <= 0:
            return await load()
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry[1]:
            self.hits += 1
            return entry[0]
        self.misses += 1
        flight = (key, self._generation)
        loading = self._loading.get(flight)
        if loading is None:
            # its own task: a request that gives up (client gone) does not cancel the read for the others
            loading = asyncio.ensure_future(self._load(key, load, self._generation))
            self._loading[flight] = loading
        return await asyncio.shield(loading)

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[T]], generation: int) -> T:
        try:
            value = await load()
        finally:
            self._loading.pop((key, generation), None)
        if generation == self._generation:  # nothing was committed since the read began
            self._entries[key] = (value, self._clock() + self.ttl)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value
