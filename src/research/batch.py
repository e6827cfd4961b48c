"""Many parameter sets of one strategy evaluated in one compiled call over one candle array.

``evaluate_batch(data, strategy_name, param_sets, config)`` returns, per parameter set, the metrics a single
backtest of that set reports (``Backtester(config).run(data.frame(), strategy, start)``), bit for bit:

- signals: the strategy's own (``Strategy.batch_signals``: ``generate_signals`` for each set, or the strategy's
  way of sharing the parameter-free work across sets over the same code), once per distinct set of signal
  parameters (the exit parameters do not change the signals, so an exit sweep shares them), in chunks whose
  arrays stay under ``memory_mb``;
- simulation: the engine's own compiled bar loop (``src.backtesting.engine._simulate``, the function every
  backtest runs) called for each parameter set from one compiled kernel that loops the sets, with the exit
  policy of each set in its own configuration vector;
- metrics: ``PerformanceAnalyzer``'s formulas compiled, with numpy's pairwise summation, so the floats are the
  same as the single backtest's, not merely close.

Metrics are floats (``METRICS``); an undefined one (a Sharpe without returns, a profit factor without trades)
is NaN where the backtest report has ``null``. A profit factor without a losing trade is ``inf``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd

from src.backtesting.engine import (
    C_CAPITAL,
    N_BLOCKS,
    N_COLS,
    T_E_BAR,
    T_E_FEE,
    T_E_FUNDS,
    T_PNL,
    T_X_BAR,
    T_X_FEE,
    T_X_FUNDS,
    TABLE_STARTS,
    TICK_FLOORS,
    TICK_SIZES,
    EngineConfig,
    _new_state,
    _simulate,
)
from src.domain.exits import ExitPolicy
from src.exceptions import ConfigurationError
from src.research.data import ResearchData
from src.strategy.contract import Strategy
from src.strategy.params import EXIT_PARAMS, ParamValue
from src.strategy.registry import AI_STRATEGY, strategy_class

SECONDS_PER_YEAR = 365 * 86_400

METRICS: tuple[str, ...] = (
    "total_return_pct",
    "cagr_pct",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown_pct",
    "volatility_pct",
    "profit_factor",
    "win_rate_pct",
    "trades",
    "exposure_pct",
    "final_equity",
    "expectancy_pct",
    "fees_paid",
    "max_consecutive_losses",
)
(
    M_RETURN,
    M_CAGR,
    M_SHARPE,
    M_SORTINO,
    M_CALMAR,
    M_DRAWDOWN,
    M_VOLATILITY,
    M_PROFIT_FACTOR,
    M_WIN_RATE,
    M_TRADES,
    M_EXPOSURE,
    M_FINAL,
    M_EXPECTANCY,
    M_FEES,
    M_LOSING_STREAK,
) = range(len(METRICS))
N_METRICS = len(METRICS)

REFUSED = -1  # the signal group of a parameter set the strategy refuses
DEFAULT_MEMORY_MB = 64.0  # signal arrays of one chunk (entry and exit: 1 byte a bar each; distinct ATRs: 8 bytes)

Metrics = dict[str, float]

# --- compiled metrics (the formulas of src.backtesting.performance, numpy's summation order) -------------------


@numba.njit(cache=True, error_model="numpy")
def _block(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's sum of at most 128 values: one by one under 8, else 8 accumulators and the rest one by one."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    top = n - (n % 8)
    while i < top:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True, error_model="numpy")
def _half(n: int) -> int:
    half = n // 2
    return half - half % 8


@numba.njit(cache=True, error_model="numpy")
def _pairwise(a: np.ndarray, lo: int, n: int) -> float:
    """``np.sum(a[lo:lo+n])`` in numpy's order (halves split at a multiple of 8 down to blocks of 128, each
    summed by ``_block``), so the result is the same float. Written with an explicit stack: a recursive compiled
    function loaded from numba's on-disk cache crashes the process."""
    los = np.empty(64, dtype=np.int64)
    ns = np.empty(64, dtype=np.int64)
    right = np.zeros(64, dtype=np.bool_)  # the frame's left half is summed, its right half is running
    left = np.empty(64)
    d = 0
    los[0] = lo
    ns[0] = n
    right[0] = False
    while True:
        if ns[d] > 128:  # descend into the left half
            los[d + 1] = los[d]
            ns[d + 1] = _half(ns[d])
            right[d] = False
            d += 1
            right[d] = False
            continue
        val = _block(a, los[d], ns[d])
        while True:  # hand the sum up: a left half starts its sibling, a right half completes its parent
            if d == 0:
                return val
            d -= 1
            if not right[d]:
                left[d] = val
                right[d] = True
                half = _half(ns[d])
                los[d + 1] = los[d] + half
                ns[d + 1] = ns[d] - half
                d += 1
                right[d] = False
                break
            val = left[d] + val


