"""The backtest engine: the bot, simulated bar by bar for one symbol in one numba-compiled loop.

What it simulates (docs/BACKTESTING.md, "What the engine simulates"; DESIGN: "The bot model"). For bar t the
moment ``T_t = open_time[t] + bar`` is when bar t is complete and ``p_t = close[t]`` the reference price:

1. Position check (every ``SCHEDULER_POSITION_CHECK_MINUTES``, at multiples of the interval since the epoch):
   the first check at or after ``T_t`` and before ``T_{t+1}`` sees ``p_t`` (when none falls in that span the
   bar's close is never seen). It raises the position's highest price to ``p_t`` and asks
   ``src.risk.exits.exit_code``; a due exit sells everything at ``fill_price(p_t, SELL)``. A time-out that
   becomes due at a later check inside the span fires there. A check at ``T_t`` runs before the trading cycle,
   a later one after it. Exits are never blocked.
2. Trading cycle at ``T_t``: the circuit breakers see the equity (UTC-day and ISO-week anchors, safe mode);
   held and ``exit[t]`` -> sell (``signal``); flat and ``entry[t]`` -> risk rules (safe mode, trade spacing,
   trades per UTC day, positions, per-coin cap, cash reserve, minimum order), sizing (fixed fraction or
   half-Kelly from the closed round trips), the quick filter gate (a compiled simulation of the same engine
   over the lookback window from a fresh account, judged by the threshold tier) and a market buy at
   ``fill_price(p_t, BUY)``: volume = total / price truncated to 8 decimals, fee on the executed KRW.
   Stop and target come from ``src.risk.exits.exit_levels`` at the fill.
3. Snapshot: the breakers see the equity after the trade.

A position still open after the last bar is sold at the last close (reason ``end``). The loop does work only
on bars where something can happen (a held position or an entry signal); flat bars only mark the equity.
Fill prices follow ``src.domain.fills.fill_price`` exactly (tick table in force at the fill moment).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd

from src.backtesting.thresholds import TIERS
from src.domain.exits import ExitPolicy
from src.domain.market_rules import TICK_TABLES
from src.risk.exits import (
    EXIT_END,
    EXIT_NONE,
    EXIT_REASON_OF_CODE,
    EXIT_SIGNAL,
    EXIT_TIME_OUT,
    exit_code,
    exit_levels,
    trailing_level,
)

DAY_S = 86_400.0
SECONDS_PER_YEAR = 365 * 86_400

# --- tick tables as arrays --------------------------------------------------------------------------------


def _tick_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tick tables for the compiled loop: table starts (epoch seconds, newest first), floors and ticks."""
    starts = np.array(
        [start.timestamp() if start.year > 1 else -np.inf for start, _ in TICK_TABLES],
        dtype=np.float64,
    )
    width = max(len(table) for _, table in TICK_TABLES)
    floors = np.full((len(TICK_TABLES), width), -1.0)
    ticks = np.full((len(TICK_TABLES), width), 0.0)
    for row, (_, table) in enumerate(TICK_TABLES):
        for col, (floor, tick) in enumerate(table):
            floors[row, col] = float(floor)
            ticks[row, col] = float(tick)
    return starts, floors, ticks


TABLE_STARTS, TICK_FLOORS, TICK_SIZES = _tick_arrays()


@numba.njit(cache=True, error_model="numpy")
def table_at(at: float, starts: np.ndarray) -> int:
    """The tick table in force at ``at`` (epoch seconds): the newest whose start is not after it."""
    for row in range(starts.shape[0]):
        if at >= starts[row]:
            return row
    return starts.shape[0] - 1


@numba.njit(cache=True, error_model="numpy")
def _tick(price: float, table: int, floors: np.ndarray, ticks: np.ndarray) -> float:
    for col in range(floors.shape[1]):
        if floors[table, col] >= 0 and price >= floors[table, col]:
            return ticks[table, col]
    return ticks[table, floors.shape[1] - 1]


@numba.njit(cache=True, error_model="numpy")
def to_tick(price: float, table: int, up: bool, use_ticks: bool, floors: np.ndarray, ticks: np.ndarray) -> float:
    """``round_to_tick`` in floats: a price already on the grid (to 1e-9 tick) stays, else up or down."""
    if not use_ticks:
        return price
    tick = _tick(price, table, floors, ticks)
    steps = price / tick
    nearest = np.round(steps)
    if abs(steps - nearest) < 1e-9:
        return nearest * tick
    return (np.ceil(steps) if up else np.floor(steps)) * tick


@numba.njit(cache=True, error_model="numpy")
def fill_px(reference: float, buy: bool, slippage: float, table: int, use_ticks: bool, floors, ticks) -> float:
    """``src.domain.fills.fill_price`` (``slippage`` as a fraction, not percent)."""
    if buy:
        return to_tick(reference * (1.0 + slippage), table, True, use_ticks, floors, ticks)
    return to_tick(reference * (1.0 - slippage), table, False, use_ticks, floors, ticks)


@numba.njit(cache=True, error_model="numpy")
def _whole(value: float) -> float:
    """Whole KRW, cut down (float noise of a value that is a whole number in exact arithmetic is ignored)."""
    nearest = np.round(value)
    if abs(value - nearest) < 1e-6:
        return nearest
    return np.floor(value)


@numba.njit(cache=True, error_model="numpy")
def _volume(total: float, price: float) -> float:
    """``truncate_volume(total / price)``: 8 decimals, cut down."""
    scaled = total / price * 1e8
    nearest = np.round(scaled)
    if abs(scaled - nearest) < 1e-6:
        return nearest / 1e8
    return np.floor(scaled) / 1e8


