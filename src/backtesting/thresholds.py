"""The quick filter's threshold tiers: which metric must reach what, in the order the compiled judgement uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (threshold, metric) in the order of the compiled engine's metrics vector (``engine.window_metrics``)
THRESHOLD_METRICS = (
    ("min_total_return_pct", "total_return_pct"),
    ("min_win_rate_pct", "win_rate_pct"),
    ("min_profit_factor", "profit_factor"),
    ("min_sharpe", "sharpe"),
    ("min_sortino", "sortino"),
    ("min_calmar", "calmar"),
    ("max_drawdown_pct", "max_drawdown_pct"),
    ("max_consecutive_losses", "max_consecutive_losses"),
    ("min_trades", "trades"),
    ("max_avg_holding_hours", "avg_holding_hours"),
)


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

    def vector(self) -> tuple[float | None, ...]:
        """The thresholds in the compiled engine's order (``THRESHOLD_METRICS``)."""
        return tuple(getattr(self, name) for name, _ in THRESHOLD_METRICS)

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
