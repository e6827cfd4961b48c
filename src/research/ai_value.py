"""Does the AI add value? Rules only, rules + AI and buy-and-hold over the same candles, side by side.

The three variants of one symbol are equity curves over the same bars (``SymbolRun``): the candidate strategy
alone, the same candidate with the AI confirming its entries (decisions replayed from the decision cache or the
bot's recorded decisions), and buying at the first bar's close and holding (fee and slippage on the buy and
on the final sale). Several symbols are pooled with equal weights: the pooled return of a bar is the mean of the
symbols' returns of that bar (bars every symbol has).

- **Scopes.** With the model's training cut-off (``AI_TRAINING_CUTOFF``), bars opening before it are
  ``before_cutoff`` (possibly contaminated: the model may have seen that history, and a replayed answer may
  "know" what came next) and bars from it on are ``after_cutoff``; the headline uses ``after_cutoff`` only.
  Without a cut-off every bar is possibly contaminated and the headline says so.
- **Differences** (rules + AI minus rules, rules + AI minus buy-and-hold, rules minus buy-and-hold) are
  differences of compounded returns over a scope, in percentage points, with a 95% interval from a paired
  circular block bootstrap of the bars (the same resampled bars for both variants; blocks of about the square
  root of the number of bars keep the autocorrelation of holding periods) and the bootstrap probability that the
  difference is above zero.
- **Market regimes** (a simple, documented rule): a bar is ``up`` when the close is more than ``threshold_pct``
  above the close ``lookback_bars`` earlier, ``down`` when more than ``threshold_pct`` below, else ``sideways``
  (``unclassified`` before there is that much history). Each variant's compounded return over the bars of each
  regime is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from src.research.robustness import ResampleMethod, resample_indices

CHART_POINTS = 5_000  # the pooled equity curves the report draws are thinned to about this many points
CHUNK_CELLS = 4_000_000


class Variant(StrEnum):
    RULES = "rules"
    RULES_AI = "rules_ai"
    BUY_AND_HOLD = "buy_and_hold"

    @property
    def label(self) -> str:
        return {"rules": "Rules only", "rules_ai": "Rules + AI", "buy_and_hold": "Buy & hold"}[self.value]


class Scope(StrEnum):
    ALL = "all"
    AFTER_CUTOFF = "after_cutoff"
    BEFORE_CUTOFF = "before_cutoff"


class Regime(StrEnum):
    UP = "up"
    DOWN = "down"
    SIDEWAYS = "sideways"
    UNCLASSIFIED = "unclassified"


COMPARISONS = (
    (Variant.RULES_AI, Variant.RULES, "Rules + AI minus rules only"),
    (Variant.RULES_AI, Variant.BUY_AND_HOLD, "Rules + AI minus buy & hold"),
    (Variant.RULES, Variant.BUY_AND_HOLD, "Rules only minus buy & hold"),
)


@dataclass(slots=True)
class SymbolRun:
    """One symbol's variants over the same bars: ``equity[variant]`` one value per bar of ``index`` (after the
    bar's close), ``initial`` before the first; ``entries[variant]``/``pnl[variant]`` the trades' entry times and
    P&L; ``regimes`` one label per bar."""

    symbol: str
    index: pd.DatetimeIndex
    initial: float
    equity: dict[Variant, np.ndarray]
    regimes: np.ndarray
    entries: dict[Variant, pd.DatetimeIndex] = field(default_factory=dict)
    pnl: dict[Variant, np.ndarray] = field(default_factory=dict)
    bars_per_year: float = 8760.0

    def returns(self, variant: Variant) -> np.ndarray:
        values = np.concatenate(([self.initial], self.equity[variant]))
        return np.diff(values) / values[:-1]


def buy_and_hold_equity(close: np.ndarray, capital: float, fee_rate: float, slippage_pct: float) -> np.ndarray:
    """Buy at the first bar's close (slippage and fee against it), mark to market at every close, sell at the last
    bar's close (slippage and fee again)."""
    close = np.asarray(close, dtype=np.float64)
    slip = slippage_pct / 100.0
    units = capital / (close[0] * (1.0 + slip) * (1.0 + fee_rate))
    equity = units * close
    equity[-1] = units * close[-1] * (1.0 - slip) * (1.0 - fee_rate)
    return equity