# --- configuration vector -----------------------------------------------------------------------------------
(
    C_CAPITAL,
    C_FEE,
    C_SLIP,
    C_MIN_ORDER,
    C_TICKS,
    C_SL_PCT,
    C_TP_PCT,
    C_TRAIL_PCT,
    C_STOP_ATR,
    C_TARGET_ATR,
    C_MAX_HOLD_H,
    C_KELLY,
    C_FRACTION_PCT,
    C_KELLY_MIN,
    C_KELLY_MAX,
    C_KELLY_TRADES,
    C_MAX_POS_PCT,
    C_RESERVE_PCT,
    C_SPACING_S,
    C_MAX_PER_DAY,
    C_MAX_POSITIONS,
    C_DAILY_LIMIT,
    C_WEEKLY_LIMIT,
    C_CHECK_S,
    C_LOOKBACK_S,
    C_GATE,
    C_THRESHOLDS,  # 10 values from here (NaN = not checked)
) = range(27)
N_THRESHOLDS = 10
N_CFG = C_THRESHOLDS + N_THRESHOLDS

# --- state vector --------------------------------------------------------------------------------------------
(
    S_CASH,
    S_UNITS,
    S_STOP,
    S_TARGET,
    S_HIGH,
    S_ENTRY_AT,
    S_ENTRY_BAR,
    S_ENTRY_PX,
    S_ENTRY_FUNDS,
    S_ENTRY_FEE,
    S_LAST_TRADE,
    S_COUNT_DAY,
    S_DAY_COUNT,
    S_SAFE,
    S_SAFE_UNTIL,
    S_DAY_ANCHOR,
    S_DAY_ANCHOR_DAY,
    S_WEEK_ANCHOR,
    S_WEEK_ANCHOR_WEEK,
    S_CLOSED,
    S_WINS,
    S_SUM_WIN,
    S_SUM_LOSS,
    S_SAFE_ENTERED,
    S_DAY_END,
    S_WEEK_END,
    S_DAY_FLOOR,
    S_WEEK_FLOOR,
) = range(28)
N_STATE = 28

# --- trade buffer columns ------------------------------------------------------------------------------------
(
    T_E_BAR,
    T_X_BAR,
    T_E_AT,
    T_X_AT,
    T_E_PX,
    T_X_PX,
    T_VOLUME,
    T_E_FUNDS,
    T_E_FEE,
    T_X_FUNDS,
    T_X_FEE,
    T_PNL,
    T_REASON,
    T_STOP,
    T_TARGET,
) = range(15)
N_COLS = 15

# --- entry blocks (counts) -----------------------------------------------------------------------------------
BLOCK_RULES = (
    "safe_mode",
    "min_trade_interval",
    "max_trades_per_day",
    "max_positions",
    "max_position_pct",
    "cash_reserve",
    "min_order",
    "quick_filter",  # the rule stage (the candidate strategy's signals for the ai strategy)
    "quick_filter_ai",  # the AI stage (ai strategy only)
)
(B_SAFE, B_SPACING, B_PER_DAY, B_POSITIONS, B_POS_PCT, B_RESERVE, B_MIN_ORDER, B_GATE, B_GATE_AI) = range(9)
B_ATTEMPTS, B_BLOCKED = 9, 10  # entry attempts (flat and an entry signal) and how many of them were refused
N_BLOCKS = 11

# --- quick filter metrics (compiled), in the order of thresholds.THRESHOLD_METRICS ----------------------------


@numba.njit(cache=True, error_model="numpy")
def _new_state(capital: float) -> np.ndarray:
    st = np.zeros(N_STATE)
    st[S_CASH] = capital
    st[S_STOP] = np.nan
    st[S_TARGET] = np.nan
    st[S_LAST_TRADE] = np.nan
    st[S_COUNT_DAY] = -1e18
    st[S_DAY_ANCHOR_DAY] = -1e18
    st[S_WEEK_ANCHOR_WEEK] = -1e18
    st[S_DAY_END] = -np.inf  # no anchor yet: the first equity seen sets them
    st[S_WEEK_END] = -np.inf
    return st


@numba.njit(cache=True, error_model="numpy")
def _grow(buf: np.ndarray) -> np.ndarray:
    bigger = np.empty((buf.shape[0] * 2, buf.shape[1]))
    bigger[: buf.shape[0]] = buf
    return bigger


@numba.njit(cache=True, error_model="numpy")
def _on_equity(st: np.ndarray, cfg: np.ndarray, equity: float, now: float) -> None:
    """``RiskManager.on_equity``: expire safe mode, roll the day/week anchors, enter or extend safe mode.
    The loops skip the call when nothing can change (same anchor day and week, above both loss floors, no
    safe mode to expire); the floors are the anchors less the loss limits."""
    if st[S_SAFE] > 0.0 and now >= st[S_SAFE_UNTIL]:
        st[S_SAFE] = 0.0
    day = np.floor(now / DAY_S)
    week = np.floor((day + 3.0) / 7.0)  # ISO weeks: day 4 (1970-01-05) is a Monday
    if st[S_DAY_ANCHOR_DAY] != day:
        st[S_DAY_ANCHOR_DAY] = day
        st[S_DAY_ANCHOR] = equity
        st[S_DAY_END] = (day + 1.0) * DAY_S
        st[S_DAY_FLOOR] = equity * (1.0 - cfg[C_DAILY_LIMIT] / 100.0)
    if st[S_WEEK_ANCHOR_WEEK] != week:
        st[S_WEEK_ANCHOR_WEEK] = week
        st[S_WEEK_ANCHOR] = equity
        st[S_WEEK_END] = (week * 7.0 - 3.0 + 7.0) * DAY_S
        st[S_WEEK_FLOOR] = equity * (1.0 - cfg[C_WEEKLY_LIMIT] / 100.0)
    until = np.nan
    anchor = st[S_WEEK_ANCHOR]
    weekly = (anchor - equity) / anchor * 100.0 if anchor > 0.0 else 0.0
    if weekly >= cfg[C_WEEKLY_LIMIT]:
        until = st[S_WEEK_END]
    else:
        anchor = st[S_DAY_ANCHOR]
        daily = (anchor - equity) / anchor * 100.0 if anchor > 0.0 else 0.0
        if daily >= cfg[C_DAILY_LIMIT]:
            until = st[S_DAY_END]
    if not np.isnan(until):
        if st[S_SAFE] > 0.0 and st[S_SAFE_UNTIL] >= until:
            return
        if st[S_SAFE] == 0.0:
            st[S_SAFE_ENTERED] += 1.0
        st[S_SAFE] = 1.0
        st[S_SAFE_UNTIL] = until


