"""The live event stream's fan-out: one reader of the ``events`` outbox per API process, one bounded queue per
WebSocket client.

The reader keeps a cursor (the newest id it has read) and reads ``id > cursor`` when woken: on PostgreSQL by a
``NOTIFY events`` (``backend.app.db.outbox``) on a dedicated asyncpg connection, with a slow poll besides in case
a notification was missed while that connection was being replaced; on SQLite by a poll every
``poll_seconds``. Each event is encoded once and put on every subscriber's queue without waiting, so a slow
client never holds up the others; one that falls too far behind is dropped with the reason (``Subscription``).

A subscriber gets every event after the id it asked for, with no gap and no repeat (``Subscription.stream``):
it registers first, then reads the backlog from the database, then takes its queue, skipping what the backlog
already gave (after a burst that overflowed its queue, it does the same again). Ids become visible in
increasing order (the outbox guarantees it), so whatever the reader reads after the registration is in the
queue, and whatever it read before was committed before the backlog query.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.db.outbox import NOTIFY_CHANNEL
from backend.app.db.queries.events import StreamedEvent, events_after, latest_event_id
from src.utils.logger import get_logger

log = get_logger(__name__)

SQLITE_POLL_SECONDS = 0.1  # one indexed read (id > cursor) per poll: 10 a second cost about 0.5 % of a core
POSTGRES_FALLBACK_POLL_SECONDS = 5.0
QUEUE_SIZE = 1000  # live events a client may have waiting; past it, the client reads on from the database
MAX_LAG = 20_000  # a client reading from the database this many events behind the newest is dropped as too slow
READ_BATCH = 500
RECONNECT_SECONDS = 2.0


class StreamClosed(Exception):
    """The subscription ended: the client was too slow, or the server is shutting down (``reason`` says which)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013


_CATCH_UP = StreamedEvent(0, "")  # queued when a burst overflowed the queue: read on from the database
_PING = StreamedEvent(-1, "")  # queued by the watchdog after ``idle_seconds`` without a message
WATCH_SECONDS = 0.1  # how often the watchdog looks at every client (sends that hang, idle streams)