def classify_regimes(close: np.ndarray, lookback_bars: int, threshold_pct: float) -> np.ndarray:
    """One ``Regime`` value per bar from the trailing return over ``lookback_bars`` (see the module)."""
    close = np.asarray(close, dtype=np.float64)
    labels = np.full(len(close), Regime.UNCLASSIFIED.value, dtype=object)
    if lookback_bars < 1 or len(close) <= lookback_bars:
        return labels
    trailing = close[lookback_bars:] / close[:-lookback_bars] - 1.0
    step = threshold_pct / 100.0
    labels[lookback_bars:] = np.where(
        trailing > step, Regime.UP.value, np.where(trailing < -step, Regime.DOWN.value, Regime.SIDEWAYS.value)
    )
    return labels


def scope_masks(index: pd.DatetimeIndex, cutoff: datetime | None) -> dict[Scope, np.ndarray]:
    everything = np.ones(len(index), dtype=bool)
    if cutoff is None:
        return {Scope.ALL: everything}
    after = np.asarray(index >= pd.Timestamp(cutoff))
    return {Scope.ALL: everything, Scope.AFTER_CUTOFF: after, Scope.BEFORE_CUTOFF: ~after}


def compounded_pct(returns: np.ndarray) -> float:
    return 100.0 * float(np.expm1(np.sum(np.log1p(returns)))) if len(returns) else 0.0


def path_metrics(returns: np.ndarray, bars_per_year: float) -> dict[str, Any]:
    """Return, maximum drawdown and annualised Sharpe ratio of a run of per-bar returns."""
    if len(returns) == 0:
        return {"bars": 0, "total_return_pct": None, "max_drawdown_pct": None, "sharpe": None}
    path = np.cumprod(1.0 + returns)
    peak = np.maximum.accumulate(np.concatenate(([1.0], path)))[1:]
    std = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    sharpe = float(np.mean(returns)) / std * math.sqrt(bars_per_year) if std > 0 else None
    return {
        "bars": len(returns),
        "total_return_pct": 100.0 * float(path[-1] - 1.0),
        "max_drawdown_pct": 100.0 * float(min(0.0, float(np.min(path / peak - 1.0)))),
        "sharpe": sharpe,
    }


def trade_metrics(entries: pd.DatetimeIndex, pnl: np.ndarray, start: Any, end: Any) -> dict[str, Any]:
    """Trades entered in ``[start, end]`` (bar open times): how many and the share that made money."""
    if len(entries) == 0:
        return {"trades": 0, "win_rate_pct": None}
    inside = np.asarray((entries >= start) & (entries <= end))
    count = int(inside.sum())
    wins = float(np.mean(pnl[inside] > 0)) * 100.0 if count else None
    return {"trades": count, "win_rate_pct": wins}


@dataclass(frozen=True, slots=True)
class Difference:
    label: str
    scope: Scope
    better: Variant
    worse: Variant
    difference_pct: float  # percentage points of compounded return
    ci_low_pct: float
    ci_high_pct: float
    probability_better: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "scope": self.scope.value,
            "variant": self.better.value,
            "against": self.worse.value,
            "difference_pct": self.difference_pct,
            "ci_low_pct": self.ci_low_pct,
            "ci_high_pct": self.ci_high_pct,
            "probability_better": self.probability_better,
        }


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, runs: int, seed: int | None, block: int | None = None
) -> tuple[float, float, float, float]:
    """Difference of the compounded returns of ``a`` and ``b`` (per-bar returns over the same bars) in percentage
    points, its 95% bootstrap interval and the probability that it is above zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0
    observed = compounded_pct(a) - compounded_pct(b)
    la, lb = np.log1p(a), np.log1p(b)
    size = block or max(1, round(math.sqrt(n)))
    rng = np.random.default_rng(seed)
    diffs = np.empty(runs)
    chunk = max(1, CHUNK_CELLS // n)
    done = 0
    while done < runs:
        rows = min(chunk, runs - done)
        index = resample_indices(rng, n, rows, ResampleMethod.BLOCK, size)
        diffs[done : done + rows] = 100.0 * (np.expm1(la[index].sum(axis=1)) - np.expm1(lb[index].sum(axis=1)))
        done += rows
    low, high = np.percentile(diffs, [2.5, 97.5])
    return observed, float(low), float(high), float(np.mean(diffs > 0))


def pooled_returns(runs: list[SymbolRun], variant: Variant) -> pd.Series:
    """Equal-weight mean of the symbols' per-bar returns, over the bars every symbol has."""
    frame = pd.concat([pd.Series(run.returns(variant), index=run.index) for run in runs], axis=1, join="inner")
    return frame.mean(axis=1)


