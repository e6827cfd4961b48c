"""Real-time exits: every price tick of a held coin is checked against its position's stop, target and trailing
level with the one exit rule (``RiskManager.exits_due``), and a crossing is sold through the position job's
exactly-once path (``TradingPipeline.exit_on_price`` -> ``TradingService.market_sell``).

The watcher holds the open positions' levels in memory (``refresh`` reads them after every fill, exit and
settings change, and on a timer), so a tick costs no database round trip; only a crossing does. The trailing
stop's highest price ratchets up on every tick in memory and is written to the position on the next refresh
and before an exit.

Never twice for one crossing: one exit in flight per position (later ticks of the coin are ignored until it
ends), the account's work lock (``lock``: the scheduler's jobs that touch the account run one at a time), and
the exit path re-reads the position and refuses while a sell of the coin is unsettled. A tick replayed after a
reconnect finds the position closed or the order written, so nothing is sent again.

The same watcher runs in every mode: the scheduler's ``PriceWatch`` feeds it from Upbit's WebSocket (and the
REST fallback), replay from its candles (``candle_ticks``). See docs/RISK.md ("Real-time exits").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

from src.domain.market_stream import PriceTick
from src.risk.store import PositionRecord
from src.trading.pipeline.exits import ExitReport
from src.trading.pipeline.pipeline import TradingPipeline
from src.utils.logger import get_logger

log = get_logger(__name__)

# After an exit that did not close the position (no balance, rejected, order in flight) ticks of the coin do not
# try again for this long; the next refresh or position job sees it anyway.
RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ExitAttempt:
    """One crossing handled: the tick that crossed, what the exit path did, and the seconds from the tick's arrival
    in this process (``PriceTick.received``) to the exit path's answer."""

    tick: PriceTick
    report: ExitReport | None
    seconds: float

    @property
    def sold(self) -> bool:
        return self.report is not None and self.report.result is not None


ExitListener = Callable[[ExitAttempt], None]


