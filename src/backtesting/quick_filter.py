"""The quick backtest filter in front of live trading (two stages, as in the spec).

1. A rule-based backtest (``RuleBasedBreakoutStrategy``, no AI call) over the last ``lookback_days``.
2. Only if it passes, and an AI strategy is configured: the AI backtest over the same candles.
Each stage is judged against a threshold tier; the result names every threshold that failed.
Results are cached per symbol and last candle timestamp, so repeated checks within one bar are free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal

import pandas as pd

from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.backtester import Backtester, json_safe, portfolio_config_from_settings
from src.backtesting.portfolio import PortfolioConfig
from src.config.settings import Settings
from src.exceptions import ConfigurationError, DataError
from src.strategy.bundled import RuleBasedBreakoutStrategy
from src.strategy.contract import Strategy
from src.utils.logger import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class QuickFilterThresholds:
    """A metric that is None (undefined, e.g. win rate without trades) fails its threshold. None = unchecked."""

    min_total_return_pct: float | None = 0.0
    min_win_rate_pct: float | None = 40.0
    min_profit_factor: float | None = 1.1
    min_sharpe: float | None = 0.5
    min_sortino: float | None = 0.5
    min_calmar: float | None = None
    max_drawdown_pct: float | None = 15.0  # the deepest allowed fall, as a positive percent
    max_consecutive_losses: int | None = 5
    min_trades: int | None = 3
    max_avg_holding_hours: float | None = 120.0

    def failures(self, metrics: dict[str, Any]) -> list[str]:
        checks: list[tuple[str, float | None, str, Callable[[float, float], bool]]] = [
            ("min_total_return_pct", self.min_total_return_pct, "total_return_pct", lambda v, t: v >= t),
            ("min_win_rate_pct", self.min_win_rate_pct, "win_rate_pct", lambda v, t: v >= t),
            ("min_profit_factor", self.min_profit_factor, "profit_factor", lambda v, t: v >= t),
            ("min_sharpe", self.min_sharpe, "sharpe", lambda v, t: v >= t),
            ("min_sortino", self.min_sortino, "sortino", lambda v, t: v >= t),
            ("min_calmar", self.min_calmar, "calmar", lambda v, t: v >= t),
            ("max_drawdown_pct", self.max_drawdown_pct, "max_drawdown_pct", lambda v, t: -v <= t),
            ("max_consecutive_losses", self.max_consecutive_losses, "max_consecutive_losses", lambda v, t: v <= t),
            ("min_trades", self.min_trades, "trades", lambda v, t: v >= t),
            ("max_avg_holding_hours", self.max_avg_holding_hours, "avg_holding_hours", lambda v, t: v <= t),
        ]
        failed = []
        for name, threshold, metric, ok in checks:
            if threshold is None:
                continue
            value = metrics.get(metric)
            if value is None or not ok(float(value), float(threshold)):
                failed.append(name)
        return failed


TIERS: dict[str, QuickFilterThresholds] = {
    "strict": QuickFilterThresholds(
        min_total_return_pct=2.0,
        min_win_rate_pct=50.0,
        min_profit_factor=1.5,
        min_sharpe=1.0,
        min_sortino=1.5,
        min_calmar=1.0,
        max_drawdown_pct=10.0,
        max_consecutive_losses=3,
        min_trades=5,
        max_avg_holding_hours=72.0,
    ),
    "moderate": QuickFilterThresholds(),
    "lenient": QuickFilterThresholds(
        min_total_return_pct=-2.0,
        min_win_rate_pct=30.0,
        min_profit_factor=0.9,
        min_sharpe=None,
        min_sortino=None,
        min_calmar=None,
        max_drawdown_pct=20.0,
        max_consecutive_losses=8,
        min_trades=1,
        max_avg_holding_hours=240.0,
    ),
}


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

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


class QuickBacktestFilter:
    def __init__(
        self,
        lookback_days: int = 30,
        thresholds: QuickFilterThresholds | str = "moderate",
        config: PortfolioConfig | None = None,
        rule_strategy: Strategy | None = None,
        ai_strategy_factory: Callable[[str], AITradingStrategy] | None = None,
    ) -> None:
        if isinstance(thresholds, str):
            if thresholds not in TIERS:
                raise ConfigurationError(f"unknown quick filter tier {thresholds!r}; expected {', '.join(TIERS)}")
            thresholds = TIERS[thresholds]
        if lookback_days < 1:
            raise ConfigurationError(f"lookback_days must be >= 1, got {lookback_days}")
        self.lookback = timedelta(days=lookback_days)
        self.thresholds = thresholds
        self.backtester = Backtester(config)
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
            config=portfolio_config_from_settings(settings),
            rule_strategy=rule_strategy,
            ai_strategy_factory=ai_strategy_factory,
        )

    def recent(self, df: pd.DataFrame) -> pd.DataFrame:
        if df.empty:
            raise DataError("quick filter: no candles")
        return df[df.index > df.index[-1] - self.lookback]

    def evaluate(self, symbol: str, df: pd.DataFrame) -> QuickFilterResult:
        """Synchronous evaluation; the AI stage (if configured) replays/asks through ``asyncio.run``."""
        key = (symbol, df.index[-1]) if len(df) else None
        if key in self._cache:
            return self._cache[key]
        recent = self.recent(df)
        rule_result = self._rule_stage(symbol, recent)
        if rule_result.passed and self.ai_strategy_factory is not None:
            strategy = self.ai_strategy_factory(symbol)
            asyncio.run(strategy.prepare(recent))
            rule_result = self._ai_stage(symbol, recent, strategy, rule_result)
        return self._remember(key, rule_result)

    async def aevaluate(self, symbol: str, df: pd.DataFrame) -> QuickFilterResult:
        """The same as ``evaluate`` for callers already inside an event loop (the live pipeline)."""
        key = (symbol, df.index[-1]) if len(df) else None
        if key in self._cache:
            return self._cache[key]
        recent = self.recent(df)
        result = self._rule_stage(symbol, recent)
        if result.passed and self.ai_strategy_factory is not None:
            strategy = self.ai_strategy_factory(symbol)
            await strategy.prepare(recent)
            result = self._ai_stage(symbol, recent, strategy, result)
        return self._remember(key, result)

    def _remember(self, key: tuple[str, pd.Timestamp] | None, result: QuickFilterResult) -> QuickFilterResult:
        if key is not None:
            self._cache[key] = result
        log.info(
            "quick_filter.evaluated",
            symbol=result.symbol,
            passed=result.passed,
            stage=result.stage,
            failed=result.failed_thresholds,
        )
        return result

    def _judge(self, recent: pd.DataFrame, strategy: Strategy) -> tuple[dict[str, Any], list[str]]:
        metrics = self.backtester.run(recent, strategy).metrics
        return metrics, self.thresholds.failures(metrics)

    def _rule_stage(self, symbol: str, recent: pd.DataFrame) -> QuickFilterResult:
        metrics, failed = self._judge(recent, self.rule_strategy)
        note = "" if self.ai_strategy_factory is not None else "AI stage not configured"
        return QuickFilterResult(
            symbol, recent.index[-1].isoformat(), not failed, "rule", failed, metrics, metrics, note
        )

    def _ai_stage(
        self, symbol: str, recent: pd.DataFrame, strategy: AITradingStrategy, rule: QuickFilterResult
    ) -> QuickFilterResult:
        metrics, failed = self._judge(recent, strategy)
        stats = strategy.stats
        note = f"AI decisions: {stats.answered}/{stats.candidates} answered"  # the adviser sees it: no cache count
        return QuickFilterResult(symbol, rule.last_candle, not failed, "ai", failed, metrics, rule.metrics, note)