def pooled_regimes(runs: list[SymbolRun], index: pd.DatetimeIndex) -> np.ndarray:
    """The first symbol's regime of each pooled bar (the market the portfolio is named after)."""
    labels = pd.Series(runs[0].regimes, index=runs[0].index)
    return labels.reindex(index).fillna(Regime.UNCLASSIFIED.value).to_numpy(dtype=object)


@dataclass(slots=True)
class AIValueOptions:
    cutoff: datetime | None
    bootstrap_runs: int = 2000
    seed: int | None = None
    block: int | None = None
    regime_rule: str = ""


def analyse(runs: list[SymbolRun], options: AIValueOptions) -> dict[str, Any]:
    """The comparison as JSON: ``headline``, ``variants`` (pooled equity and metrics per scope), ``differences``
    (bootstrap intervals), ``regimes`` and ``by_symbol``."""
    if not runs:
        raise ValueError("no symbols to compare")
    returns = {variant: pooled_returns(runs, variant) for variant in Variant}
    index = pd.DatetimeIndex(returns[Variant.RULES].index)
    if len(index) == 0:
        raise ValueError("the symbols share no bars")
    per_year = runs[0].bars_per_year
    masks = scope_masks(index, options.cutoff)
    headline_scope = _headline_scope(masks, options.cutoff)
    variants = []
    for variant in Variant:
        values = returns[variant].to_numpy(dtype=np.float64)
        scopes = {}
        for scope, mask in masks.items():
            metrics = path_metrics(values[mask], per_year)
            if mask.any():
                start, end = index[mask][0], index[mask][-1]
                counts = [
                    trade_metrics(
                        run.entries.get(variant, pd.DatetimeIndex([])), run.pnl.get(variant, np.empty(0)), start, end
                    )
                    for run in runs
                ]
                metrics["trades"] = sum(c["trades"] for c in counts) if variant is not Variant.BUY_AND_HOLD else 1
                rates = [c["win_rate_pct"] for c in counts if c["win_rate_pct"] is not None]
                metrics["win_rate_pct"] = float(np.mean(rates)) if rates else None
            metrics["possibly_contaminated"] = scope is not Scope.AFTER_CUTOFF
            scopes[scope.value] = metrics
        variants.append(
            {
                "name": variant.value,
                "label": variant.label,
                "scopes": scopes,
                "equity": _chart_equity(index, values, runs[0].initial),
            }
        )
    differences = []
    for scope, mask in masks.items():
        for better, worse, label in COMPARISONS:
            a = returns[better].to_numpy(dtype=np.float64)[mask]
            b = returns[worse].to_numpy(dtype=np.float64)[mask]
            diff, low, high, p = paired_bootstrap(
                a, b, runs=options.bootstrap_runs, seed=options.seed, block=options.block
            )
            differences.append(Difference(label, scope, better, worse, diff, low, high, p).to_dict())
    regimes = _regimes(runs, index, returns, masks[headline_scope] if headline_scope else masks[Scope.ALL])
    return {
        "symbols": [run.symbol for run in runs],
        "bars": len(index),
        "start": index[0].isoformat(),
        "end": index[-1].isoformat(),
        "cutoff": None if options.cutoff is None else options.cutoff.isoformat(),
        "headline": _headline(headline_scope, masks, variants, differences, options.cutoff),
        "variants": variants,
        "differences": differences,
        "regime_rule": options.regime_rule,
        "regime_scope": (headline_scope or Scope.ALL).value,
        "regimes": regimes,
        "bootstrap": {
            "runs": options.bootstrap_runs,
            "seed": options.seed,
            "block_bars": options.block or max(1, round(math.sqrt(len(index)))),
        },
        "by_symbol": [_symbol_summary(run, options) for run in runs],
    }


