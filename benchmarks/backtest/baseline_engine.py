"""BENCHMARK BASELINE ONLY: the engine as it was before the bot-simulating engine (main at 42a95aa), kept here
so that ``benchmarks/backtest/run.py`` can time today's engine against it in one process. Not used by the bot.

The single-position, long-only portfolio simulation: one tight loop over bars (numba-compiled).

Fill rules (also in docs/BACKTESTING.md), for each bar t in order:
1. Open: if a position is open and ``exit_at_open[t]``, sell it at ``open[t]``.
2. A position still open (opened in an earlier bar) checks its exits against bar t:
   open <= stop -> sold at the open (gap); open >= target -> sold at the open (gap);
   else low <= stop -> sold at the stop; else high >= target -> sold at the target.
   When both stop and target lie inside the bar's range the stop is assumed first (pessimistic).
3. Entry, only when flat, not on a bar where an exit by stop/target happened, and never on the last
   bar: ``entry_stop[t] == 0`` buys at ``open[t]``; ``entry_stop[t] > 0`` buys if ``high[t] >= level``
   at ``max(level, open[t])``. The new position's stop/target are then checked on the same bar with
   the rule of step 2 (without the gap cases: the entry price lies between them).
4. Equity is marked at the close: cash + units * close[t].
A position still open after the last bar is sold at the last close (exit reason ``end``).

Prices: a buy fills at ``price * (1 + slippage)`` rounded UP to the KRW tick, a sell at
``price * (1 - slippage)`` rounded DOWN (tick table by bar date, from ``market_rules``). Fee is charged
per side on the traded value: units = spend / (fill * (1 + fee)); proceeds = units * fill * (1 - fee).
An entry whose spend (cash x ``position_fraction``) is below the minimum order (5,000 KRW) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numba
import numpy as np
import pandas as pd

from src.backtesting.engine import TradeArrays
from src.backtesting.performance import PerformanceAnalyzer
from src.domain.exits import ExitReason
from src.domain.market_rules import TICK_TABLES
from src.strategy.contract import Strategy, StrategySignals, shifted

EXIT_AT_OPEN, EXIT_STOP, EXIT_TARGET, EXIT_END = 0, 1, 2, 3
EXIT_REASONS = {
    EXIT_AT_OPEN: ExitReason.SIGNAL,
    EXIT_STOP: ExitReason.STOP_LOSS,
    EXIT_TARGET: ExitReason.TAKE_PROFIT,
    EXIT_END: ExitReason.END,
}


def _tick_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tick tables as arrays for the compiled loop: table starts (ns, newest first), floors and ticks."""
    starts = np.array(
        [int(start.timestamp() * 1e9) if start.year > 1 else np.iinfo(np.int64).min for start, _ in TICK_TABLES],
        dtype=np.int64,
    )
    width = max(len(table) for _, table in TICK_TABLES)
    floors = np.full((len(TICK_TABLES), width), -1.0)
    ticks = np.full((len(TICK_TABLES), width), 0.0)
    for row, (_, table) in enumerate(TICK_TABLES):
        for col, (floor, tick) in enumerate(table):
            floors[row, col] = float(floor)
            ticks[row, col] = float(tick)
    return starts, floors, ticks


_TABLE_STARTS, _TICK_FLOORS, _TICK_SIZES = _tick_arrays()


def tick_table_per_bar(index: pd.DatetimeIndex) -> np.ndarray:
    """Which tick table (row of the tick arrays) applies at each bar's open."""
    stamps = index.as_unit("ns").asi8 if isinstance(index, pd.DatetimeIndex) else np.asarray(index, dtype=np.int64)
    table = np.full(len(stamps), len(_TABLE_STARTS) - 1, dtype=np.int64)
    for row in range(len(_TABLE_STARTS) - 1, -1, -1):
        table[stamps >= _TABLE_STARTS[row]] = row
    return table


@numba.njit(cache=True)
def _tick(price: float, table: int, floors: np.ndarray, ticks: np.ndarray) -> float:
    for col in range(floors.shape[1]):
        if floors[table, col] >= 0 and price >= floors[table, col]:
            return ticks[table, col]
    return ticks[table, floors.shape[1] - 1]


@numba.njit(cache=True)
def _to_tick(price: float, table: int, up: bool, use_ticks: bool, floors: np.ndarray, ticks: np.ndarray) -> float:
    if not use_ticks:
        return price
    tick = _tick(price, table, floors, ticks)
    steps = price / tick
    nearest = np.round(steps)
    if abs(steps - nearest) < 1e-9:
        return nearest * tick
    return (np.ceil(steps) if up else np.floor(steps)) * tick


# Columns of the compiled loop's trade buffer
_E_BAR, _X_BAR, _E_PX, _X_PX, _UNITS, _COST, _PROCEEDS, _FEES, _REASON = range(9)


@numba.njit(cache=True)
def _grow(buffer: np.ndarray) -> np.ndarray:
    bigger = np.empty((buffer.shape[0] * 2, buffer.shape[1]))
    bigger[: buffer.shape[0]] = buffer
    return bigger


