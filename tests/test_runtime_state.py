"""Which requested run-time settings the scheduler applies (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from src.config.runtime_state import AppliedSettings, SettingStatus, apply_requests, setting_status
from src.config.settings import Settings, load_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TRADING_SYMBOLS", "KRW-BTC")
    monkeypatch.setenv("STOP_LOSS_PCT", "5")
    return load_settings(env_file=None)


def test_a_request_applies_with_its_time_and_its_removal_returns_to_the_environment(environment: Settings) -> None:
    start = AppliedSettings.from_environment(environment, T0)

    applied = apply_requests(start, {"risk.stop_loss_pct": "2.5", "trading.symbols": ["KRW-ETH"]}, T1)

    assert applied.settings.risk.stop_loss_pct == Decimal("2.5")
    assert applied.settings.trading.symbols == ["KRW-ETH"]
    assert applied.changed == ("trading.symbols", "risk.stop_loss_pct")
    assert applied.since["risk.stop_loss_pct"] == T1
    assert applied.since["risk.max_positions"] == T0
    back = apply_requests(applied, {"trading.symbols": None}, T1 + timedelta(hours=1))
    assert back.settings.trading.symbols == ["KRW-BTC"]
    assert back.settings.risk.stop_loss_pct == Decimal("5")


def test_a_refused_request_keeps_the_value_in_use_and_is_reported(environment: Settings) -> None:
    in_use = apply_requests(AppliedSettings.from_environment(environment, T0), {"risk.take_profit_pct": "20"}, T0)

    result = apply_requests(in_use, {"risk.take_profit_pct": "0.1", "risk.max_positions": True}, T1)

    assert result.settings.risk.take_profit_pct == Decimal("20")
    assert result.settings.risk.max_positions == environment.risk.max_positions
    assert result.changed == ()
    assert "round-trip fee" in result.rejected["risk.take_profit_pct"].reason
    report = result.to_json()
    assert setting_status("risk.take_profit_pct", "0.1", report)[0] is SettingStatus.REJECTED
    assert setting_status("risk.max_positions", True, report)[0] is SettingStatus.REJECTED
    assert setting_status("risk.take_profit_pct", "20.0", report) == (SettingStatus.APPLIED, None)
    assert setting_status("risk.stop_loss_pct", "3", report)[0] is SettingStatus.PENDING
    assert setting_status("risk.stop_loss_pct", "3", None)[0] is SettingStatus.UNKNOWN