@numba.njit(cache=True, error_model="numpy")
def _total(a: np.ndarray) -> float:
    return 0.0 + _pairwise(a, 0, a.shape[0])


@numba.njit(cache=True, error_model="numpy")
def _metrics(equity, buf, k, first, capital, per_year, years, scratch, out) -> None:  # fmt: skip
    """``PerformanceAnalyzer.analyze`` over ``equity`` (one value per traded bar) and the ``k`` round trips in
    ``buf``, into ``out`` (``METRICS`` order, NaN = undefined). ``scratch``: a work array as long as ``equity``."""
    m = equity.shape[0]
    final = equity[m - 1]
    out[M_FINAL] = final
    out[M_RETURN] = 100.0 * (final / capital - 1.0)
    cagr = np.nan
    if years > 0.0 and final > 0.0:
        cagr = (final / capital) ** (1.0 / years) - 1.0
    out[M_CAGR] = 100.0 * cagr
    # per-bar simple returns (the first from the capital)
    prev = capital
    for i in range(m):
        scratch[i] = (equity[i] - prev) / prev
        prev = equity[i]
    mean = _pairwise(scratch, 0, m) / m
    std = np.nan
    if m > 1:
        var = 0.0
        sq = np.empty(m)
        for i in range(m):
            d = scratch[i] - mean
            sq[i] = d * d
        var = _total(sq) / (m - 1)
        std = np.sqrt(var)
    for i in range(m):
        low = min(scratch[i], 0.0)
        scratch[i] = low * low
    downside = np.sqrt(_total(scratch[:m]) / m)
    out[M_SHARPE] = mean / std * np.sqrt(per_year) if std > 0.0 else np.nan
    out[M_SORTINO] = mean / downside * np.sqrt(per_year) if downside > 0.0 else np.nan
    out[M_VOLATILITY] = 100.0 * std * np.sqrt(per_year)
    peak = capital
    depth = 0.0
    for i in range(m):
        peak = max(peak, equity[i])
        depth = min(depth, equity[i] / peak - 1.0)
    drawdown_pct = 100.0 * depth
    out[M_DRAWDOWN] = drawdown_pct
    out[M_CALMAR] = cagr / abs(drawdown_pct / 100.0) if drawdown_pct < 0.0 else np.nan
    # round trips
    out[M_TRADES] = k
    held = 0
    for j in range(k):
        held += int(buf[j, T_X_BAR]) - int(buf[j, T_E_BAR])  # one position at a time: the spans are disjoint
    out[M_EXPOSURE] = 100.0 * (held / m)
    out[M_LOSING_STREAK] = 0.0
    out[M_FEES] = 0.0
    out[M_WIN_RATE] = np.nan
    out[M_PROFIT_FACTOR] = np.nan
    out[M_EXPECTANCY] = np.nan
    if k == 0:
        return
    wins = np.empty(k)
    losses = np.empty(k)
    pct = np.empty(k)
    fees = np.empty(k)
    n_win = 0
    n_loss = 0
    run = 0
    longest = 0
    for j in range(k):
        pnl = buf[j, T_PNL]
        cost = buf[j, T_E_FUNDS] + buf[j, T_E_FEE]
        proceeds = buf[j, T_X_FUNDS] - buf[j, T_X_FEE]
        pct[j] = 100.0 * (proceeds / cost - 1.0)
        fees[j] = buf[j, T_E_FEE] + buf[j, T_X_FEE]
        if pnl > 0.0:
            wins[n_win] = pnl
            n_win += 1
            run = 0
        else:
            losses[n_loss] = -pnl
            n_loss += 1
            run += 1
            longest = max(longest, run)
    gross_win = _total(wins[:n_win])
    gross_loss = _total(losses[:n_loss])
    out[M_WIN_RATE] = 100.0 * (n_win / k)
    if gross_loss > 0.0:
        out[M_PROFIT_FACTOR] = gross_win / gross_loss
    elif gross_win > 0.0:
        out[M_PROFIT_FACTOR] = np.inf
    out[M_EXPECTANCY] = _total(pct) / k
    out[M_FEES] = _total(fees)
    out[M_LOSING_STREAK] = longest