@numba.njit(cache=True)
def _close(buffer: np.ndarray, k: int, t: int, px: float, units: float, fee: float, reason: int) -> float:
    """Record the sale of trade ``k`` in bar ``t`` at ``px``; return the cash it brings."""
    value = units * px
    buffer[k, _X_BAR] = t
    buffer[k, _X_PX] = px
    buffer[k, _PROCEEDS] = value * (1.0 - fee)
    buffer[k, _FEES] += value * fee
    buffer[k, _REASON] = reason
    return value * (1.0 - fee)


@numba.njit(cache=True)
def _intrabar_exit(o: float, h: float, lo: float, stop: float, target: float, gaps: bool) -> tuple[float, int]:
    """(raw exit price, reason) for a position inside bar (o, h, lo); reason -1 = still open. Stop first."""
    if gaps and not np.isnan(stop) and o <= stop:
        return o, EXIT_STOP
    if gaps and not np.isnan(target) and o >= target:
        return o, EXIT_TARGET
    if not np.isnan(stop) and lo <= stop:
        return stop, EXIT_STOP
    if not np.isnan(target) and h >= target:
        return target, EXIT_TARGET
    return np.nan, -1


@numba.njit(cache=True)
def _simulate(
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    entry_stop: np.ndarray,
    exit_at_open: np.ndarray,
    stop_distance: np.ndarray,
    target_distance: np.ndarray,
    tick_table: np.ndarray,
    floors: np.ndarray,
    ticks: np.ndarray,
    capital: float,
    fee: float,
    slippage: float,
    position_fraction: float,
    min_order: float,
    use_ticks: bool,
):
    n = o.shape[0]
    equity = np.empty(n)
    in_market = np.zeros(n, dtype=np.bool_)
    buffer = np.empty((1024, 9))
    k = 0  # trades recorded (closed)
    skipped = 0
    cash = capital
    units = 0.0
    stop = np.nan
    target = np.nan
    for t in range(n):
        exited_intrabar = False
        if units > 0.0 and exit_at_open[t]:
            px = _to_tick(o[t] * (1.0 - slippage), tick_table[t], False, use_ticks, floors, ticks)
            cash += _close(buffer, k, t, px, units, fee, EXIT_AT_OPEN)
            k += 1
            units = 0.0
        if units > 0.0:
            raw, reason = _intrabar_exit(o[t], h[t], lo[t], stop, target, True)
            if reason >= 0:
                px = _to_tick(raw * (1.0 - slippage), tick_table[t], False, use_ticks, floors, ticks)
                cash += _close(buffer, k, t, px, units, fee, reason)
                k += 1
                units = 0.0
                exited_intrabar = True
        level = entry_stop[t]
        if units == 0.0 and not exited_intrabar and t < n - 1 and not np.isnan(level):
            raw = np.nan
            if level <= 0.0:
                raw = o[t]
            elif h[t] >= level:
                raw = max(level, o[t])
            if not np.isnan(raw):
                spend = cash * position_fraction
                if spend < min_order:
                    skipped += 1
                else:
                    if k == buffer.shape[0]:
                        buffer = _grow(buffer)
                    px = _to_tick(raw * (1.0 + slippage), tick_table[t], True, use_ticks, floors, ticks)
                    units = spend / (px * (1.0 + fee))
                    cash -= spend
                    buffer[k, _E_BAR] = t
                    buffer[k, _E_PX] = px
                    buffer[k, _UNITS] = units
                    buffer[k, _COST] = spend
                    buffer[k, _FEES] = units * px * fee
                    stop = raw - stop_distance[t]
                    target = raw + target_distance[t]
                    ex_raw, reason = _intrabar_exit(o[t], h[t], lo[t], stop, target, False)
                    if reason >= 0:
                        px = _to_tick(ex_raw * (1.0 - slippage), tick_table[t], False, use_ticks, floors, ticks)
                        cash += _close(buffer, k, t, px, units, fee, reason)
                        k += 1
                        units = 0.0
        if units > 0.0:
            in_market[t] = True
        equity[t] = cash + units * c[t]
    if units > 0.0:
        px = _to_tick(c[n - 1] * (1.0 - slippage), tick_table[n - 1], False, use_ticks, floors, ticks)
        cash += _close(buffer, k, n - 1, px, units, fee, EXIT_END)
        k += 1
        equity[n - 1] = cash
    return equity, in_market, buffer[:k].copy(), skipped


@dataclass(frozen=True, slots=True)
class PortfolioConfig:
    initial_capital: float = 10_000_000.0
    fee_rate: float = 0.0005
    slippage_pct: float = 0.0  # percent, e.g. 0.05 = 0.05 %
    position_fraction: float = 1.0
    min_order_krw: float = 5000.0
    use_tick_sizes: bool = True