@numba.njit(cache=True, error_model="numpy")
def _count_trade(st: np.ndarray, at: float) -> None:
    day = np.floor(at / DAY_S)
    if st[S_COUNT_DAY] != day:
        st[S_COUNT_DAY] = day
        st[S_DAY_COUNT] = 0.0
    st[S_DAY_COUNT] += 1.0
    if np.isnan(st[S_LAST_TRADE]) or at > st[S_LAST_TRADE]:
        st[S_LAST_TRADE] = at


@numba.njit(cache=True, error_model="numpy")
def _sell(st, cfg, buf, k, t, at, reference, reason, starts, floors, ticks) -> int:
    """Sell the whole position at the fill price of ``reference``; record the round trip; return the new count."""
    px = fill_px(reference, False, cfg[C_SLIP], table_at(at, starts), cfg[C_TICKS] > 0.0, floors, ticks)
    units = st[S_UNITS]
    funds = units * px
    fee = funds * cfg[C_FEE]
    st[S_CASH] += funds - fee
    pnl = funds - fee - st[S_ENTRY_FUNDS] - st[S_ENTRY_FEE]
    buf[k, T_E_BAR] = st[S_ENTRY_BAR]
    buf[k, T_X_BAR] = t
    buf[k, T_E_AT] = st[S_ENTRY_AT]
    buf[k, T_X_AT] = at
    buf[k, T_E_PX] = st[S_ENTRY_PX]
    buf[k, T_X_PX] = px
    buf[k, T_VOLUME] = units
    buf[k, T_E_FUNDS] = st[S_ENTRY_FUNDS]
    buf[k, T_E_FEE] = st[S_ENTRY_FEE]
    buf[k, T_X_FUNDS] = funds
    buf[k, T_X_FEE] = fee
    buf[k, T_PNL] = pnl
    buf[k, T_REASON] = reason
    buf[k, T_STOP] = st[S_STOP]
    buf[k, T_TARGET] = st[S_TARGET]
    st[S_UNITS] = 0.0
    st[S_CLOSED] += 1.0
    if pnl > 0.0:
        st[S_WINS] += 1.0
        st[S_SUM_WIN] += pnl
    else:
        st[S_SUM_LOSS] += -pnl
    if reason != EXIT_END:
        _count_trade(st, at)
    return k + 1


@numba.njit(cache=True, error_model="numpy")
def half_kelly(closed: float, wins: float, sum_win: float, sum_loss: float, low: float, high: float) -> float:
    """``src.risk.sizing.half_kelly_pct``: half of ``W - (1 - W) / R`` in percent, 4 decimals cut, clamped."""
    win_rate = wins / closed if closed > 0.0 else 0.0
    losses = closed - wins
    avg_win = sum_win / wins if wins > 0.0 else 0.0
    avg_loss = sum_loss / losses if losses > 0.0 else 0.0
    if avg_loss > 0.0:
        payoff = avg_win / avg_loss
        if payoff == 0.0:
            kelly = -(1.0 - win_rate) if win_rate < 1.0 else 0.0
        else:
            kelly = win_rate - (1.0 - win_rate) / payoff
    else:
        kelly = win_rate
    raw = kelly / 2.0 * 100.0 * 10_000.0
    nearest = np.round(raw)
    raw = nearest if abs(raw - nearest) < 1e-6 else np.trunc(raw)
    return min(max(raw / 10_000.0, low), high)


@numba.njit(cache=True, error_model="numpy")
def _verdict(cash, now, last_trade, count_day, day_count, safe, safe_until, closed, wins, sum_win, sum_loss,
             fee, min_order, spacing, max_per_day, max_positions, max_pos_pct, reserve_pct, kelly, fraction_pct,
             kelly_trades, kelly_min, kelly_max):  # fmt: skip
    """The risk manager's verdict and the sizing of a buy when flat (scalars only: cheap to call from the loop).
    Returns (refusals as a bit mask of ``B_*``, the KRW order total or 0)."""
    equity = cash  # flat: one symbol, nothing else held
    mask = 0
    if safe > 0.0 and now < safe_until:
        mask |= 1 << B_SAFE
    if not np.isnan(last_trade) and now - last_trade < spacing:
        mask |= 1 << B_SPACING
    today = day_count if count_day == np.floor(now / DAY_S) else 0.0
    if today >= max_per_day:
        mask |= 1 << B_PER_DAY
    if max_positions <= 0.0:
        mask |= 1 << B_POSITIONS
    coin_room = equity * max_pos_pct / 100.0
    if coin_room <= 0.0:
        mask |= 1 << B_POS_PCT
    cash_room = (cash - equity * reserve_pct / 100.0) / (1.0 + fee)
    if cash_room <= 0.0:
        mask |= 1 << B_RESERVE
    max_krw = _whole(max(min(coin_room, cash_room), 0.0))
    if coin_room > 0.0 and cash_room > 0.0 and max_krw < min_order:
        mask |= 1 << B_MIN_ORDER
    if mask:
        return mask, 0.0
    pct = fraction_pct
    if kelly > 0.0 and closed >= kelly_trades:
        pct = half_kelly(closed, wins, sum_win, sum_loss, kelly_min, kelly_max)
    krw = _whole(min(equity * pct / 100.0, max_krw))
    total = _whole(min(krw, cash / (1.0 + fee)))  # TradingService.buy_total_for
    if krw < min_order or total < min_order:
        return 1 << B_MIN_ORDER, 0.0
    return 0, total