class RealtimeExits:
    """Checks ticks against the held positions' levels and sells a crossing once.

    ``RealtimeExits(pipeline, *, lock=None, may_exit=lambda: True, on_exit=None, monotonic=time.monotonic)``:
    ``lock`` is the account's work lock (held around every exit), ``may_exit`` says whether exits are allowed now
    (the bot is not stopped), ``on_exit`` hears every crossing handled (metrics, latency).
    """

    def __init__(
        self,
        pipeline: TradingPipeline,
        *,
        lock: asyncio.Lock | None = None,
        may_exit: Callable[[], bool] | None = None,
        on_exit: ExitListener | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.lock = lock or asyncio.Lock()
        self.may_exit = may_exit or (lambda: True)
        self.on_exit = on_exit
        self._monotonic = monotonic
        self._watched: dict[str, PositionRecord] = {}
        self._raised: set[str] = set()  # highest price ratcheted in memory, not yet written
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._quiet_until: dict[str, float] = {}
        self.ticks = 0
        self.crossings = 0
        self._said_stopped = False
        self.on_symbols: Callable[[list[str]], None] | None = None  # told when the watched coins change

    # --- levels ----------------------------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        """The coins watched now (the open positions at the last refresh)."""
        return sorted(self._watched)

    def position(self, symbol: str) -> PositionRecord | None:
        """The position as the watcher holds it (its highest price ratcheted by the ticks)."""
        return self._watched.get(symbol)

    def levels(self, symbol: str) -> list[Decimal]:
        """The prices at which ``symbol``'s position acts now: stop, trailing level, target (replay puts them on
        a candle's path)."""
        position = self._watched.get(symbol)
        if position is None:
            return []
        found = (position.stop_price, position.trailing_stop_price, position.take_profit_price)
        return sorted({level for level in found if level is not None})

    async def refresh(self) -> list[str]:
        """Read the open positions (after a fill, an exit, a settings change, and on a timer); the highest prices
        ratcheted since the last refresh are written first. Returns the watched symbols."""
        await self.flush()
        positions = await self.pipeline.positions.open_positions()
        watched = {p.symbol: p for p in positions}
        for symbol, position in watched.items():  # a tick between the flush and the read is not lost
            seen = self._watched.get(symbol)
            if seen is not None and seen.id == position.id and seen.highest_price > position.highest_price:
                watched[symbol] = replace(position, highest_price=seen.highest_price)
                self._raised.add(symbol)
        changed = set(watched) != set(self._watched)
        self._watched = watched
        self._raised &= set(watched)
        if changed:
            log.info("realtime.watching", symbols=self.symbols)
            self._quiet_until = {s: t for s, t in self._quiet_until.items() if s in watched}
            if self.on_symbols is not None:
                self.on_symbols(self.symbols)
        return self.symbols

    async def flush(self) -> None:
        """Write the highest prices ratcheted in memory to the positions (``PositionService.mark``)."""
        for symbol in sorted(self._raised):
            position = self._watched.get(symbol)
            self._raised.discard(symbol)
            if position is not None:
                await self.pipeline.positions.mark(symbol, position.highest_price)

    # --- ticks -----------------------------------------------------------------------------------------
    async def on_tick(self, tick: PriceTick) -> None:
        """Check one tick (no database unless it crosses a level); a crossing starts the exit in its own task, so
        the stream is never blocked by an order."""
        self.check(tick)

    def check(self, tick: PriceTick) -> asyncio.Task[None] | None:
        """``on_tick`` without the await: the exit task started for a crossing, or None."""
        position = self._watched.get(tick.symbol)
        if position is None:
            return None
        self.ticks += 1
        if tick.price > position.highest_price:
            position = replace(position, highest_price=tick.price)
            self._watched[tick.symbol] = position
            self._raised.add(tick.symbol)
        if tick.symbol in self._in_flight or self._monotonic() < self._quiet_until.get(tick.symbol, 0.0):
            return None
        exits = self.pipeline.risk.exits_due([position], {tick.symbol: tick.price}, self.pipeline.clock())
        if not exits:
            return None
        if not self.may_exit():
            if not self._said_stopped:
                log.info("realtime.exit_skipped", symbol=tick.symbol, reason="bot stopped")
                self._said_stopped = True
            return None
        self._said_stopped = False
        self.crossings += 1
        log.info(
            "realtime.crossing",
            symbol=tick.symbol,
            price=str(tick.price),
            reason=exits[0].reason.value,
            level=str(exits[0].trigger_price),
            source=tick.source.value,
        )
        task = asyncio.get_running_loop().create_task(self._exit(tick, position.highest_price))
        self._in_flight[tick.symbol] = task
        return task

    async def _exit(self, tick: PriceTick, highest: Decimal) -> None:
        report: ExitReport | None = None
        try:
            async with self.lock:
                if not self.may_exit():
                    return
                self._raised.discard(tick.symbol)  # the exit path marks the highest price itself
                report = await self.pipeline.exit_on_price(tick.symbol, tick.price, highest=highest)
                await self.refresh()
        except Exception as exc:  # the stream goes on; the position job is the safety net
            log.exception("realtime.exit_failed", symbol=tick.symbol, error=f"{type(exc).__name__}: {exc}")
        finally:
            attempt = ExitAttempt(tick, report, time.perf_counter() - tick.received)
            if not attempt.sold and tick.symbol in self._watched:
                self._quiet_until[tick.symbol] = self._monotonic() + RETRY_AFTER_SECONDS
            del self._in_flight[tick.symbol]
            if self.on_exit is not None:
                self.on_exit(attempt)

    async def settle(self) -> None:
        """Wait for the exits in flight (replay between moments, shutdown, tests)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    def retry_now(self) -> None:
        """Forget the pauses after failed exits (after a refresh that found the account changed)."""
        self._quiet_until.clear()


def candle_path(open_: Decimal, high: Decimal, low: Decimal, close: Decimal) -> list[Decimal]:
    """The path a replay walks through one candle: open, low, high, close (the adverse move first, so a stop is
    reached before a target in the same candle)."""
    return [open_, low, high, close]


def leg_ticks(start: Decimal, end: Decimal, levels: Iterable[Decimal]) -> list[Decimal]:
    """The ticks of one leg of a candle's path after ``start``: every level strictly between ``start`` and
    ``end`` in the order the price passes it, then ``end`` (the price moves continuously inside a candle, so a
    stop between the open and the low is crossed at the stop, not at the low; a gap at the open crosses at the
    open)."""
    inside = sorted({level for level in levels if min(start, end) < level < max(start, end)}, reverse=end < start)
    return [*inside, end]
