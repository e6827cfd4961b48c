"""The exchange's own tick sizes (``GET /v1/orderbook/instruments``), cached per market.

Upbit's tick table has changed several times (the dated copy in ``src.domain.market_rules`` stays for backtests
and as the fallback), so live orders use the tick the exchange reports for the market. A market's tick is read
when first needed and again after ``refresh_hours`` (``INSTRUMENTS_REFRESH_HOURS``); a refusal with
``invalid_price_*`` drops it (``invalidate``) so the next order reads it again. When the endpoint fails the cache
answers the last tick it had, or ``None`` (the caller falls back to the table), and asks again only after
``retry_seconds``, so an outage costs one failed read per market and window, not one per order.

One tick per market is what the endpoint gives: it is the tick at the market's current price. A coin whose price
crosses a band between refreshes gets the new tick at the next refresh or at the first ``invalid_price`` refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from src.exceptions import DataError, ExchangeError
from src.utils.logger import get_logger

log = get_logger(__name__)

Fetch = Callable[[list[str]], Awaitable[dict[str, Decimal]]]


@dataclass(frozen=True, slots=True)
class _Entry:
    tick: Decimal
    fetched_at: float


class TickSizeCache:
    """Tick sizes by market from ``fetch`` (the instruments endpoint), each kept for ``refresh_hours``."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        refresh_hours: float = 24,
        retry_seconds: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_hours <= 0:
            raise ValueError(f"refresh_hours must be positive, got {refresh_hours}")
        self._fetch = fetch
        self.refresh_seconds = refresh_hours * 3600
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._retry_at: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.fetches = 0  # requests made (for tests and the status page)

    def known(self, symbol: str) -> Decimal | None:
        """The cached tick, fresh or not, without asking the exchange."""
        entry = self._entries.get(symbol)
        return entry.tick if entry else None

    async def tick_size(self, symbol: str) -> Decimal | None:
        """The exchange's tick of ``symbol``: cached when fresh, else read now; ``None`` when never known."""
        entry = self._entries.get(symbol)
        if entry is not None and self._clock() - entry.fetched_at < self.refresh_seconds:
            return entry.tick
        async with self._lock:
            entry = self._entries.get(symbol)
            now = self._clock()
            if entry is not None and now - entry.fetched_at < self.refresh_seconds:
                return entry.tick
            if now < self._retry_at.get(symbol, 0.0):
                return entry.tick if entry else None
            await self._read([symbol])
            return self.known(symbol)

    async def refresh(self, symbols: Iterable[str]) -> dict[str, Decimal]:
        """Read the ticks of ``symbols`` now (one request); returns what is known afterwards."""
        wanted = sorted(set(symbols))
        if wanted:
            async with self._lock:
                await self._read(wanted)
        return {s: tick for s in wanted if (tick := self.known(s)) is not None}

    def invalidate(self, symbol: str) -> None:
        """Forget ``symbol``'s tick (the exchange refused a price on it): the next order reads it again."""
        self._entries.pop(symbol, None)
        self._retry_at.pop(symbol, None)

    async def _read(self, symbols: list[str]) -> None:
        self.fetches += 1
        now = self._clock()
        try:
            ticks = await self._fetch(symbols)
        except (ExchangeError, DataError) as exc:
            for symbol in symbols:
                self._retry_at[symbol] = now + self.retry_seconds
            log.warning(
                "instruments.read_failed",
                symbols=symbols,
                error=f"{type(exc).__name__}: {exc}",
                fallback="last known tick, else the dated table",
                retry_seconds=self.retry_seconds,
            )
            return
        for symbol in symbols:
            tick = ticks.get(symbol)
            if tick is None:
                self._retry_at[symbol] = now + self.retry_seconds
                log.warning("instruments.market_missing", symbol=symbol)
                continue
            previous = self.known(symbol)
            if previous is not None and previous != tick:
                log.info("instruments.tick_changed", symbol=symbol, previous=str(previous), tick=str(tick))
            self._entries[symbol] = _Entry(tick, now)
            self._retry_at.pop(symbol, None)