@numba.njit(cache=True, error_model="numpy")
def _quiet(now, day_end, week_end, value, day_floor, week_floor, safe, safe_until) -> bool:
    """The breakers' fast path: same anchor day and week, above both loss floors, no safe mode to expire."""
    return (
        now < day_end
        and now < week_end
        and value > day_floor
        and value > week_floor
        and (safe == 0.0 or now < safe_until)
    )


@numba.njit(cache=True, error_model="numpy")
def _buy(st, cfg, t, at, reference, atr, total, starts, floors, ticks) -> None:
    px = fill_px(reference, True, cfg[C_SLIP], table_at(at, starts), cfg[C_TICKS] > 0.0, floors, ticks)
    volume = _volume(total, px)
    funds = volume * px
    fee = funds * cfg[C_FEE]
    st[S_CASH] -= funds + fee
    st[S_UNITS] = volume
    stop, target = exit_levels(px, atr, cfg[C_SL_PCT], cfg[C_TP_PCT], cfg[C_STOP_ATR], cfg[C_TARGET_ATR])
    st[S_STOP] = stop
    st[S_TARGET] = target
    st[S_HIGH] = px
    st[S_ENTRY_AT] = at
    st[S_ENTRY_BAR] = t
    st[S_ENTRY_PX] = px
    st[S_ENTRY_FUNDS] = funds
    st[S_ENTRY_FEE] = fee
    _count_trade(st, at)


@numba.njit(cache=True, error_model="numpy")
def _finish(st, cfg, buf, k, first, last, stamps, bar_s, c, equity, starts, floors, ticks):
    """A position still open after the last bar is sold at its close (reason ``end``)."""
    if st[S_UNITS] > 0.0:
        if k + 1 >= buf.shape[0]:
            buf = _grow(buf)
        k = _sell(st, cfg, buf, k, last, stamps[last] + bar_s, c[last], EXIT_END, starts, floors, ticks)
        equity[last - first] = st[S_CASH]
    return buf, k


@numba.njit(cache=True, error_model="numpy")
def _due(price, highest, stop, target, trailing_pct, entry_at, max_hold, at, next_close_at, interval):
    """The position check at ``at`` seeing ``price`` (``highest`` already raised to it): (exit code, fill moment).
    Later checks before the next close see the same price; only the time-out can become due there."""
    trailing = trailing_level(highest, trailing_pct)
    code = exit_code(price, price, price, stop, target, trailing, (at - entry_at) / 3600.0, max_hold)
    if code == EXIT_NONE and max_hold > 0.0:
        due = np.ceil((entry_at + max_hold * 3600.0) / interval) * interval
        if at < due < next_close_at:
            return EXIT_TIME_OUT, due
    return code, at


# The bar loop below is the one definition of the simulation, for both runs: the main run and the quick filter's
# own run (the same engine from a fresh account over the lookback window, no gate). The latter passes ``None``
# for the gate's signals: numba compiles a separate version for that argument type and prunes the gate's branch
# from it before typing, so that version carries no gate code and the gate's window run is not a recursive
# call. The bar's step is written out in the loop rather than called: a call that passes arrays costs tens of
# nanoseconds in numba (reference counting), so the common case of a bar (a held position, no exit due, no
# breaker event) runs inline on the state vector and the helpers that take arrays are called only for events (a
# fill, an entry attempt, a breaker change). (A bar-step function inlined by numba, ``inline="always"``, made
# the loop 4-8 times slower: the inlined arguments are new references to the arrays, counted at every bar.)