def _headline_scope(masks: dict[Scope, np.ndarray], cutoff: datetime | None) -> Scope | None:
    if cutoff is None:
        return Scope.ALL
    return Scope.AFTER_CUTOFF if masks[Scope.AFTER_CUTOFF].any() else None


def _headline(
    scope: Scope | None,
    masks: dict[Scope, np.ndarray],
    variants: list[dict[str, Any]],
    differences: list[dict[str, Any]],
    cutoff: datetime | None,
) -> dict[str, Any]:
    if scope is None:
        return {
            "scope": None,
            "note": f"every candle is before the model's training cut-off {cutoff.isoformat() if cutoff else ''}: "
            "no result free of possible contamination; widen --end past the cut-off",
        }
    if cutoff is None:
        note = (
            "AI_TRAINING_CUTOFF is not set: every candle is possibly contaminated (the model may know that "
            "history); set it to headline only the candles after the model's training cut-off"
        )
    else:
        before = int(masks[Scope.BEFORE_CUTOFF].sum())
        note = (
            f"headline over the {int(masks[scope].sum())} bars from the model's training cut-off "
            f"{cutoff.isoformat()}; the {before} bars before it are reported apart as possibly contaminated"
        )
    by_name = {v["name"]: v["scopes"][scope.value] for v in variants}
    return {
        "scope": scope.value,
        "note": note,
        "rules_pct": by_name[Variant.RULES.value]["total_return_pct"],
        "rules_ai_pct": by_name[Variant.RULES_AI.value]["total_return_pct"],
        "buy_and_hold_pct": by_name[Variant.BUY_AND_HOLD.value]["total_return_pct"],
        "ai_minus_rules": next(
            d
            for d in differences
            if d["scope"] == scope.value and d["variant"] == "rules_ai" and d["against"] == "rules"
        ),
    }


def _regimes(
    runs: list[SymbolRun], index: pd.DatetimeIndex, returns: dict[Variant, pd.Series], scope: np.ndarray
) -> list[dict[str, Any]]:
    labels = pooled_regimes(runs, index)
    rows = []
    for regime in Regime:
        mask = (labels == regime.value) & scope
        if regime is Regime.UNCLASSIFIED and not mask.any():
            continue
        values = {v: returns[v].to_numpy(dtype=np.float64)[mask] for v in Variant}
        rows.append(
            {
                "regime": regime.value,
                "bars": int(mask.sum()),
                "rules_pct": compounded_pct(values[Variant.RULES]),
                "rules_ai_pct": compounded_pct(values[Variant.RULES_AI]),
                "buy_and_hold_pct": compounded_pct(values[Variant.BUY_AND_HOLD]),
            }
        )
    return rows


def _chart_equity(index: pd.DatetimeIndex, returns: np.ndarray, initial: float) -> list[list[Any]]:
    equity = initial * np.cumprod(1.0 + returns)
    step = max(1, len(index) // CHART_POINTS)
    keep = np.arange(0, len(index), step)
    if keep[-1] != len(index) - 1:
        keep = np.append(keep, len(index) - 1)
    return [[index[i].isoformat(), float(equity[i])] for i in keep]


def _symbol_summary(run: SymbolRun, options: AIValueOptions) -> dict[str, Any]:
    masks = scope_masks(run.index, options.cutoff)
    return {
        "symbol": run.symbol,
        "bars": len(run.index),
        "variants": {
            variant.value: {
                scope.value: path_metrics(run.returns(variant)[mask], run.bars_per_year)["total_return_pct"]
                for scope, mask in masks.items()
            }
            for variant in Variant
        },
    }
