"""The single-position, long-only portfolio simulation: one tight loop over bars (numba-compiled).

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

from src.trading.market_rules import _TABLES as TICK_TABLES

EXIT_AT_OPEN, EXIT_STOP, EXIT_TARGET, EXIT_END = 0, 1, 2, 3
EXIT_REASONS = {EXIT_AT_OPEN: "signal", EXIT_STOP: "stop", EXIT_TARGET: "target", EXIT_END: "end"}


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
    t_entry_idx = np.empty(n, dtype=np.int64)
    t_exit_idx = np.empty(n, dtype=np.int64)
    t_entry_px = np.empty(n)
    t_exit_px = np.empty(n)
    t_units = np.empty(n)
    t_cost = np.empty(n)
    t_proceeds = np.empty(n)
    t_fees = np.empty(n)
    t_reason = np.empty(n, dtype=np.int64)
    n_trades = 0
    skipped = 0
    cash = capital
    units = 0.0
    stop = np.nan
    target = np.nan
    entry_fee = 0.0
    for t in range(n):
        exited_intrabar = False
        if units > 0.0 and exit_at_open[t]:
            px = _to_tick(o[t] * (1.0 - slippage), tick_table[t], False, use_ticks, floors, ticks)
            value = units * px
            cash += value * (1.0 - fee)
            t_exit_idx[n_trades] = t
            t_exit_px[n_trades] = px
            t_proceeds[n_trades] = value * (1.0 - fee)
            t_fees[n_trades] = entry_fee + value * fee
            t_reason[n_trades] = 0
            n_trades += 1
            units = 0.0
        if units > 0.0:
            raw = np.nan
            reason = -1
            if not np.isnan(stop) and o[t] <= stop:
                raw, reason = o[t], 1
            elif not np.isnan(target) and o[t] >= target:
                raw, reason = o[t], 2
            elif not np.isnan(stop) and lo[t] <= stop:
                raw, reason = stop, 1
            elif not np.isnan(target) and h[t] >= target:
                raw, reason = target, 2
            if reason >= 0:
                px = _to_tick(raw * (1.0 - slippage), tick_table[t], False, use_ticks, floors, ticks)
                value = units * px
                cash += value * (1.0 - fee)
                t_exit_idx[n_trades] = t
                t_exit_px[n_trades] = px
                t_proceeds[n_trades] = value * (1.0 - fee)
                t_fees[n_trades] = entry_fee + value * fee
                t_reason[n_trades] = reason
                n_trades += 1
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
                    px = _to_tick(raw * (1.0 + slippage), tick_table[t], True, use_ticks, floors, ticks)
                    units = spend / (px * (1.0 + fee))
                    entry_fee = units * px * fee
                    cash -= spend
                    t_entry_idx[n_trades] = t
                    t_entry_px[n_trades] = px
                    t_units[n_trades] = units
                    t_cost[n_trades] = spend
                    stop = raw - stop_distance[t]
                    target = raw + target_distance[t]
                    ex_raw = np.nan
                    reason = -1
                    if not np.isnan(stop) and lo[t] <= stop:
                        ex_raw, reason = stop, 1
                    elif not np.isnan(target) and h[t] >= target:
                        ex_raw, reason = target, 2
                    if reason >= 0:
                        px = _to_tick(ex_raw * (1.0 - slippage), tick_table[t], False, use_ticks, floors, ticks)
                        value = units * px
                        cash += value * (1.0 - fee)
                        t_exit_idx[n_trades] = t
                        t_exit_px[n_trades] = px
                        t_proceeds[n_trades] = value * (1.0 - fee)
                        t_fees[n_trades] = entry_fee + value * fee
                        t_reason[n_trades] = reason
                        n_trades += 1
                        units = 0.0
        if units > 0.0:
            in_market[t] = True
        equity[t] = cash + units * c[t]
    if units > 0.0:
        px = _to_tick(c[n - 1] * (1.0 - slippage), tick_table[n - 1], False, use_ticks, floors, ticks)
        value = units * px
        cash += value * (1.0 - fee)
        t_exit_idx[n_trades] = n - 1
        t_exit_px[n_trades] = px
        t_proceeds[n_trades] = value * (1.0 - fee)
        t_fees[n_trades] = entry_fee + value * fee
        t_reason[n_trades] = 3
        n_trades += 1
        equity[n - 1] = cash
    k = n_trades
    return (
        equity,
        in_market,
        t_entry_idx[:k],
        t_exit_idx[:k],
        t_entry_px[:k],
        t_exit_px[:k],
        t_units[:k],
        t_cost[:k],
        t_proceeds[:k],
        t_fees[:k],
        t_reason[:k],
        skipped,
    )


@dataclass(frozen=True, slots=True)
class PortfolioConfig:
    initial_capital: float = 10_000_000.0
    fee_rate: float = 0.0005
    slippage_pct: float = 0.0  # percent, e.g. 0.05 = 0.05 %
    position_fraction: float = 1.0
    min_order_krw: float = 5000.0
    use_tick_sizes: bool = True


@dataclass(slots=True)
class Portfolio:
    """The simulation's outcome: equity marked at every close, and the closed trades."""

    config: PortfolioConfig
    equity: pd.Series
    in_market: np.ndarray
    trades: pd.DataFrame
    skipped_entries: int

    @property
    def final_equity(self) -> Decimal:
        return (
            Decimal(repr(float(self.equity.iloc[-1])))
            if len(self.equity)
            else Decimal(repr(self.config.initial_capital))
        )

    @property
    def fees_paid(self) -> Decimal:
        return Decimal(repr(float(self.trades["fees"].sum()))) if len(self.trades) else Decimal("0")

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
        arrays = [np.ascontiguousarray(df[col].to_numpy(dtype=np.float64)) for col in ("open", "high", "low", "close")]
        out = _simulate(
            *arrays,
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
        equity, in_market, e_idx, x_idx, e_px, x_px, units, cost, proceeds, fees, reason, skipped = out
        index = df.index
        trades = pd.DataFrame(
            {
                "entry_bar": e_idx,
                "exit_bar": x_idx,
                "entry_time": index[e_idx],
                "exit_time": index[x_idx],
                "entry_price": e_px,
                "exit_price": x_px,
                "units": units,
                "cost": cost,
                "proceeds": proceeds,
                "pnl": proceeds - cost,
                "pnl_pct": 100.0 * (proceeds / cost - 1.0) if len(cost) else np.empty(0),
                "fees": fees,
                "exit_reason": [EXIT_REASONS[int(r)] for r in reason],
            }
        )
        return cls(
            config=config,
            equity=pd.Series(equity, index=index, name="equity"),
            in_market=in_market,
            trades=trades,
            skipped_entries=int(skipped),
        )