def _bar_loop(first, last, stamps, c, entry, exit_, atr, bar_s, starts, floors, ticks, cfg, st, equity, blocked,
              buf, rule_entry, rule_exit, rule_atr, two_stage):  # fmt: skip
    """Bars ``first..last`` (inclusive). With the ``rule_*`` signals (arrays) the quick filter gate runs at each
    entry attempt the risk rules allow: the rule stage on them (the strategy's own, or the ai strategy's
    candidate strategy's), then with ``two_stage`` the AI stage on the strategy's signals. ``rule_entry=None``:
    no gate (the quick filter's own run, or a main run with the gate off). Returns (trade buffer, trade count)."""
    k = 0
    w0 = 0
    for t in range(first, last + 1):
        if st[S_UNITS] == 0.0 and not entry[t]:  # flat and no entry signal: nothing can happen
            equity[t - first] = st[S_CASH]
            continue
        traded = False  # a fill at this bar: only then do the snapshot's breakers look again
        if k + 2 >= buf.shape[0]:
            buf = _grow(buf)
        price = c[t]
        now = stamps[t] + bar_s  # bar t is complete: its close is the reference price
        later = stamps[t + 1] + bar_s if t + 1 < stamps.shape[0] else now + bar_s  # the next close
        check = np.ceil(now / cfg[C_CHECK_S]) * cfg[C_CHECK_S]  # the first position check that sees this close
        if check >= later:
            check = -np.inf  # none: the next check already sees the next close
        # 1. position check at the close (before the trading cycle)
        if st[S_UNITS] > 0.0 and check == now:
            if price > st[S_HIGH]:
                st[S_HIGH] = price
            code, when = _due(price, st[S_HIGH], st[S_STOP], st[S_TARGET], cfg[C_TRAIL_PCT], st[S_ENTRY_AT],
                              cfg[C_MAX_HOLD_H], check, later, cfg[C_CHECK_S])  # fmt: skip
            if code != EXIT_NONE:
                k = _sell(st, cfg, buf, k, t, when, price, code, starts, floors, ticks)
                traded = True
        # 2. trading cycle: breakers, then one action
        value = st[S_CASH] + st[S_UNITS] * price
        if not _quiet(now, st[S_DAY_END], st[S_WEEK_END], value, st[S_DAY_FLOOR], st[S_WEEK_FLOOR], st[S_SAFE],
                      st[S_SAFE_UNTIL]):  # fmt: skip
            _on_equity(st, cfg, value, now)
        total = 0.0
        if st[S_UNITS] > 0.0:
            if exit_[t]:
                k = _sell(st, cfg, buf, k, t, now, price, EXIT_SIGNAL, starts, floors, ticks)
                traded = True
        elif entry[t]:
            blocked[B_ATTEMPTS] += 1
            mask, total = _verdict(
                st[S_CASH], now, st[S_LAST_TRADE], st[S_COUNT_DAY], st[S_DAY_COUNT], st[S_SAFE], st[S_SAFE_UNTIL],
                st[S_CLOSED], st[S_WINS], st[S_SUM_WIN], st[S_SUM_LOSS], cfg[C_FEE], cfg[C_MIN_ORDER],
                cfg[C_SPACING_S], cfg[C_MAX_PER_DAY], cfg[C_MAX_POSITIONS], cfg[C_MAX_POS_PCT], cfg[C_RESERVE_PCT],
                cfg[C_KELLY], cfg[C_FRACTION_PCT], cfg[C_KELLY_TRADES], cfg[C_KELLY_MIN], cfg[C_KELLY_MAX],
            )  # fmt: skip
            if mask:
                blocked[B_BLOCKED] += 1
                for rule in range(B_GATE):
                    if mask & (1 << rule):
                        blocked[rule] += 1
            elif rule_entry is not None:  # the quick filter gate (pruned from the gate-less version)
                limit = stamps[t] - cfg[C_LOOKBACK_S]
                while stamps[w0] <= limit:
                    w0 += 1
                if not quick_filter_passes(
                    w0, t, stamps, c, rule_entry, rule_exit, rule_atr, bar_s, starts, floors, ticks, cfg
                ):
                    blocked[B_GATE] += 1
                    blocked[B_BLOCKED] += 1
                    total = 0.0
                elif two_stage and not quick_filter_passes(
                    w0, t, stamps, c, entry, exit_, atr, bar_s, starts, floors, ticks, cfg
                ):
                    blocked[B_GATE_AI] += 1
                    blocked[B_BLOCKED] += 1
                    total = 0.0
        if total > 0.0:
            _buy(st, cfg, t, now, price, atr[t], total, starts, floors, ticks)
            traded = True
        # 3. snapshot
        value = st[S_CASH] + st[S_UNITS] * price
        if traded and not _quiet(now, st[S_DAY_END], st[S_WEEK_END], value, st[S_DAY_FLOOR], st[S_WEEK_FLOOR],
                                 st[S_SAFE], st[S_SAFE_UNTIL]):  # fmt: skip
            _on_equity(st, cfg, value, now)
        # 1'. a position check after the trading cycle that still sees this close: the first check later than the
        # close, or, for a position bought at the close (after that close's own check), the next one
        after = check
        if total > 0.0 and check == now:
            after = now + cfg[C_CHECK_S]
        if st[S_UNITS] > 0.0 and now < after < later:
            if price > st[S_HIGH]:
                st[S_HIGH] = price
            code, when = _due(price, st[S_HIGH], st[S_STOP], st[S_TARGET], cfg[C_TRAIL_PCT], st[S_ENTRY_AT],
                              cfg[C_MAX_HOLD_H], after, later, cfg[C_CHECK_S])  # fmt: skip
            if code != EXIT_NONE:
                k = _sell(st, cfg, buf, k, t, when, price, code, starts, floors, ticks)
        equity[t - first] = st[S_CASH] + st[S_UNITS] * price
    return _finish(st, cfg, buf, k, first, last, stamps, bar_s, c, equity, starts, floors, ticks)


# The loop's two compiled entry points, one dispatcher each: the main run (with the gate's signals, or None when
# the gate is off) and the quick filter's own run (always None). One dispatcher for both would compile the
# gate-less version while still compiling the gated one (the gate's window run is inside it): numba links such
# a call like a recursive one, and a process that loads it from the on-disk cache crashes (numba issue #6061;
# seen here with numba 0.68.1).
_simulate = numba.njit(cache=True, error_model="numpy")(_bar_loop)
_window_loop = numba.njit(cache=True, error_model="numpy")(_bar_loop)


@numba.njit(cache=True, error_model="numpy")
def window_run(first, last, stamps, c, entry, exit_, atr, bar_s, starts, floors, ticks, cfg):
    """The same engine from a fresh account over bars ``first..last``, without the gate (the quick filter's run)."""
    st = _new_state(cfg[C_CAPITAL])
    equity = np.empty(last - first + 1)
    blocked = np.zeros(N_BLOCKS, dtype=np.int64)
    buf = np.empty((16, N_COLS))
    buf, k = _window_loop(first, last, stamps, c, entry, exit_, atr, bar_s, starts, floors, ticks, cfg, st, equity,
                          blocked, buf, None, None, None, False)  # fmt: skip
    return equity, buf, k


