"""The quick backtest filter in front of every trade (two stages, as in the spec).

1. Rule stage (always, no AI call): the backtest engine itself (``src.backtesting.engine``: the same strategy,
   parameters, risk rules and fill model that will trade) over the candles whose open time is within the last
   ``lookback_days``, from a fresh account; the strategy's signals are computed over every candle given (the
   bot passes its last ``history_bars`` candles), so they are settled at the window's start.
2. Only if it passes, and an AI strategy is configured: the same with the AI strategy's signals.
Each stage is judged against a threshold tier by the compiled metrics the backtest loop uses at each entry
attempt; the result names every threshold that failed and the stage that blocked. Results are cached per
symbol and last candle timestamp, so repeated checks within one bar are free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from src.backtesting.backtester import engine_config_from_settings, json_safe
from src.backtesting.engine import (
    EngineConfig,
    EngineInputs,
    in_market,
    run_window,
    threshold_failures,
    trade_arrays,
    window_metrics,
)
from src.backtesting.performance import PerformanceAnalyzer, bar_seconds
from src.backtesting.thresholds import THRESHOLD_METRICS, TIERS, QuickFilterThresholds
from src.config.settings import Settings
from src.exceptions import ConfigurationError, DataError
from src.strategy.bundled import RuleBasedBreakoutStrategy
from src.strategy.contract import Strategy
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from src.backtesting.ai_strategy import AITradingStrategy

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class QuickFilterResult:
    symbol: str
    last_candle: str
    passed: bool
    stage: Literal["rule", "ai"]
    failed_thresholds: list[str]
    metrics: dict[str, Any]
    rule_metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    blocked_by: Literal["rule", "ai"] | None = None  # the stage that blocked the trade (None: passed)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


class QuickBacktestFilter:
    """``aevaluate(symbol, candles)`` with the last ``history_bars`` candles: may a trade happen now?

    ``config``: the engine's rules (``engine_config_from_settings``); its lookback and tier are replaced by this
    filter's. ``rule_strategy``: the strategy that trades (default: the rule breakout with its defaults).
    """

    def __init__(
        self,
        lookback_days: int = 30,
        thresholds: QuickFilterThresholds | str = "moderate",
        config: EngineConfig | None = None,
        rule_strategy: Strategy | None = None,
        ai_strategy_factory: Callable[[str], AITradingStrategy] | None = None,
    ) -> None:
        tier = thresholds if isinstance(thresholds, str) else "custom"
        if isinstance(thresholds, str):
            if thresholds not in TIERS:
                raise ConfigurationError(f"unknown quick filter tier {thresholds!r}; expected {', '.join(TIERS)}")
            thresholds = TIERS[thresholds]
        if lookback_days < 1:
            raise ConfigurationError(f"lookback_days must be >= 1, got {lookback_days}")
        self.lookback = timedelta(days=lookback_days)
        self.thresholds = thresholds
        self.config = replace(
            config or EngineConfig(),
            quick_filter=False,
            quick_filter_lookback_days=lookback_days,
            quick_filter_tier=tier if tier in TIERS else (config or EngineConfig()).quick_filter_tier,
            quick_filter_thresholds=thresholds.vector(),
        )
        self.analyzer = PerformanceAnalyzer()
        self.rule_strategy = rule_strategy or RuleBasedBreakoutStrategy()
        self.ai_strategy_factory = ai_strategy_factory
        self._cache: dict[tuple[str, pd.Timestamp], QuickFilterResult] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        ai_strategy_factory: Callable[[str], AITradingStrategy] | None = None,
        rule_strategy: Strategy | None = None,
    ) -> QuickBacktestFilter:
        return cls(
            lookback_days=settings.backtest.quick_filter_lookback_days,
            thresholds=settings.backtest.quick_filter_tier,
            config=engine_config_from_settings(settings),
            rule_strategy=rule_strategy,
            ai_strategy_factory=ai_strategy_factory,
        )

    def evaluate(self, symbol: str, df: pd.DataFrame) -> QuickFilterResult:
        """Synchronous evaluation; the AI stage (if configured) replays/asks through ``asyncio.run``."""
        key = (symbol, df.index[-1]) if len(df) else None
        if key in self._cache:
            return self._cache[key]
        result = self._rule_stage(symbol, df)
        if result.passed and self.ai_strategy_factory is not None:
            strategy = self.ai_strategy_factory(symbol)
            asyncio.run(strategy.prepare(df))
            result = self._ai_stage(symbol, df, strategy, result)
        return self._remember(key, result)

    async def aevaluate(self, symbol: str, df: pd.DataFrame) -> QuickFilterResult:
        """The same as ``evaluate`` for callers already inside an event loop (the live pipeline)."""
        key = (symbol, df.index[-1]) if len(df) else None
        if key in self._cache:
            return self._cache[key]
        result = self._rule_stage(symbol, df)
        if result.passed and self.ai_strategy_factory is not None:
            strategy = self.ai_strategy_factory(symbol)
            await strategy.prepare(df)
            result = self._ai_stage(symbol, df, strategy, result)
        return self._remember(key, result)

    def _remember(self, key: tuple[str, pd.Timestamp] | None, result: QuickFilterResult) -> QuickFilterResult:
        if key is not None:
            self._cache[key] = result
        log.info(
            "quick_filter.evaluated",
            symbol=result.symbol,
            passed=result.passed,
            stage=result.stage,
            blocked_by=result.blocked_by,
            failed=result.failed_thresholds,
        )
        return result

    def judge(self, df: pd.DataFrame, strategy: Strategy) -> tuple[dict[str, Any], list[str]]:
        """The window's metrics and the failed thresholds, by the engine's compiled simulation and judgement."""
        if df.empty:
            raise DataError("quick filter: no candles")
        signals = strategy.generate_signals(df)
        policy = self.config.policy(strategy.exit_policy)
        step = bar_seconds(df.index)
        inputs = EngineInputs.of(df, signals.entry, signals.exit, signals.atr, step)
        n = len(df)
        first = int(df.index.searchsorted(df.index[-1] - self.lookback, side="right"))
        cfg = self.config.vector(policy, gate=False)
        equity, buf, k = run_window(inputs, first, n - 1, cfg)
        buf = buf[:k]
        stamps = inputs.stamps[first:]
        failed_flags = threshold_failures(
            window_metrics(equity, stamps, cfg[0], buf, k), cfg[-len(THRESHOLD_METRICS) :]
        )
        failed = [THRESHOLD_METRICS[i][0] for i in np.flatnonzero(failed_flags)]
        window = df.iloc[first:]
        metrics = self.analyzer.analyze(
            pd.Series(equity, index=window.index),
            trade_arrays(buf),
            in_market(len(window), first, buf),
            window["close"],
            self.config.initial_capital,
        )
        return metrics, failed

    def _rule_stage(self, symbol: str, df: pd.DataFrame) -> QuickFilterResult:
        metrics, failed = self.judge(df, self.rule_strategy)
        note = "" if self.ai_strategy_factory is not None else "AI stage not configured"
        return QuickFilterResult(
            symbol, df.index[-1].isoformat(), not failed, "rule", failed, metrics, metrics, note,
            None if not failed else "rule",
        )  # fmt: skip

    def _ai_stage(
        self, symbol: str, df: pd.DataFrame, strategy: AITradingStrategy, rule: QuickFilterResult
    ) -> QuickFilterResult:
        metrics, failed = self.judge(df, strategy)
        stats = strategy.stats
        note = f"AI decisions: {stats.answered}/{stats.candidates} answered"  # the adviser sees it: no cache count
        return QuickFilterResult(
            symbol, rule.last_candle, not failed, "ai", failed, metrics, rule.metrics, note,
            None if not failed else "ai",
        )  # fmt: skip
