"""The one exit rule: where a position's stop and target sit, and which exit is due at a price.

Compiled with numba so that the backtest engine calls these very functions inside its loop; the live
position check (``RiskManager.exits_due``) and ``PositionService`` call the same functions from Python.
Prices and levels are plain floats (KRW prices and levels are far inside float64's exact range); levels
are rounded to 0.01 KRW in both worlds. NaN means "no such level".
"""

from __future__ import annotations

import math
from decimal import Decimal

import numba
import numpy as np

from src.domain.exits import ExitPolicy, ExitReason

EXIT_NONE, EXIT_STOP_LOSS, EXIT_TRAILING_STOP, EXIT_TAKE_PROFIT, EXIT_TIME_OUT, EXIT_SIGNAL, EXIT_END = range(7)
EXIT_REASON_OF_CODE: dict[int, ExitReason] = {
    EXIT_STOP_LOSS: ExitReason.STOP_LOSS,
    EXIT_TRAILING_STOP: ExitReason.TRAILING_STOP,
    EXIT_TAKE_PROFIT: ExitReason.TAKE_PROFIT,
    EXIT_TIME_OUT: ExitReason.TIME_OUT,
    EXIT_SIGNAL: ExitReason.SIGNAL,
    EXIT_END: ExitReason.END,
}


@numba.njit(cache=True)
def exit_levels(
    fill: float, atr: float, stop_loss_pct: float, take_profit_pct: float, stop_atr: float, target_atr: float
) -> tuple[float, float]:
    """(stop, target) for a position entered at ``fill`` when the decision bar's ATR(14) was ``atr``."""
    stop = np.nan
    target = np.nan
    if stop_loss_pct > 0.0:
        stop = fill * (1.0 - stop_loss_pct / 100.0)
    if stop_atr > 0.0 and atr > 0.0 and not np.isnan(atr):
        by_atr = fill - stop_atr * atr
        stop = by_atr if np.isnan(stop) else max(stop, by_atr)
    if take_profit_pct > 0.0:
        target = fill * (1.0 + take_profit_pct / 100.0)
    if target_atr > 0.0 and atr > 0.0 and not np.isnan(atr):
        by_atr = fill + target_atr * atr
        target = by_atr if np.isnan(target) else min(target, by_atr)
    if not np.isnan(stop):
        stop = np.nan if stop <= 0.0 else np.round(stop, 2)
    if not np.isnan(target):
        target = np.round(target, 2)
    return stop, target


@numba.njit(cache=True)
def trailing_level(highest: float, trailing_stop_pct: float) -> float:
    """The trailing stop below the highest price seen since entry (NaN when trailing is off)."""
    if trailing_stop_pct <= 0.0:
        return np.nan
    return np.round(highest * (1.0 - trailing_stop_pct / 100.0), 2)


@numba.njit(cache=True)
def exit_code(
    price: float,
    low: float,
    high: float,
    stop: float,
    target: float,
    trailing: float,
    held_hours: float,
    max_hold_hours: float,
) -> int:
    """Which exit is due (``EXIT_*``; ``EXIT_NONE`` if none) for a check that saw ``price``, and ``low``/``high``
    (the lowest and highest price since the last check; pass ``price`` for both when only a price is known).
    When several are touched the stop wins (the conservative reading): stop-loss, trailing stop, take-profit,
    then time-out. The trailing stop counts only above the stop."""
    low = min(low, price)
    high = max(high, price)
    has_stop = not np.isnan(stop)
    has_trailing = not np.isnan(trailing)
    if has_stop and low <= stop and (not has_trailing or trailing <= stop):
        return EXIT_STOP_LOSS
    if has_trailing and (not has_stop or trailing > stop) and low <= trailing:
        return EXIT_TRAILING_STOP
    if not np.isnan(target) and high >= target:
        return EXIT_TAKE_PROFIT
    if max_hold_hours > 0.0 and held_hours >= max_hold_hours:
        return EXIT_TIME_OUT
    return EXIT_NONE


def _float(value: Decimal | None) -> float:
    return math.nan if value is None else float(value)


def _decimal(value: float) -> Decimal | None:
    return None if math.isnan(value) else Decimal(repr(float(value)))


def levels_for(fill: Decimal, atr: Decimal | None, policy: ExitPolicy) -> tuple[Decimal | None, Decimal | None]:
    """``exit_levels`` for the live path: Decimal in, Decimal (or None) out."""
    stop, target = exit_levels(
        float(fill), _float(atr), policy.stop_loss_pct, policy.take_profit_pct, policy.stop_atr, policy.target_atr
    )
    return _decimal(stop), _decimal(target)


def trailing_for(highest: Decimal, policy_pct: float) -> Decimal | None:
    return _decimal(trailing_level(float(highest), policy_pct))


def exit_reason_for(
    price: Decimal,
    *,
    low: Decimal | None = None,
    high: Decimal | None = None,
    stop: Decimal | None,
    target: Decimal | None,
    trailing: Decimal | None,
    held_hours: float,
    max_hold_hours: float,
) -> ExitReason | None:
    """``exit_code`` for the live path: the due exit's reason, or None."""
    p = float(price)
    code = exit_code(
        p,
        p if low is None else float(low),
        p if high is None else float(high),
        _float(stop),
        _float(target),
        _float(trailing),
        float(held_hours),
        float(max_hold_hours),
    )
    return EXIT_REASON_OF_CODE.get(int(code))