@numba.njit(cache=True, error_model="numpy")
def quick_filter_passes(first, last, stamps, c, entry, exit_, atr, bar_s, starts, floors, ticks, cfg) -> bool:
    """The quick filter's verdict on the window ``first..last``: the same engine from a fresh account, judged."""
    equity, buf, k = window_run(first, last, stamps, c, entry, exit_, atr, bar_s, starts, floors, ticks, cfg)
    metrics = window_metrics(equity, stamps[first : last + 1], cfg[C_CAPITAL], buf, k)
    failed = threshold_failures(metrics, cfg[C_THRESHOLDS : C_THRESHOLDS + N_THRESHOLDS])
    return not failed.any()


@numba.njit(cache=True, error_model="numpy")
def window_metrics(equity: np.ndarray, stamps: np.ndarray, capital: float, buf: np.ndarray, k: int) -> np.ndarray:
    """The quick filter's metrics (``THRESHOLD_METRICS`` order; NaN = undefined) by the formulas of
    ``src.backtesting.performance``. ``stamps``: open times (seconds) of the bars of ``equity``."""
    out = np.full(N_THRESHOLDS, np.nan)
    m = equity.shape[0]
    final = equity[m - 1] if m else capital
    out[0] = 100.0 * (final / capital - 1.0)
    step = 86_400.0
    if m >= 2:
        step = np.median(np.diff(stamps))
    per_year = SECONDS_PER_YEAR / step
    returns = np.empty(m)
    prev = capital
    for i in range(m):
        returns[i] = (equity[i] - prev) / prev
        prev = equity[i]
    mean = np.nan
    std = np.nan
    downside = np.nan
    if m > 0:
        mean = returns.mean()
        downside = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))
    if m > 1:
        std = np.sqrt(np.sum((returns - mean) ** 2) / (m - 1))
    if std > 0.0:
        out[3] = mean / std * np.sqrt(per_year)
    if downside > 0.0:
        out[4] = mean / downside * np.sqrt(per_year)
    years = ((stamps[m - 1] - stamps[0]) + step) / SECONDS_PER_YEAR if m else 0.0
    cagr = np.nan
    if years > 0.0 and final > 0.0:
        cagr = (final / capital) ** (1.0 / years) - 1.0
    peak = capital
    depth = 0.0
    for i in range(m):
        peak = max(peak, equity[i])
        depth = min(depth, equity[i] / peak - 1.0)
    out[6] = 100.0 * depth
    if depth < 0.0:
        out[5] = cagr / abs(depth)
    out[8] = k
    out[7] = 0.0
    if k > 0:
        wins = 0
        gross_win = 0.0
        gross_loss = 0.0
        run = 0
        longest = 0
        held = 0.0
        for j in range(k):
            pnl = buf[j, T_PNL]
            if pnl > 0.0:
                wins += 1
                gross_win += pnl
                run = 0
            else:
                gross_loss += -pnl
                run += 1
                longest = max(longest, run)
            held += (buf[j, T_X_AT] - buf[j, T_E_AT]) / 3600.0
        out[1] = 100.0 * wins / k
        if gross_loss > 0.0:
            out[2] = gross_win / gross_loss
        elif gross_win > 0.0:
            out[2] = np.inf
        out[7] = longest
        out[9] = held / k
    return out


