"""The price watch: the scheduler's supervisor of the real-time exits' prices.

It runs Upbit's public WebSocket (``UpbitStream``, ticker of the held coins: ``set_symbols`` whenever the watched
positions change) and feeds every tick to the engine's ``RealtimeExits``. When no stream price has arrived for
``REALTIME_STALE_SECONDS`` (the stream is down, reconnecting, or silent) it polls the REST ticker every
``REALTIME_FALLBACK_POLL_SECONDS`` into the same watcher, and says so: a log line, ``realtime_fallback_active``,
a ``system_logs`` warning, and the heartbeat's ``details.realtime`` that ``GET /api/v1/bot/status`` serves. With
no open position there is nothing to watch: the stream closes after ``IDLE_CLOSE_SECONDS`` (state ``off``). The
position job stays as the safety net. ``REALTIME_EXITS_ENABLED=false``: the scheduler does not start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from backend.app.services.scheduler_metrics import SchedulerMetrics
from src.api.interfaces import IExchangeClient
from src.config.trading_groups import RealtimeConfig
from src.domain.market_stream import PriceTick, StreamState, TickSource
from src.trading.pipeline.realtime_exits import ExitAttempt, RealtimeExits
from src.trading.repository import ITradingRepository
from src.utils.logger import get_logger

log = get_logger(__name__)

CHECK_SECONDS = 0.25  # how often the supervisor looks at the stream's health (and polls, when due)
IDLE_CLOSE_SECONDS = 300.0  # nothing held for this long: the stream closes (state off)


class PriceStream(Protocol):
    """What the watch needs of ``UpbitStream`` (src/api/upbit/websocket.py)."""

    state: StreamState
    reconnects: int

    async def run(self) -> None: ...

    def set_symbols(self, symbols: Iterable[str]) -> None: ...

    async def stop(self) -> None: ...


StreamFactory = Callable[["PriceWatch"], PriceStream]


def upbit_stream(watch: PriceWatch) -> PriceStream:
    """The public ``UpbitStream`` at ``UPBIT_WEBSOCKET_URL`` with the realtime settings, feeding ``watch``."""
    from src.api.upbit.websocket import StreamKind, UpbitStream

    return UpbitStream(
        watch.url,
        kind=StreamKind.PUBLIC,
        stale_seconds=watch.config.stale_seconds,
        reconnect_max_seconds=watch.config.reconnect_max_seconds,
        on_tick=watch.on_stream_tick,
        on_state=watch.on_stream_state,
    )


class PriceWatch:
    """Stream plus REST fallback into one ``RealtimeExits``; ``run()`` until ``stop()``."""

    def __init__(
        self,
        watcher: RealtimeExits,
        exchange: IExchangeClient,
        config: RealtimeConfig,
        url: str,
        metrics: SchedulerMetrics,
        *,
        repository: ITradingRepository | None = None,
        stream_factory: StreamFactory = upbit_stream,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watcher = watcher
        self.exchange = exchange
        self.config = config
        self.url = url
        self.metrics = metrics
        self.repository = repository
        self.stream_factory = stream_factory
        self._monotonic = monotonic
        self.stream: PriceStream | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self.state = StreamState.OFF
        self.state_since = datetime.now(UTC)
        self.fallback = False
        self.last_tick_at: datetime | None = None  # wall clock of the last price from any source
        self._last_stream_tick = 0.0  # monotonic time of the last stream price
        self._blind_since = 0.0  # monotonic: since when prices are wanted and none came from the stream
        self._next_poll = 0.0
        self._seen_reconnects = 0  # of the current stream
        self.reconnects = 0  # of every stream since the start
        self.polls = 0
        self.exits = 0
        self._symbols: list[str] = []
        self._subscribed: set[str] = set()
        self._idle_since: float | None = None  # monotonic: since when nothing is held (the stream still open)
        self._symbols_changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._records: set[asyncio.Task[None]] = set()
        watcher.on_symbols = self._on_symbols
        watcher.on_exit = self._on_exit
        self._set_state(StreamState.OFF)

    # --- supervision -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Watch until ``stop()``: (re)start or close the stream as positions come and go, poll REST while blind."""
        log.info("realtime.started", url=self.url, stale_seconds=self.config.stale_seconds)
        try:
            await self.watcher.refresh()
        except Exception as exc:  # the control poll refreshes again
            log.warning("realtime.refresh_failed", error=f"{type(exc).__name__}: {exc}")
        self._on_symbols(self.watcher.symbols)
        try:
            while not self._stop.is_set():
                await self._follow_symbols()
                await self._check_health()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=CHECK_SECONDS)
        finally:
            await self._close_stream()
            await self.watcher.settle()
            self._set_fallback(False)
            log.info("realtime.stopped")

    async def stop(self) -> None:
        self._stop.set()

    def _on_symbols(self, symbols: list[str]) -> None:
        self._symbols = list(symbols)
        self.metrics.watched_positions.set(len(symbols))
        self._symbols_changed.set()

    async def _follow_symbols(self) -> None:
        """Open the stream for the first held coin; subscribe again only when a coin outside the subscription is
        held (Upbit allows 5 messages a second and 100 a minute); with nothing held the stream stays open for
        ``IDLE_CLOSE_SECONDS`` (a position closed and another opened soon costs no reconnect), then closes."""
        if not self._symbols_changed.is_set():
            return
        self._symbols_changed.clear()
        symbols = self._symbols
        if not symbols:
            self._set_fallback(False)
            self._idle_since = self._monotonic()
            return
        self._idle_since = None
        self._blind_since = self._blind_since or self._monotonic()
        if self.stream is None:
            self.stream = self.stream_factory(self)
            self._seen_reconnects = self.stream.reconnects
            self._subscribed = set(symbols)
            self.stream.set_symbols(symbols)
            self._stream_task = asyncio.create_task(self._run_stream(self.stream), name="price-stream")
            log.info("realtime.stream_opened", symbols=symbols)
        elif not set(symbols) <= self._subscribed:
            self._subscribed = set(symbols)
            self.stream.set_symbols(symbols)
            log.info("realtime.stream_symbols", symbols=symbols)

    async def _close_when_idle(self) -> None:
        if self._idle_since is not None and self._monotonic() - self._idle_since >= IDLE_CLOSE_SECONDS:
            self._idle_since = None
            self._blind_since = 0.0  # the next stream starts its own stale clock
            await self._close_stream()
            self._set_state(StreamState.OFF)

    async def _run_stream(self, stream: PriceStream) -> None:
        try:
            await stream.run()
        except Exception as exc:  # UpbitStream never raises on network errors; anything else: the fallback polls
            log.exception("realtime.stream_crashed", error=f"{type(exc).__name__}: {exc}")
            self.on_stream_state_sync(StreamState.DOWN)

    async def _close_stream(self) -> None:
        self._count_reconnects()
        stream, task = self.stream, self._stream_task
        self.stream, self._stream_task = None, None
        self._subscribed = set()
        if stream is None:
            return
        try:
            await stream.stop()
        except Exception as exc:
            log.warning("realtime.stream_stop_failed", error=f"{type(exc).__name__}: {exc}")
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        log.info("realtime.stream_closed")

    async def _check_health(self) -> None:
        """Blind (no stream price for ``stale_seconds``, or the stream says stale): poll REST; seeing again: stop."""
        if self.stream is None:
            return
        if self._stream_task is not None and self._stream_task.done() and not self._stop.is_set():
            log.warning("realtime.stream_restarting", reason="the stream's task ended")
            await self._close_stream()
            self._symbols_changed.set()  # the next round opens a new one for the held coins
            return
        stream = self.stream
        if not self._symbols:
            self._count_reconnects()
            if stream.state is not self.state:
                self._set_state(stream.state)
            await self._close_when_idle()
            return
        self._count_reconnects()
        if stream.state is not self.state:
            self._set_state(stream.state)
        now = self._monotonic()
        quiet = now - max(self._last_stream_tick, self._blind_since)
        self._set_fallback(self.state is StreamState.STALE or quiet >= self.config.stale_seconds)
        if self.fallback and now >= self._next_poll:
            self._next_poll = now + self.config.fallback_poll_seconds
            await self._poll()

    async def _poll(self) -> None:
        symbols = list(self._symbols)
        try:
            tickers = await self.exchange.get_tickers(symbols)
        except Exception as exc:  # the exchange may be down too; the next poll tries again
            log.warning("realtime.poll_failed", symbols=symbols, error=f"{type(exc).__name__}: {exc}")
            return
        self.polls += 1
        for ticker in tickers:
            tick = PriceTick(ticker.symbol, ticker.trade_price, ticker.timestamp, TickSource.REST, time.perf_counter())
            self.metrics.stream_messages.labels(source=TickSource.REST.value).inc()
            self.last_tick_at = datetime.now(UTC)
            self.watcher.check(tick)

    # --- the stream's callbacks ------------------------------------------------------------------------
    async def on_stream_tick(self, tick: PriceTick) -> None:
        self._last_stream_tick = self._monotonic()
        self.last_tick_at = datetime.now(UTC)
        self.metrics.stream_messages.labels(source=TickSource.STREAM.value).inc()
        if self.state is not StreamState.LIVE:
            self._set_state(StreamState.LIVE)
        self.watcher.check(tick)

    async def on_stream_state(self, state: StreamState) -> None:
        self.on_stream_state_sync(state)

    def on_stream_state_sync(self, state: StreamState) -> None:
        if self.stream is not None or state is StreamState.OFF:
            self._count_reconnects()
            self._set_state(state)

    def _count_reconnects(self) -> None:
        stream = self.stream
        if stream is not None and stream.reconnects > self._seen_reconnects:
            self.metrics.stream_reconnects.inc(stream.reconnects - self._seen_reconnects)
            self.reconnects += stream.reconnects - self._seen_reconnects
            self._seen_reconnects = stream.reconnects

    # --- status ----------------------------------------------------------------------------------------
    def _set_state(self, state: StreamState) -> None:
        for each in StreamState:
            self.metrics.stream_state.labels(state=each.value).set(1 if each is state else 0)
        if state is self.state:
            return
        previous, self.state = self.state, state
        self.state_since = datetime.now(UTC)
        level = log.warning if state in (StreamState.DOWN, StreamState.STALE) else log.info
        level("realtime.stream_state", state=state.value, previous=previous.value, symbols=self._symbols)

    def _set_fallback(self, active: bool) -> None:
        if active is self.fallback:
            return
        self.fallback = active
        self.metrics.fallback_active.set(1 if active else 0)
        if active:
            self._next_poll = 0.0
            message = "price stream unavailable: REST fallback polls the held coins"
            log.warning(
                "realtime.fallback_started", state=self.state.value, poll_seconds=self.config.fallback_poll_seconds
            )
        else:
            message = "price stream back: REST fallback stopped"
            log.info("realtime.fallback_ended", state=self.state.value)
        if self.repository is not None:
            context = {"state": self.state.value, "symbols": self._symbols}
            task = asyncio.get_running_loop().create_task(self._record(message, context))
            self._records.add(task)  # kept until done (the loop holds tasks only weakly)
            task.add_done_callback(self._records.discard)

    async def _record(self, message: str, context: dict[str, Any]) -> None:
        assert self.repository is not None
        try:
            await self.repository.log_event("warning" if self.fallback else "info", message, context)
        except Exception as exc:
            log.warning("system_log.write_failed", error=f"{type(exc).__name__}: {exc}")

    def _on_exit(self, attempt: ExitAttempt) -> None:
        self.exits += 1
        outcome = "sold" if attempt.sold else "not_sold"
        self.metrics.realtime_exits.labels(source=attempt.tick.source.value, outcome=outcome).inc()
        if attempt.sold:
            self.metrics.tick_to_order.observe(attempt.seconds)
        log.info(
            "realtime.exit",
            symbol=attempt.tick.symbol,
            source=attempt.tick.source.value,
            outcome=outcome,
            error=None if attempt.report is None else attempt.report.error,
            ms=round(attempt.seconds * 1000, 2),
        )

    def status(self) -> dict[str, Any]:
        """What the heartbeat reports (``details.realtime``) and the bot status shows."""
        return {
            "enabled": True,
            "stream": self.state.value,
            "since": self.state_since.isoformat(),
            "fallback": self.fallback,
            "watched": list(self._symbols),
            "last_tick_at": None if self.last_tick_at is None else self.last_tick_at.isoformat(),
            "reconnects": self.reconnects,
            "fallback_polls": self.polls,
            "exits": self.exits,
        }


def disabled_status() -> dict[str, Any]:
    """The heartbeat's ``details.realtime`` with ``REALTIME_EXITS_ENABLED=false`` (or in replay)."""
    return {"enabled": False, "stream": StreamState.OFF.value, "fallback": False, "watched": []}