@numba.njit(cache=True, error_model="numpy")
def _batch_kernel(first, stamps, close, entries, exits, atrs, atr_of_row, row_of_set, cfgs, bar_s, starts, floors,
                  ticks, gate, per_year, years, out):  # fmt: skip
    """For each parameter set ``s``: the engine's bar loop over bars ``first..`` with the signals of row
    ``row_of_set[s]`` (its ATR: ``atrs[atr_of_row[row]]``) and the configuration ``cfgs[s]``, then its metrics
    into ``out[s]``."""
    n = close.shape[0]
    m = n - first
    equity = np.empty(m)
    scratch = np.empty(m)
    blocked = np.zeros(N_BLOCKS, dtype=np.int64)
    buf = np.empty((1024, N_COLS))
    for s in range(row_of_set.shape[0]):
        r = row_of_set[s]
        cfg = cfgs[s]
        st = _new_state(cfg[C_CAPITAL])
        blocked[:] = 0
        entry = entries[r]
        exit_ = exits[r]
        atr = atrs[atr_of_row[r]]
        if gate:  # the quick filter judges the strategy's own signals, as in run_engine
            buf, k = _simulate(first, n - 1, stamps, close, entry, exit_, atr, bar_s, starts, floors, ticks, cfg,
                               st, equity, blocked, buf, entry, exit_, atr, False)  # fmt: skip
        else:
            buf, k = _simulate(first, n - 1, stamps, close, entry, exit_, atr, bar_s, starts, floors, ticks, cfg,
                               st, equity, blocked, buf, None, None, None, False)  # fmt: skip
        _metrics(equity, buf, k, first, cfg[C_CAPITAL], per_year, years, scratch, out[s])


# --- the Python side -------------------------------------------------------------------------------------------


def median_step(times_ns: np.ndarray) -> float:
    """``performance.bar_seconds`` on open times in nanoseconds."""
    if len(times_ns) < 2:
        return 86_400.0
    return float(np.median(np.diff(times_ns))) / 1e9


