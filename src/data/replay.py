"""Market data from history at a simulated clock: the read side of an exchange for replay mode.

The caller owns the clock (``advance_to``). At clock ``T`` a candle is visible only when it is
complete, i.e. ``open_time + timeframe <= T``: no look-ahead, even for a clock between bar
boundaries. ``get_candles(..., to=X)`` additionally keeps Upbit's exclusive ``to`` (open time < X).

Ticker: the close of the newest complete candle of the symbol's finest loaded timeframe, stamped
with the clock.

Synthetic orderbook (documented model, deterministic): it quotes the fill model (``src/domain/fills.py``).
- ``mid`` = that last close (the fill model's reference price); ``tick`` = the KRW tick size at the clock's
  date for ``mid``.
- best ask = ``fill_price(mid, BUY, slippage_pct, now)`` (``mid x (1 + slippage)`` rounded UP to the tick),
  best bid = ``fill_price(mid, SELL, slippage_pct, now)`` (rounded DOWN), with ``slippage_pct`` =
  ``BACKTEST_SLIPPAGE_PCT``. So a market order the first level covers fills at exactly the price the
  backtest charges. Further levels step one tick outwards (``levels`` per side, 15 by default).
- Depth: every level holds ``max(depth_fraction * candle_volume / levels, min_level_krw / mid)``, where
  ``candle_volume`` is the base volume of that last candle (10 % of one bar's traded volume over the visible
  book, never less than ``min_level_krw`` KRW a level, so thin or gap bars still trade). The FIRST level
  holds at least ``first_level_krw / mid``: ``from_settings`` sets ``first_level_krw`` to ten times the paper starting
  KRW, so every order the bot's sizing can make (at most its equity) fills whole at the best price unless the
  account grew tenfold. Sizes are truncated to 8 decimals.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pandas as pd

from src.api.interfaces import CANDLE_COLUMNS, MAX_CANDLES_PER_REQUEST, Orderbook, OrderbookLevel, Ticker
from src.domain.fills import fill_price
from src.domain.market_rules import krw_tick_size, truncate_volume
from src.domain.orders import Side
from src.domain.timeframes import Timeframe
from src.exceptions import DataError

if TYPE_CHECKING:
    from src.config.settings import Settings

# The first level of the synthetic book holds this many times the paper starting KRW (see the model above).
FIRST_LEVEL_EQUITY_MULTIPLE = 10


class ReplayMarketSource:
    """``MarketDataSource`` over ``{symbol: {timeframe: DataFrame}}`` (our candle shape)."""

    def __init__(
        self,
        candles: Mapping[str, Mapping[str, pd.DataFrame]],
        *,
        start: datetime | None = None,
        slippage_pct: Decimal = Decimal("0.05"),
        depth_fraction: Decimal = Decimal("0.1"),
        levels: int = 15,
        min_level_krw: Decimal = Decimal("1000000"),
        first_level_krw: Decimal = Decimal("100000000"),
    ) -> None:
        if levels < 1:
            raise ValueError("levels must be at least 1")
        if slippage_pct < 0 or depth_fraction <= 0 or min_level_krw <= 0 or first_level_krw < 0:
            raise ValueError("slippage_pct and first_level_krw must be >= 0, depth_fraction and min_level_krw > 0")
        self._frames = {
            symbol: {tf: _checked(symbol, tf, frame) for tf, frame in by_tf.items()}
            for symbol, by_tf in candles.items()
        }
        if not any(self._frames.values()):
            raise DataError("the replay source needs at least one symbol with candles")
        self._slippage_pct = slippage_pct
        self._first_level_krw = first_level_krw
        self._depth_fraction = depth_fraction
        self._levels = levels
        self._min_level_krw = min_level_krw
        self._now = _utc(start) if start is not None else self.first_complete_time()
        self._tick_prices: dict[str, Decimal] = {}  # a replayed tick inside a candle (``trade_at``)

    @classmethod
    def from_settings(
        cls, settings: Settings, candles: Mapping[str, Mapping[str, pd.DataFrame]], *, start: datetime | None = None
    ) -> ReplayMarketSource:
        """The replay exchange's market side as the settings describe it: the fill model's slippage
        (``BACKTEST_SLIPPAGE_PCT``) and a first level of ten times ``PAPER_STARTING_KRW``."""
        return cls(
            candles,
            start=start,
            slippage_pct=settings.backtest.slippage_pct,
            first_level_krw=settings.trading.paper_starting_krw * FIRST_LEVEL_EQUITY_MULTIPLE,
        )

    # --- clock -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._now

    def advance_to(self, moment: datetime) -> None:
        """Move the clock forward (never back: what was seen cannot be unseen)."""
        moment = _utc(moment)
        if moment < self._now:
            raise ValueError(f"the replay clock only moves forward: {moment} is before {self._now}")
        self._now = moment
        self._tick_prices.clear()

    def trade_at(self, symbol: str, price: Decimal) -> None:
        """A replayed tick (the real-time exits' path inside a candle): until the clock moves, the ticker and the
        book quote ``price`` instead of the last close, so an exit triggered by the tick fills at it."""
        self._require(symbol)
        self._tick_prices[symbol] = price

    def candles_between(self, symbol: str, after: datetime, until: datetime) -> pd.DataFrame:
        """The candles of ``symbol``'s finest timeframe that became complete in ``(after, until]``, oldest first."""
        finest = self.timeframes(symbol)[0]
        frame = self._frame(symbol, finest)
        span = _span(finest)
        opens = frame.index
        lo = int(opens.searchsorted(pd.Timestamp(_utc(after)) - span, side="right"))
        hi = int(opens.searchsorted(pd.Timestamp(_utc(until)) - span, side="right"))
        return frame.iloc[lo:hi]

    def first_complete_time(self) -> datetime:
        """The earliest clock at which every symbol has at least one complete candle."""
        firsts = []
        for symbol, by_tf in self._frames.items():
            closes = [frame.index[0] + _span(tf) for tf, frame in by_tf.items() if len(frame)]
            if not closes:
                raise DataError(f"no candles for {symbol}")
            firsts.append(min(closes))
        return max(firsts).to_pydatetime()

    @property
    def symbols(self) -> list[str]:
        return sorted(self._frames)

    def timeframes(self, symbol: str) -> list[str]:
        return sorted(self._require(symbol), key=lambda tf: Timeframe(tf).seconds)

    def visible(self, symbol: str, timeframe: str) -> pd.DataFrame:
        """Every candle of ``symbol``/``timeframe`` complete at the clock, oldest first."""
        frame = self._frame(symbol, timeframe)
        cutoff = pd.Timestamp(self._now) - _span(timeframe)
        return frame.loc[:cutoff]

    # --- MarketDataSource --------------------------------------------------------------------------

    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame:
        if not 1 <= count <= MAX_CANDLES_PER_REQUEST:
            raise ValueError(f"count must be 1..{MAX_CANDLES_PER_REQUEST}, got {count}")
        frame = self.visible(symbol, timeframe)
        if to is not None:
            frame = frame.loc[frame.index < pd.Timestamp(_utc(to))]
        return frame.tail(count).copy()

    async def get_tickers(self, symbols: list[str]) -> list[Ticker]:
        return [Ticker(symbol=s, trade_price=self._last(s)[0], timestamp=self._now) for s in symbols]

    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]:
        return [self.orderbook(symbol) for symbol in symbols]

    def orderbook(self, symbol: str) -> Orderbook:
        """The synthetic book of the model above: best ask and bid are the fill model's buy and sell prices."""
        mid, volume = self._last(symbol)
        tick = krw_tick_size(mid, self._now)
        ask = fill_price(mid, Side.BUY, self._slippage_pct, self._now)
        bid = fill_price(mid, Side.SELL, self._slippage_pct, self._now)
        per_level = max(self._depth_fraction * volume / self._levels, self._min_level_krw / mid)
        size = truncate_volume(per_level)
        first = truncate_volume(max(per_level, self._first_level_krw / mid))
        asks = tuple(OrderbookLevel(ask + tick * i, first if i == 0 else size) for i in range(self._levels))
        bids = tuple(
            OrderbookLevel(bid - tick * i, first if i == 0 else size) for i in range(self._levels) if bid - tick * i > 0
        )
        return Orderbook(symbol=symbol, timestamp=self._now, asks=asks, bids=bids)

    async def close(self) -> None:
        """Nothing to release (kept for symmetry with network sources)."""

    # --- helpers -----------------------------------------------------------------------------------

    def _require(self, symbol: str) -> dict[str, pd.DataFrame]:
        if symbol not in self._frames:
            raise DataError(f"no replay candles for {symbol}; loaded: {', '.join(self.symbols)}")
        return self._frames[symbol]

    def _frame(self, symbol: str, timeframe: str) -> pd.DataFrame:
        by_tf = self._require(symbol)
        if timeframe not in by_tf:
            raise DataError(f"no replay candles for {symbol} {timeframe}; loaded: {', '.join(self.timeframes(symbol))}")
        return by_tf[timeframe]

    def _last(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(close, base volume) of the newest complete candle of the finest timeframe."""
        finest = self.timeframes(symbol)[0]
        frame = self.visible(symbol, finest)
        if frame.empty:
            raise DataError(f"no complete {finest} candle of {symbol} before {self._now.isoformat()}")
        row = frame.iloc[-1]
        tick = self._tick_prices.get(symbol)
        return (Decimal(str(row["close"])) if tick is None else tick), Decimal(str(row["volume"]))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("replay times must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def _span(timeframe: str) -> timedelta:
    return timedelta(seconds=Timeframe(timeframe).seconds)


def _checked(symbol: str, timeframe: str, frame: pd.DataFrame) -> pd.DataFrame:
    if not Timeframe.is_known(timeframe):
        raise DataError(f"{symbol}: unknown timeframe {timeframe!r}; expected one of {Timeframe.names()}")
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        raise DataError(f"{symbol} {timeframe}: expected a tz-aware UTC DatetimeIndex of candle open times")
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in frame.columns]
    if missing:
        raise DataError(f"{symbol} {timeframe}: missing columns {', '.join(missing)}")
    ordered = frame.sort_index()
    ordered = ordered[~ordered.index.duplicated(keep="last")]
    columns = [c for c in CANDLE_COLUMNS if c in ordered.columns]
    result = ordered[columns].astype(float)
    if "value" not in result.columns:
        result["value"] = float("nan")
    result.index = result.index.tz_convert(UTC)
    result.index.name = "timestamp"
    return result
