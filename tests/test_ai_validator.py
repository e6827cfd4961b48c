"""AIDecisionValidator: configurable checks that can only turn a buy into a hold."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from src.ai.service import AIDecision
from src.ai.validator import AIDecisionValidator, ValidationOutcome
from src.config.settings import load_settings
from src.config.trading_groups import RiskConfig
from src.domain.decisions import Decision, DecisionSource

HEALTHY = {"rsi_14": 58.0, "atr_pct": 2.5, "adx_14": 28.0, "volume_ratio": 1.6}


def risk(**overrides: Any) -> RiskConfig:
    return RiskConfig(_env_file=None, **overrides)


def decision(kind: Decision = Decision.BUY, confidence: str = "75") -> AIDecision:
    return AIDecision(
        decision=kind,
        confidence=Decimal(confidence),
        reason="test",
        source=DecisionSource.AI,
        model="gpt-4o-mini",
        prompt_hash="0" * 64,
    )


@pytest.fixture
def validator() -> AIDecisionValidator:
    return AIDecisionValidator(risk(), min_confidence=Decimal("60"))


def test_healthy_buy_passes(validator: AIDecisionValidator) -> None:
    # Given a confident buy in a calm, trending, well-traded market
    # When validated, Then it stays a buy with no reasons
    assert validator.validate(decision(), HEALTHY, flash_crash=False) == ValidationOutcome(Decision.BUY, False, [])


@pytest.mark.parametrize(
    ("indicators", "expected"),
    [
        pytest.param({"rsi_14": 75.3}, "rsi 75.3 above 70 (overbought)", id="rsi"),
        pytest.param({"atr_pct": 7.25}, "atr 7.25% above 6% (too volatile)", id="atr"),
        pytest.param(
            {"adx_14": 15.0, "volume_ratio": 0.9},
            "possible fakeout: weak trend (adx 15.0 < 20) with low volume (volume ratio 0.90 < 1.3)",
            id="fakeout",
        ),
    ],
)
def test_each_market_check_turns_a_buy_into_a_hold(
    validator: AIDecisionValidator, indicators: dict[str, float], expected: str
) -> None:
    # Given a buy with one indicator out of bounds
    outcome = validator.validate(decision(), {**HEALTHY, **indicators}, flash_crash=False)

    # Then it becomes a hold with exactly that reason
    assert outcome == ValidationOutcome(Decision.HOLD, True, [expected])


def test_flash_crash_blocks_a_buy(validator: AIDecisionValidator) -> None:
    outcome = validator.validate(decision(), HEALTHY, flash_crash=True)
    assert outcome == ValidationOutcome(Decision.HOLD, True, ["flash crash detected in recent candles"])


def test_low_confidence_blocks_a_buy(validator: AIDecisionValidator) -> None:
    outcome = validator.validate(decision(confidence="59.99"), HEALTHY, flash_crash=False)
    assert outcome == ValidationOutcome(Decision.HOLD, True, ["confidence 59.99 below minimum 60"])


def test_boundaries_are_inclusive(validator: AIDecisionValidator) -> None:
    # Given values exactly at every threshold (RSI 70, ATR 6%, ADX 20, confidence 60)
    at_limits = {"rsi_14": 70.0, "atr_pct": 6.0, "adx_14": 20.0, "volume_ratio": 1.0}

    # Then nothing is exceeded
    assert validator.validate(decision(confidence="60"), at_limits, flash_crash=False).final_decision is Decision.BUY


@pytest.mark.parametrize(
    ("adx", "volume_ratio", "blocked"),
    [(15.0, 1.0, True), (15.0, 1.3, False), (15.0, 2.0, False), (25.0, 1.0, False)],
)
def test_fakeout_needs_weak_trend_and_low_volume_together(
    validator: AIDecisionValidator, adx: float, volume_ratio: float, blocked: bool
) -> None:
    indicators = {**HEALTHY, "adx_14": adx, "volume_ratio": volume_ratio}
    assert validator.validate(decision(), indicators, flash_crash=False).overridden is blocked


def test_every_failing_reason_is_listed(validator: AIDecisionValidator) -> None:
    # Given a low-confidence buy into an overbought, volatile, thin market during a flash crash
    bad = {"rsi_14": 81.0, "atr_pct": 9.0, "adx_14": 12.0, "volume_ratio": 0.5}

    # When validated
    outcome = validator.validate(decision(confidence="40"), bad, flash_crash=True)

    # Then all five reasons are recorded
    assert outcome.final_decision is Decision.HOLD
    assert outcome.overridden is True
    assert len(outcome.reasons) == 5
    assert outcome.reasons[0] == "flash crash detected in recent candles"
    assert outcome.reasons[1].startswith("confidence 40 below")
    assert outcome.reasons[2].startswith("rsi 81.0")
    assert outcome.reasons[3].startswith("atr 9.00%")
    assert outcome.reasons[4].startswith("possible fakeout")


@pytest.mark.parametrize("kind", [Decision.SELL, Decision.HOLD])
def test_sells_and_holds_pass_through_whatever_the_market(validator: AIDecisionValidator, kind: Decision) -> None:
    # Given the worst market imaginable and no indicators at all
    for indicators in ({"rsi_14": 95.0, "atr_pct": 20.0, "adx_14": 5.0, "volume_ratio": 0.1}, {}):
        # When a sell or hold is validated, Then it is untouched
        outcome = validator.validate(decision(kind, confidence="5"), indicators, flash_crash=True)
        assert outcome == ValidationOutcome(kind, False, [])


def test_missing_indicators_block_a_buy(validator: AIDecisionValidator) -> None:
    # Given no RSI, a NaN ATR and no ADX
    indicators = {"atr_pct": float("nan"), "volume_ratio": 1.6}

    # Then each unknown is a reason to hold
    outcome = validator.validate(decision(), indicators, flash_crash=False)
    assert outcome == ValidationOutcome(
        Decision.HOLD, True, ["rsi unavailable", "atr_pct unavailable", "adx_14 unavailable"]
    )


def test_buy_without_rsi_says_rsi_unavailable(validator: AIDecisionValidator) -> None:
    indicators = {key: value for key, value in HEALTHY.items() if key != "rsi_14"}
    assert validator.validate(decision(), indicators, flash_crash=False).reasons == ["rsi unavailable"]


def test_thresholds_come_from_risk_config() -> None:
    # Given looser limits from settings
    loose = AIDecisionValidator(
        risk(
            VALIDATOR_MAX_RSI="80",
            VALIDATOR_MAX_ATR_PCT="10",
            VALIDATOR_FAKEOUT_ADX="10",
            VALIDATOR_FAKEOUT_VOLUME_RATIO="0.5",
        ),
        min_confidence=Decimal("30"),
    )
    borderline = {"rsi_14": 75.0, "atr_pct": 8.0, "adx_14": 15.0, "volume_ratio": 1.0}

    # Then a buy the defaults would block passes, and the defaults do block it
    assert loose.validate(decision(confidence="35"), borderline, flash_crash=False).final_decision is Decision.BUY
    strict = AIDecisionValidator(risk(), min_confidence=Decimal("60"))
    assert len(strict.validate(decision(confidence="35"), borderline, flash_crash=False).reasons) == 4


def test_from_settings_uses_ai_min_confidence(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given AI_MIN_CONFIDENCE=80 in the environment
    monkeypatch.setenv("AI_MIN_CONFIDENCE", "80")
    validator = AIDecisionValidator.from_settings(load_settings(env_file=None))

    # Then a 75-confidence buy is held
    outcome = validator.validate(decision(confidence="75"), HEALTHY, flash_crash=False)
    assert outcome.reasons == ["confidence 75 below minimum 80"]