class Portfolio:
    """The simulation's outcome: equity marked at every close, and the closed trades."""

    def __init__(
        self, config: PortfolioConfig, index: pd.DatetimeIndex, equity: np.ndarray, in_market: np.ndarray,
        buffer: np.ndarray, skipped_entries: int,
    ) -> None:  # fmt: skip
        self.config = config
        self.index = index
        self.equity_values = equity
        self.in_market = in_market
        self.skipped_entries = skipped_entries
        self._buffer = buffer
        self._trades: pd.DataFrame | None = None

    @property
    def equity(self) -> pd.Series:
        return pd.Series(self.equity_values, index=self.index, name="equity")

    @property
    def final_equity(self) -> Decimal:
        last = float(self.equity_values[-1]) if len(self.equity_values) else self.config.initial_capital
        return Decimal(repr(last))

    @property
    def fees_paid(self) -> Decimal:
        return Decimal(repr(float(self._buffer[:, _FEES].sum())))

    def trade_arrays(self) -> TradeArrays:
        b = self._buffer
        cost, proceeds = b[:, _COST], b[:, _PROCEEDS]
        stamps = self.index.as_unit("ns").asi8
        held_ns = stamps[b[:, _X_BAR].astype(np.int64)] - stamps[b[:, _E_BAR].astype(np.int64)]
        return TradeArrays(proceeds - cost, 100.0 * (proceeds / cost - 1.0), b[:, _FEES], held_ns / 3.6e12)

    @property
    def trades(self) -> pd.DataFrame:
        """One row per closed trade (built on first use)."""
        if self._trades is None:
            self._trades = self._trade_frame()
        return self._trades

    def _trade_frame(self) -> pd.DataFrame:
        b, index = self._buffer, self.index
        entry_bar, exit_bar = b[:, _E_BAR].astype(np.int64), b[:, _X_BAR].astype(np.int64)
        arrays = self.trade_arrays()
        return pd.DataFrame(
            {
                "entry_bar": entry_bar,
                "exit_bar": exit_bar,
                "entry_time": index[entry_bar],
                "exit_time": index[exit_bar],
                "entry_price": b[:, _E_PX],
                "exit_price": b[:, _X_PX],
                "units": b[:, _UNITS],
                "cost": b[:, _COST],
                "proceeds": b[:, _PROCEEDS],
                "pnl": arrays.pnl,
                "pnl_pct": arrays.pnl_pct,
                "fees": arrays.fees,
                "exit_reason": pd.Categorical.from_codes(
                    b[:, _REASON].astype(np.int64), categories=[EXIT_REASONS[i].value for i in range(4)]
                ),
            }
        )

    @classmethod
    def simulate(
        cls,
        df: pd.DataFrame,
        *,
        entry_stop: np.ndarray,
        exit_at_open: np.ndarray,
        stop_distance: np.ndarray,
        target_distance: np.ndarray,
        config: PortfolioConfig,
    ) -> Portfolio:
        open_, high, low, close = (
            np.ascontiguousarray(df[col].to_numpy(dtype=np.float64)) for col in ("open", "high", "low", "close")
        )
        equity, in_market, buffer, skipped = _simulate(
            open_,
            high,
            low,
            close,
            np.ascontiguousarray(entry_stop, dtype=np.float64),
            np.ascontiguousarray(exit_at_open, dtype=np.bool_),
            np.ascontiguousarray(stop_distance, dtype=np.float64),
            np.ascontiguousarray(target_distance, dtype=np.float64),
            tick_table_per_bar(df.index),
            _TICK_FLOORS,
            _TICK_SIZES,
            float(config.initial_capital),
            float(config.fee_rate),
            float(config.slippage_pct) / 100.0,
            float(config.position_fraction),
            float(config.min_order_krw),
            bool(config.use_tick_sizes),
        )
        return cls(config, df.index, equity, in_market, buffer, int(skipped))


def run_baseline(df: pd.DataFrame, strategy: Strategy, config: PortfolioConfig) -> tuple[Portfolio, dict]:
    """The old ``Backtester.run``: signals, the old loop (acting at the next open), the metrics."""
    return run_baseline_signals(df, strategy.generate_signals(df), strategy, config)


def run_baseline_signals(
    df: pd.DataFrame, signals: StrategySignals, strategy: Strategy, config: PortfolioConfig
) -> tuple[Portfolio, dict]:
    stop_atr = strategy.exit_policy.stop_atr or np.nan
    target_atr = strategy.exit_policy.target_atr or np.nan
    portfolio = Portfolio.simulate(
        df,
        entry_stop=np.where(shifted(signals.entry.astype(np.float64), fill=0.0) > 0, 0.0, np.nan),
        exit_at_open=shifted(signals.exit.astype(np.float64), fill=0.0) > 0,
        stop_distance=shifted(stop_atr * signals.atr),
        target_distance=shifted(target_atr * signals.atr),
        config=config,
    )
    metrics = PerformanceAnalyzer().analyze(
        portfolio.equity, portfolio.trade_arrays(), portfolio.in_market, df["close"], config.initial_capital
    )
    return portfolio, metrics