def resolve_sets(
    cls: type[Strategy], param_sets: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, ParamValue]], list[int], list[dict[str, ParamValue]]]:
    """Each set validated against the strategy's space (defaults filled in), the signal group of each set, and
    one representative set per group (the exit parameters do not change the signals; whether the ATR is needed
    does, so it is part of the group's key). A set the strategy itself refuses (its ``__init__`` raises a
    ``ConfigurationError``, e.g. a fast average not faster than the slow one) is in group ``REFUSED``: it is not
    evaluated and has no metrics (NaN, no trades). A value outside the declared space is an error."""
    exit_names = set(EXIT_PARAMS.names)
    resolved: list[dict[str, ParamValue]] = []
    groups: list[int] = []
    representatives: list[dict[str, ParamValue]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for raw in param_sets:
        params = cls.space.resolve(raw, cls.name)
        try:
            cls.from_params(params)
        except ConfigurationError:
            resolved.append(params)
            groups.append(REFUSED)
            continue
        uses_atr = float(params["stop_atr"]) > 0 or float(params["target_atr"]) > 0
        key = (*((k, v) for k, v in params.items() if k not in exit_names), uses_atr)
        if key not in seen:
            seen[key] = len(representatives)
            representatives.append(params)
        resolved.append(params)
        groups.append(seen[key])
    return resolved, groups, representatives


def evaluate_batch(
    data: ResearchData,
    strategy_name: str,
    param_sets: Sequence[Mapping[str, Any]],
    config: EngineConfig,
    *,
    strategy_path: Path | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: Callable[[int], None] | None = None,
) -> list[Metrics]:
    """The metrics of a backtest of each parameter set (``METRICS``; NaN = undefined), in the order given.

    The bars traded are ``data.start..`` (earlier bars are warm-up), the rules ``config`` (its ``exit_policy``,
    when set, overrides every set's exit parameters, as in a backtest). ``strategy_path``: where users'
    strategies live (``STRATEGY_PATH``). ``progress(sets_done)`` is told after each chunk."""
    if strategy_name == AI_STRATEGY:
        raise ConfigurationError("the ai strategy cannot be searched (its decisions are not a function of parameters)")
    cls = strategy_class(strategy_name, strategy_path)
    if not param_sets:
        return []
    resolved, groups, representatives = resolve_sets(cls, param_sets)
    cfgs = np.stack(
        [
            config.vector(config.policy(cls.from_params(p).exit_policy if g != REFUSED else ExitPolicy()))
            for p, g in zip(resolved, groups, strict=True)
        ]
    )
    df = data.frame()
    n, first = len(data), data.start
    stamps = data.stamps
    close = np.ascontiguousarray(data.close)
    bar_s = median_step(data.times_ns)
    traded = data.times_ns[first:]
    step = median_step(traded)
    per_year = SECONDS_PER_YEAR / step
    index = data.index
    years = ((index[-1] - index[first]).total_seconds() + step) / SECONDS_PER_YEAR
    rows_per_chunk = max(1, int(memory_mb * 1024 * 1024 // (n * 2)))
    out = np.full((len(resolved), N_METRICS), np.nan)
    out[:, M_TRADES] = 0.0
    out[:, M_LOSING_STREAK] = 0.0
    members: list[list[int]] = [[] for _ in representatives]
    for i, g in enumerate(groups):
        if g != REFUSED:
            members[g].append(i)
    done = 0
    for lo in range(0, len(representatives), rows_per_chunk):
        chunk = range(lo, min(lo + rows_per_chunk, len(representatives)))
        entries = np.empty((len(chunk), n), dtype=np.bool_)
        exits = np.empty((len(chunk), n), dtype=np.bool_)
        distinct_atrs: list[np.ndarray] = []  # the ATR is usually one array (ATR(14)) or none (all NaN)
        atr_of_row = np.empty(len(chunk), dtype=np.int64)
        sets: list[int] = []
        rows: list[int] = []
        batch = cls.batch_signals(df, [representatives[g] for g in chunk])
        for row, (g, signals) in enumerate(zip(chunk, batch, strict=True)):
            entries[row], exits[row] = signals.entry, signals.exit
            atr_of_row[row] = _distinct(distinct_atrs, signals.atr)
            sets.extend(members[g])
            rows.extend([row] * len(members[g]))
        chunk_out = np.empty((len(sets), N_METRICS))
        _batch_kernel(
            first, stamps, close, entries, exits, np.stack(distinct_atrs), atr_of_row, np.asarray(rows, dtype=np.int64),
            np.ascontiguousarray(cfgs[sets]), bar_s, TABLE_STARTS, TICK_FLOORS, TICK_SIZES, bool(config.quick_filter),
            per_year, years, chunk_out,
        )  # fmt: skip
        out[sets] = chunk_out
        done += len(sets)
        if progress is not None:
            progress(done)
    return [_as_metrics(row) for row in out]


def _distinct(arrays: list[np.ndarray], values: np.ndarray) -> int:
    """The index of ``values`` in ``arrays`` (NaN equal to NaN), appended when new."""
    for i, known in enumerate(arrays):
        if known is values or np.array_equal(known, values, equal_nan=True):
            return i
    arrays.append(np.ascontiguousarray(values, dtype=np.float64))
    return len(arrays) - 1


def _as_metrics(row: np.ndarray) -> Metrics:
    metrics = {name: float(value) for name, value in zip(METRICS, row, strict=True)}
    metrics["trades"] = int(metrics["trades"])
    metrics["max_consecutive_losses"] = int(metrics["max_consecutive_losses"])
    return metrics


def single_metrics(data: ResearchData, strategy: Strategy, config: EngineConfig) -> Metrics:
    """The same metrics from one ordinary backtest (``Backtester.run``): the reference ``evaluate_batch`` equals,
    and the path for a strategy that cannot be batched."""
    from src.backtesting.backtester import Backtester

    start = None if data.start == 0 else pd.Timestamp(data.times_ns[data.start], unit="ns", tz="UTC")
    result = Backtester(config).run(data.frame(), strategy, start)
    return {name: _number(result.metrics.get(name)) for name in METRICS}


def _number(value: Any) -> float:
    if value is None:
        return float("nan")
    return value if isinstance(value, int) else float(value)