@numba.njit(cache=True, error_model="numpy")
def threshold_failures(metrics: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Which thresholds fail (``QuickFilterThresholds.failures``): an undefined metric fails a checked threshold."""
    failed = np.zeros(N_THRESHOLDS, dtype=np.bool_)
    for i in range(N_THRESHOLDS):
        limit = thresholds[i]
        if np.isnan(limit):
            continue
        value = metrics[i]
        if np.isnan(value):
            failed[i] = True
        elif i == 6:
            failed[i] = not (-value <= limit)
        elif i == 7 or i == 9:
            failed[i] = not (value <= limit)
        else:
            failed[i] = not (value >= limit)
    return failed


# --- the Python side -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Every rule the engine applies; ``engine_config_from_settings`` builds it from the bot's settings.

    Percent fields are percents (``slippage_pct=0.05`` = 0.05 %). ``exit_policy=None``: the strategy's own.
    Risk rules switched off for research use values that never bind (``without_risk_rules``).
    """

    initial_capital: float = 10_000_000.0
    fee_rate: float = 0.0005
    slippage_pct: float = 0.05
    min_order_krw: float = 5000.0
    use_tick_sizes: bool = True
    exit_policy: ExitPolicy | None = None
    position_sizing: str = "fixed"  # or "half_kelly"
    position_fraction_pct: float = 20.0
    kelly_min_pct: float = 5.0
    kelly_max_pct: float = 30.0
    kelly_min_trades: int = 20
    max_position_pct: float = 40.0
    cash_reserve_pct: float = 10.0
    min_trade_interval_hours: float = 4.0
    max_trades_per_day: int = 5
    max_positions: int = 3
    daily_loss_limit_pct: float = 10.0
    weekly_loss_limit_pct: float = 15.0
    position_check_minutes: int = 15
    quick_filter: bool = True
    quick_filter_lookback_days: int = 30
    quick_filter_tier: str = "moderate"
    quick_filter_thresholds: tuple[float | None, ...] = field(default=())
    risk_rules: bool = True

    def without_risk_rules(self) -> EngineConfig:
        """Spacing, daily cap, position caps, cash reserve and breakers off (sizing and minimum order stay)."""
        from dataclasses import replace

        return replace(
            self,
            risk_rules=False,
            min_trade_interval_hours=0.0,
            max_trades_per_day=10**9,
            max_positions=10**9,
            max_position_pct=100.0,
            cash_reserve_pct=0.0,
            daily_loss_limit_pct=math.inf,
            weekly_loss_limit_pct=math.inf,
        )

    def policy(self, fallback: ExitPolicy) -> ExitPolicy:
        return self.exit_policy if self.exit_policy is not None else fallback

    def vector(self, policy: ExitPolicy, gate: bool | None = None) -> np.ndarray:
        cfg = np.zeros(N_CFG)
        cfg[C_CAPITAL] = self.initial_capital
        cfg[C_FEE] = self.fee_rate
        cfg[C_SLIP] = self.slippage_pct / 100.0
        cfg[C_MIN_ORDER] = self.min_order_krw
        cfg[C_TICKS] = 1.0 if self.use_tick_sizes else 0.0
        cfg[C_SL_PCT] = policy.stop_loss_pct
        cfg[C_TP_PCT] = policy.take_profit_pct
        cfg[C_TRAIL_PCT] = policy.trailing_stop_pct
        cfg[C_STOP_ATR] = policy.stop_atr
        cfg[C_TARGET_ATR] = policy.target_atr
        cfg[C_MAX_HOLD_H] = policy.max_hold_hours
        cfg[C_KELLY] = 1.0 if self.position_sizing == "half_kelly" else 0.0
        cfg[C_FRACTION_PCT] = self.position_fraction_pct
        cfg[C_KELLY_MIN] = self.kelly_min_pct
        cfg[C_KELLY_MAX] = self.kelly_max_pct
        cfg[C_KELLY_TRADES] = self.kelly_min_trades
        cfg[C_MAX_POS_PCT] = self.max_position_pct
        cfg[C_RESERVE_PCT] = self.cash_reserve_pct
        cfg[C_SPACING_S] = self.min_trade_interval_hours * 3600.0
        cfg[C_MAX_PER_DAY] = self.max_trades_per_day
        cfg[C_MAX_POSITIONS] = self.max_positions
        cfg[C_DAILY_LIMIT] = self.daily_loss_limit_pct
        cfg[C_WEEKLY_LIMIT] = self.weekly_loss_limit_pct
        cfg[C_CHECK_S] = self.position_check_minutes * 60.0
        cfg[C_LOOKBACK_S] = self.quick_filter_lookback_days * DAY_S
        cfg[C_GATE] = 1.0 if (self.quick_filter if gate is None else gate) else 0.0
        thresholds = self.quick_filter_thresholds or _tier_vector(self.quick_filter_tier)
        cfg[C_THRESHOLDS : C_THRESHOLDS + N_THRESHOLDS] = [np.nan if v is None else float(v) for v in thresholds]
        return cfg

    def describe(self, policy: ExitPolicy) -> dict[str, Any]:
        """The rules used, for the JSON output and the report."""
        return {
            "initial_capital": self.initial_capital,
            "fee_rate": self.fee_rate,
            "slippage_pct": self.slippage_pct,
            "min_order_krw": self.min_order_krw,
            "tick_sizes": self.use_tick_sizes,
            "exit_policy": {
                "stop_loss_pct": policy.stop_loss_pct,
                "take_profit_pct": policy.take_profit_pct,
                "trailing_stop_pct": policy.trailing_stop_pct,
                "stop_atr": policy.stop_atr,
                "target_atr": policy.target_atr,
                "max_hold_hours": policy.max_hold_hours,
            },
            "position_sizing": self.position_sizing,
            "position_fraction_pct": self.position_fraction_pct,
            "kelly_min_pct": self.kelly_min_pct,
            "kelly_max_pct": self.kelly_max_pct,
            "kelly_min_trades": self.kelly_min_trades,
            "risk_rules": self.risk_rules,
            "max_position_pct": self.max_position_pct,
            "cash_reserve_pct": self.cash_reserve_pct,
            "min_trade_interval_hours": self.min_trade_interval_hours,
            "max_trades_per_day": self.max_trades_per_day,
            "max_positions": self.max_positions,
            "daily_loss_limit_pct": self.daily_loss_limit_pct,
            "weekly_loss_limit_pct": self.weekly_loss_limit_pct,
            "position_check_minutes": self.position_check_minutes,
            "quick_filter": self.quick_filter,
            "quick_filter_lookback_days": self.quick_filter_lookback_days,
            "quick_filter_tier": self.quick_filter_tier,
        }


def _tier_vector(tier: str) -> tuple[float | None, ...]:
    return TIERS[tier].vector()


def run_window(inputs: EngineInputs, first: int, last: int, cfg: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``window_run`` from Python: (equity, trade buffer, trade count) of a fresh account over ``first..last``."""
    run: Callable[..., tuple[np.ndarray, np.ndarray, int]] = window_run  # a numba dispatcher
    return run(first, last, *inputs.args(), cfg)


def check_moments(index: pd.DatetimeIndex, bar_seconds: float, check_minutes: int) -> np.ndarray:
    """Per bar, the moment of the position check that sees its close (``-inf``: none does); the compiled loop
    computes the same for the bars it looks at. Checks run at multiples of the interval since the epoch."""
    stamps = (index.as_unit("ns").asi8 // 1_000_000_000).astype(np.float64)
    close_at = stamps + bar_seconds
    later = np.append(close_at[1:], close_at[-1:] + bar_seconds)
    interval = check_minutes * 60.0
    check = np.ceil(close_at / interval) * interval
    return np.where(check < later, check, -np.inf)


@dataclass(frozen=True, slots=True)
class TradeArrays:
    """The closed trades as plain arrays (what the metrics need, without pandas overhead)."""

    pnl: np.ndarray
    pnl_pct: np.ndarray
    fees: np.ndarray
    holding_hours: np.ndarray


@dataclass(slots=True)
class EngineRun:
    """The simulation's outcome over the traded bars ``first..``: equity at every close, trades, block counts."""

    index: pd.DatetimeIndex  # open times of the traded bars
    equity_values: np.ndarray
    in_market: np.ndarray
    buffer: np.ndarray
    blocked: dict[str, int]
    attempts: int
    refused: int
    safe_mode_entered: int
    bar_seconds: float

    @property
    def equity(self) -> pd.Series:
        return pd.Series(self.equity_values, index=self.index, name="equity")

    @property
    def fees_paid(self) -> float:
        return float(self.buffer[:, T_E_FEE].sum() + self.buffer[:, T_X_FEE].sum())

    def trade_arrays(self) -> TradeArrays:
        return trade_arrays(self.buffer)

    def trade_frame(self, candles_index: pd.DatetimeIndex) -> pd.DataFrame:
        b = self.buffer
        arrays = self.trade_arrays()
        entry_bar, exit_bar = b[:, T_E_BAR].astype(np.int64), b[:, T_X_BAR].astype(np.int64)
        reasons = [EXIT_REASON_OF_CODE[int(code)].value for code in b[:, T_REASON]]
        return pd.DataFrame(
            {
                "entry_bar": entry_bar,
                "exit_bar": exit_bar,
                "entry_time": pd.to_datetime(b[:, T_E_AT].astype(np.int64), unit="s", utc=True),
                "exit_time": pd.to_datetime(b[:, T_X_AT].astype(np.int64), unit="s", utc=True),
                "entry_candle": candles_index[entry_bar],
                "exit_candle": candles_index[exit_bar],
                "entry_price": b[:, T_E_PX],
                "exit_price": b[:, T_X_PX],
                "units": b[:, T_VOLUME],
                "cost": b[:, T_E_FUNDS] + b[:, T_E_FEE],
                "proceeds": b[:, T_X_FUNDS] - b[:, T_X_FEE],
                "pnl": arrays.pnl,
                "pnl_pct": arrays.pnl_pct,
                "fees": arrays.fees,
                "stop_price": b[:, T_STOP],
                "target_price": b[:, T_TARGET],
                "exit_reason": pd.Series(reasons, dtype=object),
            }
        )


@dataclass(frozen=True, slots=True)
class EngineInputs:
    """Everything the compiled loop reads, built once per candle frame and signal set."""

    stamps: np.ndarray  # open times, epoch seconds
    close: np.ndarray
    entry: np.ndarray
    exit: np.ndarray
    atr: np.ndarray
    bar_seconds: float

    @classmethod
    def of(cls, df: pd.DataFrame, entry: np.ndarray, exit_: np.ndarray, atr: np.ndarray, bar_s: float) -> EngineInputs:
        return cls(
            (df.index.as_unit("ns").asi8 // 1_000_000_000).astype(np.float64),
            np.ascontiguousarray(df["close"].to_numpy(dtype=np.float64)),
            np.ascontiguousarray(entry, dtype=np.bool_),
            np.ascontiguousarray(exit_, dtype=np.bool_),
            np.ascontiguousarray(atr, dtype=np.float64),
            bar_s,
        )

    def args(self) -> tuple[Any, ...]:
        return (
            self.stamps, self.close, self.entry, self.exit, self.atr, float(self.bar_seconds), TABLE_STARTS,
            TICK_FLOORS, TICK_SIZES,
        )  # fmt: skip


def run_engine(
    inputs: EngineInputs, cfg: np.ndarray, first: int, index: pd.DatetimeIndex, rule: EngineInputs | None = None
) -> EngineRun:
    """Simulate bars ``first..`` (earlier bars are history only: signals and the quick filter's window).
    ``rule``: the candidate strategy's signals when the strategy is the ai strategy (two-stage quick filter)."""
    n = len(inputs.close)
    st = _new_state(cfg[C_CAPITAL])
    equity = np.empty(n - first)
    blocked = np.zeros(N_BLOCKS, dtype=np.int64)
    buf = np.empty((1024, N_COLS))
    a = inputs.args()
    simulate: Callable[..., tuple[np.ndarray, int]] = _simulate  # a numba dispatcher
    if cfg[C_GATE] > 0.0:  # the gate judges the candidate strategy's signals (ai strategy), else the strategy's
        gate = rule or inputs
        buf, k = simulate(
            first, n - 1, *a, cfg, st, equity, blocked, buf, gate.entry, gate.exit, gate.atr, rule is not None
        )  # fmt: skip
    else:
        buf, k = simulate(first, n - 1, *a, cfg, st, equity, blocked, buf, None, None, None, False)
    buf = buf[:k].copy()
    in_market = _in_market(n - first, first, buf)
    return EngineRun(
        index=index[first:],
        equity_values=equity,
        in_market=in_market,
        buffer=buf,
        blocked={rule: int(blocked[i]) for i, rule in enumerate(BLOCK_RULES)},
        attempts=int(blocked[B_ATTEMPTS]),
        refused=int(blocked[B_BLOCKED]),
        safe_mode_entered=int(st[S_SAFE_ENTERED]),
        bar_seconds=inputs.bar_seconds,
    )


def trade_arrays(b: np.ndarray) -> TradeArrays:
    cost = b[:, T_E_FUNDS] + b[:, T_E_FEE]
    proceeds = b[:, T_X_FUNDS] - b[:, T_X_FEE]
    return TradeArrays(
        b[:, T_PNL], 100.0 * (proceeds / cost - 1.0), b[:, T_E_FEE] + b[:, T_X_FEE],
        (b[:, T_X_AT] - b[:, T_E_AT]) / 3600.0,
    )  # fmt: skip


def in_market(m: int, first: int, buf: np.ndarray) -> np.ndarray:
    return _in_market(m, first, buf)


def _in_market(m: int, first: int, buf: np.ndarray) -> np.ndarray:
    """Bars whose close found a position held (entered at or before the close, not yet sold at it)."""
    entry = buf[:, T_E_BAR].astype(np.int64) - first
    exit_ = buf[:, T_X_BAR].astype(np.int64) - first
    marks = np.bincount(entry, minlength=m + 1) - np.bincount(exit_, minlength=m + 1)
    return np.cumsum(marks[:m]) > 0