@dataclass(eq=False)
class Subscription:
    """One client's view of the stream. Its queue holds live events; when a burst overflows it, the queue is
    emptied and the stream reads on from the database (as it read the backlog), so a burst costs no memory and
    loses nothing. A client whose socket takes ``send_limit`` seconds to accept a message is dropped with the
    reason (the endpoint notes ``sending_since`` around each send; the broadcaster's watchdog closes it), and so is
    one that reads from the database ``MAX_LAG`` events behind the newest. No timer is armed per message: with
    500 clients that was two timers per client for every event."""

    broadcaster: EventBroadcaster
    after: int | None
    send_limit: float = 10.0
    queue: asyncio.Queue[StreamedEvent | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    last_sent: int = 0
    sending_since: float | None = None  # loop time a send began, None between sends
    active_at: float = 0.0  # loop time of the last message handed to the endpoint
    catching_up: bool = False
    closed: StreamClosed | None = None
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: StreamedEvent) -> None:
        if self.closed is not None:
            return
        if self.catching_up:
            if event.id - self.last_sent > MAX_LAG:
                self.close(self.too_slow(f"{event.id - self.last_sent} events behind"))
            return  # the stream reads it from the database
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.catching_up = True
            self._empty_queue()
            self.queue.put_nowait(_CATCH_UP)

    def too_slow(self, why: str) -> StreamClosed:
        return StreamClosed(f"too slow ({why}); reconnect with after={self.last_sent}", CLOSE_TRY_AGAIN_LATER)

    def close(self, reason: StreamClosed) -> None:
        """End the subscription: the stream raises ``reason`` and ``dropped`` is set, so the endpoint can stop
        a send that waits on a stalled socket."""
        if self.closed is not None:
            return
        self.closed = reason
        self._empty_queue()
        self.queue.put_nowait(None)
        self.dropped.set()

    def _empty_queue(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    async def _from_database(self) -> AsyncIterator[StreamedEvent]:
        """Every event after ``last_sent``, read in pages until the database has no more. The queue takes live
        events again before each read, so what commits during the read is queued (and skipped if read)."""
        broadcaster = self.broadcaster
        while True:
            self.catching_up = False
            async with broadcaster.gate, broadcaster.engine.connect() as connection:
                page = await events_after(connection, self.last_sent, READ_BATCH)
            for event in page:
                self.active_at = asyncio.get_running_loop().time()
                yield event
                self.last_sent = event.id
            if len(page) < READ_BATCH:
                return

    async def stream(self) -> AsyncIterator[StreamedEvent | None]:
        """The backlog (``id > after``, oldest first), then live events; ``None`` after ``idle_seconds``
        without an event (the endpoint sends a ping). Raises ``StreamClosed`` when dropped."""
        broadcaster = self.broadcaster
        if self.after is None:
            async with broadcaster.gate, broadcaster.engine.connect() as connection:
                self.last_sent = await latest_event_id(connection)
        else:
            self.last_sent = self.after
            async for old in self._from_database():
                yield old
        loop = asyncio.get_running_loop()
        while True:
            event = await self.queue.get()
            self.active_at = loop.time()
            if event is _PING:
                yield None
                continue
            if event is None:
                assert self.closed is not None
                raise self.closed
            if event is _CATCH_UP:
                async for missed in self._from_database():
                    yield missed
                continue
            if event.id <= self.last_sent:
                continue  # already sent from the database
            yield event
            self.last_sent = event.id


class EventBroadcaster:
    """``start()`` in the app's lifespan, ``aclose()`` at its end; ``subscribe``/``unsubscribe`` per client."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        gate: AbstractAsyncContextManager[None] | None = None,
        poll_seconds: float = SQLITE_POLL_SECONDS,
        idle_seconds: float = 20.0,
    ) -> None:
        self.engine = engine  # autocommit: each read sees what is committed now
        # The clients' backlog reads queue with the API's other reads (``FairGate``); the fan-out's own read,
        # one connection at a time, does not wait behind them.
        self.gate: AbstractAsyncContextManager[None] = gate or contextlib.nullcontext()
        self.postgres = engine.dialect.name == "postgresql"
        self.poll_seconds = POSTGRES_FALLBACK_POLL_SECONDS if self.postgres else poll_seconds
        self.idle_seconds = idle_seconds
        self.subscribers: set[Subscription] = set()
        # Called when events were committed (at NOTIFY on PostgreSQL, and after each read that found some), before
        # they are offered to the clients: the read cache drops what it holds
        self.on_events: list[Callable[[], None]] = []
        self.cursor = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    def subscribe(self, after: int | None, send_limit: float = 10.0) -> Subscription:
        subscription = Subscription(self, after, send_limit)
        subscription.active_at = asyncio.get_running_loop().time()
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)

    async def start(self) -> None:
        async with self.engine.connect() as connection:
            self.cursor = await latest_event_id(connection)
        if self.postgres:
            self._listener_task = asyncio.create_task(self._listen(), name="events-listener")
        self._task = asyncio.create_task(self._run(), name="events-fan-out")
        self._watch_task = asyncio.create_task(self._watch(), name="events-watchdog")
        self.started.set()

    async def aclose(self) -> None:
        """Stop reading (after a read in flight, so no connection is torn mid-query), stop listening, and
        close every client with 1001."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for task in (self._listener_task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close_listener()
        for subscription in list(self.subscribers):
            subscription.close(StreamClosed("server shutting down; reconnect with after=<last id>", CLOSE_GOING_AWAY))
        self.subscribers.clear()

    # --- the watchdog: one timer for every client -----------------------------------------------------
    async def _watch(self) -> None:
        """Every ``WATCH_SECONDS``: close a client whose send has waited ``send_limit`` seconds (its socket does
        not drain), and queue a ping for one that got nothing for ``idle_seconds``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            now = loop.time()
            for subscription in list(self.subscribers):
                if subscription.closed is not None:
                    continue
                since = subscription.sending_since
                if since is not None:
                    if now - since >= subscription.send_limit:
                        why = f"a message waited {subscription.send_limit:g} s to be sent"
                        subscription.close(subscription.too_slow(why))
                elif now - subscription.active_at >= self.idle_seconds and subscription.queue.empty():
                    subscription.active_at = now
                    subscription.queue.put_nowait(_PING)

    # --- reading the outbox -------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.read_new()
            except Exception as exc:  # the database may be restarting; the next wake-up tries again
                log.warning("events.read_failed", error=f"{type(exc).__name__}: {exc}")
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()

    async def read_new(self) -> int:
        """Read every event after the cursor and offer it to every subscriber; how many were read."""
        total = 0
        while True:
            async with self.engine.connect() as connection:
                events = await events_after(connection, self.cursor, READ_BATCH)
            if events:
                for callback in self.on_events:  # before any client has the events (SQLite: no NOTIFY)
                    callback()
            for event in events:
                for subscription in list(self.subscribers):
                    subscription.offer(event)
                self.cursor = event.id
            total += len(events)
            if len(events) < READ_BATCH:
                return total

    # --- PostgreSQL: LISTEN on a dedicated connection ---------------------------------------------------
    def _notified(self, *_: Any) -> None:
        for callback in self.on_events:  # at once: before the event is read, and before any client has it
            callback()
        self._wake.set()

    async def _listen(self) -> None:
        """Keep one connection listening on ``events``; after a reconnect, read once (a NOTIFY sent while no
        connection listened is lost, the rows are not)."""
        dsn = make_url(str(self.engine.url)).set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(dsn, timeout=10)
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(NOTIFY_CHANNEL, self._notified)
                self._listener = connection
                self._wake.set()
                log.info("events.listening", channel=NOTIFY_CHANNEL)
                await lost.wait()
                log.warning("events.listener_lost")
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("events.listen_failed", error=f"{type(exc).__name__}: {exc}")
            finally:
                await self._close_listener()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _close_listener(self) -> None:
        connection, self._listener = self._listener, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)


def _setter(event: asyncio.Event) -> Any:
    """A termination callback for asyncpg that sets ``event``."""

    def callback(*_: Any) -> None:
        event.set()

    return callback
