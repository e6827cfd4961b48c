"""Is a backtest's result robust, and is it better than chance? Pure functions: arrays in, numbers out.

- ``monte_carlo``: the trade sequence resampled ``runs`` times (``reshuffle``: the same trades in a random order;
  ``bootstrap``: drawn with replacement; ``block``: circular blocks of consecutive trades drawn with replacement,
  which keeps streaks), with the 5th, 50th and 95th percentiles of the total return, the maximum drawdown and the
  longest losing streak, and an equity fan. Each trade is its return on the equity before it
  (``trade_returns_on_equity``), so compounding the original order gives the backtest's own final equity, and a
  reshuffle keeps the total return and moves only the path.
- ``random_entry_test``: the significance of the trades against random entries with the same exposure: the same
  number of trades with the same holding times (in bars), placed at random, non-overlapping entry bars, costed
  with the same fee and slippage. The p-value is the share of random placements whose compounded return is at
  least the strategy's, ``(1 + hits) / (1 + runs)``.
- ``deflated_sharpe``: the deflated Sharpe ratio (Bailey and Lopez de Prado, 2014): the probability that the
  true Sharpe ratio is above the best one expected from ``trials`` unskilled trials whose Sharpe ratios vary
  with ``trials_sharpe_variance``, given the returns' skewness and kurtosis and their number.
- ``probability_of_overfitting``: the probability of backtest overfitting by combinatorially symmetric
  cross-validation (CSCV; Bailey, Borwein, Lopez de Prado and Zhu, 2015) over a matrix of per-period returns
  (rows: periods, columns: the trials of a search).

Every random draw comes from ``numpy.random.default_rng(seed)``: the same seed gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from itertools import combinations
from statistics import NormalDist
from typing import Any

import numba
import numpy as np

PERCENTILES = (5, 50, 95)
FAN_PERCENTILES = (5, 25, 50, 75, 95)
FAN_PATHS = 2_000  # the equity fan is drawn from the first paths (the percentiles of the metrics use all runs)
CHUNK_CELLS = 2_000_000  # paths x trades resampled per pass: bounded memory for any number of runs
EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()

Progress = Callable[[int], None]  # runs done so far


class ResampleMethod(StrEnum):
    RESHUFFLE = "reshuffle"
    BOOTSTRAP = "bootstrap"
    BLOCK = "block"


def trade_returns_on_equity(pnl: np.ndarray, initial_capital: float) -> np.ndarray:
    """Each trade's profit over the realised equity before it (trades in the order they closed): compounding
    these gives ``initial + sum(pnl)`` exactly."""
    pnl = np.asarray(pnl, dtype=np.float64)
    before = initial_capital + np.concatenate(([0.0], np.cumsum(pnl)[:-1]))
    if np.any(before <= 0):
        raise ValueError("the equity before a trade is not positive; trade returns are undefined")
    return pnl / before


@numba.njit(cache=True, error_model="numpy")
def _path_metrics(
    returns: np.ndarray, index: np.ndarray, total: np.ndarray, drawdown: np.ndarray, streak: np.ndarray
) -> None:  # pragma: no cover - compiled
    for row in range(index.shape[0]):
        equity = 1.0
        peak = 1.0
        deepest = 0.0
        run = 0
        longest = 0
        for k in range(index.shape[1]):
            r = returns[index[row, k]]
            equity *= 1.0 + r
            if equity > peak:
                peak = equity
            depth = equity / peak - 1.0
            if depth < deepest:
                deepest = depth
            if r <= 0.0:
                run += 1
                if run > longest:
                    longest = run
            else:
                run = 0
        total[row] = equity - 1.0
        drawdown[row] = deepest
        streak[row] = longest


@numba.njit(cache=True)
def _shuffled_rows(uniform: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """One Fisher-Yates permutation of ``0..n-1`` per row, driven by the given uniforms (so by the seed)."""
    rows, n = uniform.shape
    index = np.empty((rows, n), dtype=np.int64)
    for row in range(rows):
        for i in range(n):
            index[row, i] = i
        for i in range(n - 1, 0, -1):
            j = int(uniform[row, i] * (i + 1))
            index[row, i], index[row, j] = index[row, j], index[row, i]
    return index


def resample_indices(rng: np.random.Generator, n: int, rows: int, method: ResampleMethod, block: int) -> np.ndarray:
    """``rows`` index sequences of length ``n`` into the trades."""
    if method is ResampleMethod.RESHUFFLE:
        return _shuffled_rows(rng.random((rows, n)))
    if method is ResampleMethod.BOOTSTRAP:
        return rng.integers(0, n, size=(rows, n), dtype=np.int64)
    blocks = -(-n // block)
    starts = rng.integers(0, n, size=(rows, blocks, 1), dtype=np.int64)
    return ((starts + np.arange(block, dtype=np.int64)) % n).reshape(rows, blocks * block)[:, :n]


def default_block(n: int) -> int:
    """Block length for the block bootstrap: about the cube root of the number of trades (at least 2)."""
    return max(2, round(n ** (1 / 3)))


@dataclass(frozen=True, slots=True)
class MonteCarloResult:
    method: ResampleMethod
    runs: int
    seed: int | None
    trades: int
    block: int | None
    observed: dict[str, float]  # the backtest's own order
    percentiles: dict[str, dict[str, float]]  # metric -> {"5": v, "50": v, "95": v}
    fan: dict[str, list[float]]  # percentile -> equity (1.0 = start) after each trade, from the first FAN_PATHS
    samples: dict[str, np.ndarray]  # metric -> one value per run

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.value,
            "runs": self.runs,
            "seed": self.seed,
            "trades": self.trades,
            "block": self.block,
            "observed": self.observed,
            "percentiles": self.percentiles,
            "fan": self.fan,
            "probability_of_loss": float(np.mean(self.samples["total_return"] < 0)) if self.runs else None,
        }


def _metrics_of(total: np.ndarray, drawdown: np.ndarray, streak: np.ndarray) -> dict[str, np.ndarray]:
    return {"total_return": 100.0 * total, "max_drawdown": 100.0 * drawdown, "longest_losing_streak": streak}


def monte_carlo(
    returns: np.ndarray,
    *,
    runs: int = 1000,
    method: ResampleMethod = ResampleMethod.RESHUFFLE,
    seed: int | None = None,
    block: int | None = None,
    progress: Progress | None = None,
) -> MonteCarloResult:
    """``runs`` resampled trade sequences of ``returns`` (each trade's return on equity, a fraction). Total return
    and maximum drawdown are percent (drawdown <= 0), the streak is in trades."""
    returns = np.ascontiguousarray(returns, dtype=np.float64)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if not np.all(np.isfinite(returns)) or np.any(returns <= -1.0):
        raise ValueError("trade returns must be finite and above -100%")
    n = len(returns)
    method = ResampleMethod(method)
    size = (block or default_block(n)) if method is ResampleMethod.BLOCK else None
    if size is not None and size < 1:
        raise ValueError(f"block must be >= 1, got {size}")
    one = np.empty(1), np.empty(1), np.empty(1, dtype=np.int64)
    _path_metrics(returns, np.arange(n, dtype=np.int64).reshape(1, n), *one)
    observed = {key: float(value[0]) for key, value in _metrics_of(*one).items()}
    total = np.zeros(runs)
    drawdown = np.zeros(runs)
    streak = np.zeros(runs, dtype=np.int64)
    fan_paths: np.ndarray | None = None
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // max(n, 1))
    done = 0
    while done < runs and n:
        rows = min(chunk, runs - done)
        index = resample_indices(rng, n, rows, method, size or 1)
        part = slice(done, done + rows)
        _path_metrics(returns, index, total[part], drawdown[part], streak[part])
        if fan_paths is None:
            fan_paths = np.cumprod(1.0 + returns[index[:FAN_PATHS]], axis=1)
        done += rows
        if progress is not None:
            progress(done)
    samples = _metrics_of(total, drawdown, streak)
    percentiles = {
        key: {str(q): float(v) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)}
        for key, values in samples.items()
    }
    fan: dict[str, list[float]] = {}
    if fan_paths is not None:
        levels = np.percentile(fan_paths, FAN_PERCENTILES, axis=0)
        fan = {str(q): [1.0, *row.tolist()] for q, row in zip(FAN_PERCENTILES, levels, strict=True)}
    fan["observed"] = [1.0, *np.cumprod(1.0 + returns).tolist()]
    return MonteCarloResult(method, runs, seed, n, size, observed, percentiles, fan, samples)


# --- significance against random entries ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignificanceResult:
    p_value: float
    runs: int
    seed: int | None
    observed_return_pct: float  # the strategy's trades, compounded at full size
    random_return_pct: dict[str, float]  # percentiles of the random placements' compounded return
    overlapping: bool  # the trades overlap in time: random entries were placed independently

    def to_dict(self) -> dict[str, Any]:
        return {
            "p_value": self.p_value,
            "runs": self.runs,
            "seed": self.seed,
            "statistic": "compounded return of the trades at full size (percent)",
            "observed_return_pct": self.observed_return_pct,
            "random_return_pct": self.random_return_pct,
            "overlapping": self.overlapping,
        }


def round_trip_return(entry: np.ndarray, exit_: np.ndarray, fee_rate: float, slippage_pct: float) -> np.ndarray:
    """A long trade's net return from an entry and an exit price: slippage against each fill and the fee on
    each side (as the engine charges them)."""
    slip = slippage_pct / 100.0
    return (exit_ * (1.0 - slip) * (1.0 - fee_rate)) / (entry * (1.0 + slip) * (1.0 + fee_rate)) - 1.0


def random_entry_test(
    close: np.ndarray,
    hold_bars: np.ndarray,
    trade_returns: np.ndarray,
    *,
    fee_rate: float,
    slippage_pct: float,
    runs: int = 1000,
    seed: int | None = None,
    first_bar: int = 0,
    progress: Progress | None = None,
) -> SignificanceResult:
    """p-value of the strategy's trades (``trade_returns``: each trade's net return on its own cost, a fraction)
    against ``runs`` random placements of trades with the same holding times (``hold_bars``, >= 1) on ``close``
    from ``first_bar``: entries at a bar's close, exits ``hold`` bars later at that bar's close. When the
    holdings fit one after the other, each placement is a random order of the holdings with random gaps (the
    same exposure, never overlapping); otherwise (several positions at once) each trade's entry is uniform."""
    close = np.asarray(close, dtype=np.float64)
    holds = np.maximum(np.asarray(hold_bars, dtype=np.int64), 1)
    n = len(holds)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if n == 0:
        raise ValueError("no trades to test")
    if len(trade_returns) != n:
        raise ValueError("one return per trade is needed")
    last = len(close) - 1
    free = last - first_bar - int(holds.sum())
    overlapping = free < 0
    if overlapping and int(holds.max()) > last - first_bar:
        raise ValueError("a holding time is longer than the data")
    observed = float(np.sum(np.log1p(np.asarray(trade_returns, dtype=np.float64))))
    rng = np.random.default_rng(seed)
    stats = np.empty(runs)
    chunk = max(1, CHUNK_CELLS // n)
    done = 0
    while done < runs:
        rows = min(chunk, runs - done)
        order = holds[_shuffled_rows(rng.random((rows, n)))]
        if overlapping:
            entries = first_bar + (rng.random((rows, n)) * (last - first_bar - order + 1)).astype(np.int64)
        else:
            gaps = np.sort(rng.integers(0, free + 1, size=(rows, n), dtype=np.int64), axis=1)
            before = np.cumsum(order, axis=1) - order
            entries = first_bar + gaps + before
        net = round_trip_return(close[entries], close[entries + order], fee_rate, slippage_pct)
        stats[done : done + rows] = np.sum(np.log1p(net), axis=1)
        done += rows
        if progress is not None:
            progress(done)
    hits = int(np.sum(stats >= observed - 1e-12))
    levels = np.percentile(100.0 * np.expm1(stats), PERCENTILES)
    return SignificanceResult(
        p_value=(1 + hits) / (1 + runs),
        runs=runs,
        seed=seed,
        observed_return_pct=100.0 * math.expm1(observed),
        random_return_pct={str(q): float(v) for q, v in zip(PERCENTILES, levels, strict=True)},
        overlapping=overlapping,
    )


# --- deflated Sharpe ratio -------------------------------------------------------------------------------


def expected_max_sharpe(trials: int, trials_sharpe_variance: float) -> float:
    """The Sharpe ratio the best of ``trials`` unskilled trials reaches on average (the false strategy theorem):
    ``sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))``; 0 for one trial."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if trials_sharpe_variance < 0:
        raise ValueError("the variance of the trials' Sharpe ratios must be >= 0")
    if trials == 1:
        return 0.0
    z = _NORMAL.inv_cdf
    spread = (1 - EULER_GAMMA) * z(1 - 1 / trials) + EULER_GAMMA * z(1 - 1 / (trials * math.e))
    return math.sqrt(trials_sharpe_variance) * spread


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    deflated_sharpe: float  # probability (0..1) that the true Sharpe ratio exceeds ``benchmark``
    sharpe: float  # per observation
    benchmark: float  # expected maximum Sharpe ratio of the unskilled trials, per observation
    trials: int
    observations: int
    skewness: float
    kurtosis: float

    def to_dict(self, periods_per_year: float | None = None) -> dict[str, Any]:
        scale = math.sqrt(periods_per_year) if periods_per_year else None
        return {
            "deflated_sharpe": self.deflated_sharpe,
            "sharpe_per_period": self.sharpe,
            "expected_max_sharpe_per_period": self.benchmark,
            "sharpe_annualised": None if scale is None else self.sharpe * scale,
            "expected_max_sharpe_annualised": None if scale is None else self.benchmark * scale,
            "trials": self.trials,
            "observations": self.observations,
            "skewness": self.skewness,
            "kurtosis": self.kurtosis,
        }


def deflated_sharpe(
    sharpe: float,
    *,
    trials: int,
    trials_sharpe_variance: float,
    observations: int,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> DeflatedSharpe:
    """Deflated Sharpe ratio; every Sharpe ratio and the variance are per observation (not annualised),
    ``kurtosis`` is the plain (not excess) kurtosis. One trial gives the probabilistic Sharpe ratio against 0."""
    if observations < 2:
        raise ValueError(f"observations must be >= 2, got {observations}")
    benchmark = expected_max_sharpe(trials, trials_sharpe_variance)
    spread = 1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if spread <= 0:
        raise ValueError("the returns' moments give a non-positive Sharpe ratio variance")
    z = (sharpe - benchmark) * math.sqrt(observations - 1) / math.sqrt(spread)
    return DeflatedSharpe(_NORMAL.cdf(z), sharpe, benchmark, trials, observations, skewness, kurtosis)


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-observation Sharpe ratio, skewness and plain kurtosis of ``returns``."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < 2:
        raise ValueError("at least two returns are needed")
    mean, std = float(returns.mean()), float(returns.std(ddof=1))
    if std == 0:
        raise ValueError("the returns do not vary; the Sharpe ratio is undefined")
    centred = returns - mean
    m2 = float(np.mean(centred**2))
    skew = float(np.mean(centred**3)) / m2**1.5
    kurt = float(np.mean(centred**4)) / m2**2
    return mean / std, skew, kurt


def deflated_sharpe_of_returns(returns: np.ndarray, *, trials: int, trials_sharpe_variance: float) -> DeflatedSharpe:
    """``deflated_sharpe`` of a return series (one per bar), its moments measured."""
    sharpe, skew, kurt = moments(returns)
    return deflated_sharpe(
        sharpe,
        trials=trials,
        trials_sharpe_variance=trials_sharpe_variance,
        observations=len(returns),
        skewness=skew,
        kurtosis=kurt,
    )


# --- probability of backtest overfitting (CSCV) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverfittingResult:
    pbo: float  # share of the splits where the in-sample best is below the out-of-sample median
    logits: list[float]  # one per split: log(w / (1 - w)), w the best's relative out-of-sample rank
    splits: int
    blocks: int
    trials: int
    degradation: float  # mean out-of-sample performance of the in-sample best, minus the mean in-sample one

    def to_dict(self) -> dict[str, Any]:
        return {
            "pbo": self.pbo,
            "splits": self.splits,
            "blocks": self.blocks,
            "trials": self.trials,
            "logits": self.logits,
            "performance_degradation": self.degradation,
        }


def _sharpe_rows(total: np.ndarray, squares: np.ndarray, count: int) -> np.ndarray:
    """Sharpe ratio (per period) from sums and sums of squares: one row per split, one column per trial."""
    mean = total / count
    variance = np.maximum(squares - count * mean**2, 0.0) / (count - 1)
    std = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(std > 1e-15 * np.maximum(np.abs(mean), 1e-300), mean / std, np.sign(mean) * np.inf)
    return np.nan_to_num(ratio, nan=0.0, posinf=np.inf, neginf=-np.inf)


def probability_of_overfitting(returns: np.ndarray, blocks: int = 16) -> OverfittingResult:
    """CSCV over ``returns`` (rows: periods in time order, columns: trials). The rows are cut into ``blocks``
    (even) equal parts (a remainder of rows at the end is left out); every choice of half of them is an in-sample
    set, the rest out-of-sample; the trial with the best in-sample Sharpe ratio is ranked out-of-sample. PBO is
    the share of splits where it ranks at or below the median (logit <= 0)."""
    matrix = np.asarray(returns, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError("expected a matrix with one column per trial (at least two trials)")
    if blocks < 2 or blocks % 2:
        raise ValueError(f"blocks must be an even number >= 2, got {blocks}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("the returns must be finite")
    size = matrix.shape[0] // blocks
    if size < 2:
        raise ValueError(f"{matrix.shape[0]} periods are too few for {blocks} blocks (2 periods a block at least)")
    parts = matrix[: size * blocks].reshape(blocks, size, matrix.shape[1])
    sums, squares = parts.sum(axis=1), (parts**2).sum(axis=1)
    chosen = np.zeros((math.comb(blocks, blocks // 2), blocks))
    for row, members in enumerate(combinations(range(blocks), blocks // 2)):
        chosen[row, list(members)] = 1.0
    count = size * blocks // 2
    score_in = _sharpe_rows(chosen @ sums, chosen @ squares, count)
    score_out = _sharpe_rows((1 - chosen) @ sums, (1 - chosen) @ squares, count)
    trials = matrix.shape[1]
    best = np.argmax(score_in, axis=1)
    rows = np.arange(len(best))
    best_out = score_out[rows, best][:, None]
    rank = np.sum(score_out < best_out, axis=1) + 0.5 * np.sum(score_out == best_out, axis=1) + 0.5
    relative = rank / (trials + 1)
    logits = np.log(relative / (1 - relative))
    gap = score_out[rows, best] - score_in[rows, best]
    finite = np.isfinite(gap)
    return OverfittingResult(
        pbo=float(np.mean(logits <= 0)),
        logits=logits.tolist(),
        splits=len(logits),
        blocks=blocks,
        trials=trials,
        degradation=float(np.mean(gap[finite])) if finite.any() else float("nan"),
    )
