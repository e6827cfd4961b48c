"""What a search maximises, and what a result must satisfy to count.

``--objective`` names one metric (``sharpe``), a weighted mix (``0.7*sharpe+0.3*calmar``), or several
objectives separated by commas for a multi-objective search (``sharpe,return`` with NSGA-II). Every objective
is maximised; ``drawdown`` is the maximum drawdown in percent (<= 0), so maximising it means a shallower one.

Constraints: at least ``min_trades`` round trips, and a maximum drawdown no deeper than ``max_drawdown_pct``.
A result that breaks one, or whose objective is undefined (NaN: a Sharpe without trades) or infinite (a profit
factor without a losing trade), is never chosen as the best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from src.exceptions import ConfigurationError

OBJECTIVE_METRICS: dict[str, str] = {
    "return": "total_return_pct",
    "sharpe": "sharpe",
    "sortino": "sortino",
    "calmar": "calmar",
    "profit_factor": "profit_factor",
    "cagr": "cagr_pct",
    "drawdown": "max_drawdown_pct",
    "win_rate": "win_rate_pct",
}


@dataclass(frozen=True, slots=True)
class Objective:
    """A weighted sum of metrics (one term: that metric), maximised."""

    terms: tuple[tuple[str, float], ...]  # (objective name, weight)

    @property
    def label(self) -> str:
        if len(self.terms) == 1 and self.terms[0][1] == 1.0:
            return self.terms[0][0]
        return "+".join(f"{w:g}*{name}" for name, w in self.terms)

    def value(self, metrics: Mapping[str, float]) -> float:
        total = 0.0
        for name, weight in self.terms:
            total += weight * float(metrics[OBJECTIVE_METRICS[name]])
        return total


def _term(text: str, whole: str) -> tuple[str, float]:
    weight, star, name = text.partition("*")
    if not star:
        weight, name = "1", text
    name = name.strip()
    if name not in OBJECTIVE_METRICS:
        raise ConfigurationError(
            f"--objective {whole!r}: unknown objective {name!r}; use {', '.join(OBJECTIVE_METRICS)}, a weighted mix "
            "such as 0.7*sharpe+0.3*calmar, or several separated by commas"
        )
    try:
        w = float(weight)
    except ValueError:
        raise ConfigurationError(f"--objective {whole!r}: expected a weight number, got {weight!r}") from None
    if not math.isfinite(w) or w == 0:
        raise ConfigurationError(f"--objective {whole!r}: a weight must be a finite number other than 0")
    return name, w


def parse_objectives(text: str) -> list[Objective]:
    """``sharpe`` / ``0.7*sharpe+0.3*calmar`` / ``sharpe,return``."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ConfigurationError(f"--objective {text!r}: empty objective")
    objectives = [Objective(tuple(_term(t.strip(), text) for t in part.split("+"))) for part in parts]
    labels = [o.label for o in objectives]
    if len(set(labels)) != len(labels):
        raise ConfigurationError(f"--objective {text!r}: an objective is named twice")
    return objectives


@dataclass(frozen=True, slots=True)
class Constraints:
    min_trades: int = 0
    max_drawdown_pct: float | None = None  # a positive percent: the drawdown may not be deeper

    def named_violations(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Optuna's convention: each value <= 0 when satisfied (how far it is broken otherwise)."""
        out = {"min_trades": float(self.min_trades - metrics["trades"])}
        if self.max_drawdown_pct is not None:
            out["max_drawdown"] = float(-metrics["max_drawdown_pct"] - self.max_drawdown_pct)
        return out

    def satisfied(self, metrics: Mapping[str, float]) -> bool:
        return all(v <= 0 for v in self.named_violations(metrics).values())

    def describe(self) -> dict[str, float | int | None]:
        return {"min_trades": self.min_trades, "max_drawdown_pct": self.max_drawdown_pct}
