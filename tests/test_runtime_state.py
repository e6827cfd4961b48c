"""Which requested run-time settings the scheduler applies (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from src.config.runtime_state import AppliedSettings, SettingStatus, apply_requests, setting_status
from src.config.settings import Settings, load_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TRADING_SYMBOLS", "KRW-BTC")
    monkeypatch.setenv("MAX_POSITIONS", "3")
    return load_settings(env_file=None)


def _no_k_above_one(settings: Settings) -> list[str]:
    """A stand-in for the scheduler's check of a strategy's parameter space."""
    k = settings.strategy.params.get("k", 0)
    return [f"strategy {settings.strategy.name}: parameter k must be in 0.1..1, got {k}"] if k > 1 else []


def test_a_request_applies_with_its_time_and_its_removal_returns_to_the_environment(environment: Settings) -> None:
    start = AppliedSettings.from_environment(environment, T0)

    applied = apply_requests(start, {"risk.max_positions": 5, "trading.symbols": ["KRW-ETH"]}, T1)

    assert applied.settings.risk.max_positions == 5
    assert applied.settings.trading.symbols == ["KRW-ETH"]
    assert applied.changed == ("trading.symbols", "risk.max_positions")
    assert applied.since["risk.max_positions"] == T1
    assert applied.since["risk.max_trades_per_day"] == T0
    back = apply_requests(applied, {"trading.symbols": None}, T1 + timedelta(hours=1))
    assert back.settings.trading.symbols == ["KRW-BTC"]
    assert back.settings.risk.max_positions == 3


def test_a_refused_request_keeps_the_value_in_use_and_is_reported(environment: Settings) -> None:
    in_use = apply_requests(AppliedSettings.from_environment(environment, T0), {"risk.max_positions": 5}, T0)

    result = apply_requests(in_use, {"risk.max_positions": True, "strategy.params": {"k": 2}}, T1, _no_k_above_one)

    assert result.settings.risk.max_positions == 5  # the value in use stays
    assert result.settings.strategy.params == {}
    assert result.changed == ()
    assert "parameter k must be in 0.1..1" in result.rejected["strategy.params"].reason
    report = result.to_json()
    assert setting_status("risk.max_positions", True, report)[0] is SettingStatus.REJECTED
    assert setting_status("strategy.params", {"k": 2}, report)[0] is SettingStatus.REJECTED
    assert setting_status("risk.max_positions", 5, report) == (SettingStatus.APPLIED, None)
    assert setting_status("risk.max_trades_per_day", 3, report)[0] is SettingStatus.PENDING
    assert setting_status("risk.max_trades_per_day", 3, None)[0] is SettingStatus.UNKNOWN


def test_a_strategy_and_its_parameters_are_applied_together(environment: Settings) -> None:
    # Given a scheduler trading rule_breakout with its defaults
    start = AppliedSettings.from_environment(environment, T0)
    # When volatility_breakout is requested with its k (a parameter rule_breakout does not have)
    stored = {"strategy.name": "volatility_breakout", "strategy.params": {"k": 0.6, "max_hold_hours": 48}}
    applied = apply_requests(start, stored, T1, _no_k_above_one)
    # Then both take effect at once
    assert (applied.settings.strategy.name, applied.settings.strategy.params) == (
        "volatility_breakout",
        {"k": 0.6, "max_hold_hours": 48},
    )
    assert applied.changed == ("strategy.name", "strategy.params")
    # And when the pair is refused, neither moves, and each says why
    refused = apply_requests(
        applied, {"strategy.name": "rule_breakout", "strategy.params": {"k": 5}}, T1, _no_k_above_one
    )
    assert refused.settings.strategy == applied.settings.strategy
    assert set(refused.rejected) == {"strategy.name", "strategy.params"}
    # And a pair whose name breaks its rule keeps both, the other waiting for it
    bad = apply_requests(applied, {"strategy.name": "Bad Name", "strategy.params": {"k": 0.5}}, T1, _no_k_above_one)
    assert bad.settings.strategy == applied.settings.strategy
    assert "waits for strategy.name" in bad.rejected["strategy.params"].reason


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("risk.stop_loss_pct", "set stop_loss_pct in strategy.params"),
        ("risk.take_profit_pct", "set take_profit_pct in strategy.params"),
        ("risk.trailing_stop_pct", "set trailing_stop_pct in strategy.params"),
    ],
)
def test_a_stored_request_for_a_removed_key_is_refused_with_its_new_place(
    environment: Settings, key: str, instead: str
) -> None:
    # Given a bot_config row written by an older version for a key that was removed
    start = AppliedSettings.from_environment(environment, T0)
    # When the scheduler applies the requests
    result = apply_requests(start, {key: "3.5", "risk.max_positions": 4}, T1)
    # Then the other requests apply, and that one is refused with the reason, not a crash
    assert result.settings.risk.max_positions == 4
    assert result.rejected[key].reason == f"{key} was removed: exits belong to the strategy; {instead}"
    assert result.to_json()["rejected"][key] == {"value": "3.5", "reason": result.rejected[key].reason}
