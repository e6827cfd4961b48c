"""The private stream's consumer: Upbit's ``myOrder`` events settle our orders at once, ``announcement`` events
are recorded, alerted and refresh the market flags.

The stream's callbacks only enqueue (``on_order``, ``on_announcement``): the stream never waits for a database or
for the scheduler's job lock. ``run`` works the queue in arrival order:

- an order event in a final state (``done``/``cancel``/``prevented``) with an identifier: under ``lock`` (the
  scheduler's job lock, so a settlement never runs beside a job that touches the account), the same settlement
  as reconciliation for that one order (``TradingService.settle_reported``: ask the exchange by identifier and
  settle). Exactly once rests on the order's status, the trades' ids and the ``position_fills`` marker: an event
  for an order the job or a poll already settled changes nothing. The polling reconciliation stays.
- an announcement (once per uuid and title: an ``UPDATED`` notice with a new title, e.g. "(완료)", counts again):
  ``system_logs`` + an ``announcement`` event, a notification, the markets its title names (``코인(ABC)`` ->
  ``KRW-ABC``); a maintenance notice makes the next order per market (the named ones, or all) go through
  ``POST /v1/orders/test`` again; then the market flags are refreshed (``refresh``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from src.api.upbit.websocket import markets_in_title
from src.domain.events import EventKind, NotificationEvent, Notifier
from src.domain.market_stream import Announcement, AnnouncementCategory, OrderEvent
from src.trading.preflight import OrderPreflight
from src.trading.repository import ITradingRepository
from src.trading.results import ExecutionResult
from src.trading.service import TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)

Refresh = Callable[[], Awaitable[object]]
SEEN_ANNOUNCEMENTS = 1000
_MAINTENANCE_WORDS = ("점검", "maintenance")


def is_maintenance(announcement: Announcement) -> bool:
    """A maintenance notice: its category, or its title says so (``[점검]``)."""
    title = announcement.title.lower()
    return announcement.category is AnnouncementCategory.MAINTENANCE or any(w in title for w in _MAINTENANCE_WORDS)


class PrivateEvents:
    """Consumes the private stream. ``settle_orders``: live only (the paper account's orders never reach Upbit:
    a paper scheduler with keys listens to announcements only)."""

    def __init__(
        self,
        *,
        trading: TradingService,
        repository: ITradingRepository,
        notifier: Notifier,
        clock: Callable[[], datetime],
        settle_orders: bool,
        refresh: Refresh | None = None,
        preflight: OrderPreflight | None = None,
        lock: asyncio.Lock | None = None,
        max_queue: int = 10_000,
    ) -> None:
        self.trading = trading
        self.repository = repository
        self.notifier = notifier
        self.clock = clock
        self.settle_orders = settle_orders
        self.refresh = refresh
        self.preflight = preflight
        self.lock = lock or asyncio.Lock()
        self._queue: asyncio.Queue[OrderEvent | Announcement] = asyncio.Queue(maxsize=max_queue)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.settled: list[ExecutionResult] = []  # what the events settled (status, tests)
        self.dropped = 0

    # --- the stream's callbacks --------------------------------------------------------------------
    async def on_order(self, event: OrderEvent) -> None:
        if self.settle_orders and event.state.is_final and event.identifier:
            self._put(event)

    async def on_announcement(self, announcement: Announcement) -> None:
        self._put(announcement)

    def _put(self, item: OrderEvent | Announcement) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # the polling reconciliation still settles; the announcement is lost
            self.dropped += 1
            log.error("private_stream.queue_full", dropped=self.dropped, item=type(item).__name__)

    # --- the worker ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Work the queue until cancelled; one bad item never stops the next."""
        while True:
            item = await self._queue.get()
            try:
                await self.handle(item)
            except Exception:
                log.exception("private_stream.handle_failed", item=type(item).__name__)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until everything queued so far has been handled (``run`` must be running)."""
        await self._queue.join()

    async def handle(self, item: OrderEvent | Announcement) -> None:
        if isinstance(item, OrderEvent):
            await self.handle_order(item)
        else:
            await self.handle_announcement(item)

    async def handle_order(self, event: OrderEvent) -> ExecutionResult | None:
        if not event.identifier:
            return None
        async with self.lock:
            result = await self.trading.settle_reported(event.identifier)
        if result is not None:
            self.settled.append(result)
            log.info("private_stream.order_settled", identifier=event.identifier, state=event.state.value)
        return result

    async def handle_announcement(self, announcement: Announcement) -> None:
        key = (announcement.uuid, announcement.title)  # a replay changes nothing; an update with a new title counts
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > SEEN_ANNOUNCEMENTS:
            self._seen.popitem(last=False)
        markets = list(announcement.markets or markets_in_title(announcement.title))
        maintenance = is_maintenance(announcement)
        context: dict[str, Any] = {
            "uuid": announcement.uuid,
            "category": announcement.category.value,
            "title": announcement.title[:500],
            "url": announcement.url,
            "markets": markets,
            "maintenance": maintenance,
            "updated": announcement.updated,
            "at": announcement.at.isoformat(),
        }
        log.warning("upbit.announcement", **context)
        try:
            await self.repository.record_announcement(f"Upbit announcement: {announcement.title}"[:500], context)
        except Exception:  # still alerted and acted on
            log.exception("upbit.announcement_not_recorded", uuid=announcement.uuid)
        self.notifier.notify(NotificationEvent(EventKind.ANNOUNCEMENT, announcement.title, context, at=self.clock()))
        if maintenance and self.preflight is not None:
            self.preflight.reset(markets or None)
        if self.refresh is not None:
            await self.refresh()
