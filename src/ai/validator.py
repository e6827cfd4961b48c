"""Hard checks after the adviser: a buy becomes a hold when the market says no.

Only buys are checked. A sell is never blocked here (getting out must always be possible) and a hold
needs no checking. Every failing check is listed, not just the first; a missing indicator counts as
failing for a buy, because not knowing is no reason to buy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from src.ai.models import AIDecision
from src.config.settings import Settings
from src.config.trading_groups import AIConfig, RiskConfig
from src.domain.decisions import Decision

DEFAULT_MIN_CONFIDENCE: Decimal = AIConfig.model_fields["min_confidence"].default


@dataclass(frozen=True, slots=True)
class ValidationOutcome:
    final_decision: Decision
    overridden: bool
    reasons: list[str] = field(default_factory=list)


class AIDecisionValidator:
    """Thresholds come from ``RiskConfig`` (``validator_*``) and ``AIConfig.min_confidence``."""

    def __init__(self, risk_config: RiskConfig, min_confidence: Decimal = DEFAULT_MIN_CONFIDENCE) -> None:
        self._max_rsi = float(risk_config.validator_max_rsi)
        self._max_atr_pct = float(risk_config.validator_max_atr_pct)
        self._fakeout_adx = float(risk_config.validator_fakeout_adx)
        self._fakeout_volume_ratio = float(risk_config.validator_fakeout_volume_ratio)
        self._min_confidence = min_confidence

    @classmethod
    def from_settings(cls, settings: Settings) -> AIDecisionValidator:
        return cls(settings.risk, min_confidence=settings.ai.min_confidence)

    def validate(self, decision: AIDecision, indicators: Mapping[str, float], flash_crash: bool) -> ValidationOutcome:
        """Pass sells and holds through; turn a buy into a hold when any check fails."""
        if decision.decision is not Decision.BUY:
            return ValidationOutcome(decision.decision, overridden=False, reasons=[])
        reasons = self.buy_objections(decision.confidence, indicators, flash_crash)
        if reasons:
            return ValidationOutcome(Decision.HOLD, overridden=True, reasons=reasons)
        return ValidationOutcome(Decision.BUY, overridden=False, reasons=[])

    def buy_objections(self, confidence: Decimal, indicators: Mapping[str, float], flash_crash: bool) -> list[str]:
        """Every reason not to buy now (empty when a buy may go ahead)."""
        reasons: list[str] = []
        if flash_crash:
            reasons.append("flash crash detected in recent candles")
        if confidence < self._min_confidence:
            reasons.append(f"confidence {confidence} below minimum {self._min_confidence}")
        reasons.extend(self._rsi_objection(_value(indicators, "rsi_14")))
        reasons.extend(self._atr_objection(_value(indicators, "atr_pct")))
        reasons.extend(self._fakeout_objection(_value(indicators, "adx_14"), _value(indicators, "volume_ratio")))
        return reasons

    def _rsi_objection(self, rsi: float | None) -> list[str]:
        if rsi is None:
            return ["rsi unavailable"]
        if rsi > self._max_rsi:
            return [f"rsi {rsi:.1f} above {self._max_rsi:g} (overbought)"]
        return []

    def _atr_objection(self, atr_pct: float | None) -> list[str]:
        if atr_pct is None:
            return ["atr_pct unavailable"]
        if atr_pct > self._max_atr_pct:
            return [f"atr {atr_pct:.2f}% above {self._max_atr_pct:g}% (too volatile)"]
        return []

    def _fakeout_objection(self, adx: float | None, volume_ratio: float | None) -> list[str]:
        if adx is None or volume_ratio is None:
            missing = [name for name, value in (("adx_14", adx), ("volume_ratio", volume_ratio)) if value is None]
            return [f"{name} unavailable" for name in missing]
        if adx < self._fakeout_adx and volume_ratio < self._fakeout_volume_ratio:
            return [
                f"possible fakeout: weak trend (adx {adx:.1f} < {self._fakeout_adx:g}) "
                f"with low volume (volume ratio {volume_ratio:.2f} < {self._fakeout_volume_ratio:g})"
            ]
        return []


def _value(indicators: Mapping[str, float], name: str) -> float | None:
    """The indicator as a finite float, or None when it is missing, None or NaN."""
    raw = indicators.get(name)
    if raw is None:
        return None
    number = float(raw)
    return number if math.isfinite(number) else None
