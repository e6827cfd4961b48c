"""``backend/app/core/parity.py``: both sides of the parity report trade the same strategy with the same
parameters, and the window and timeframe are checked before anything runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.app.core.parity import ParityOptions, parse_window, run_parity, settings_for
from src.config.settings import Settings, load_settings
from src.exceptions import ConfigurationError


def bot_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(env_file=None)


def test_flags_go_over_the_configured_strategys_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = bot_settings(
        monkeypatch, TRADING_STRATEGY="volatility_breakout", STRATEGY_PARAMS='{"k": 0.7, "trend_filter": true}'
    )

    chosen = settings_for(settings, "volatility_breakout", {"k": 0.4})

    assert chosen.strategy.name == "volatility_breakout"
    assert chosen.strategy.params == {"k": 0.4, "trend_filter": True}
    assert settings.strategy.params == {"k": 0.7, "trend_filter": True}  # the bot's settings are not changed


def test_another_strategy_does_not_inherit_the_configured_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = bot_settings(monkeypatch, TRADING_STRATEGY="volatility_breakout", STRATEGY_PARAMS='{"k": 0.7}')

    chosen = settings_for(settings, "rule_breakout", {})

    assert chosen.strategy.name == "rule_breakout"
    assert chosen.strategy.params == {}


def test_a_timeframe_the_bot_does_not_trade_is_refused_before_the_backtest_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = bot_settings(monkeypatch)
    options = ParityOptions(
        "rule_breakout", "KRW-BTC", datetime(2023, 9, 1, tzinfo=UTC), datetime(2023, 9, 2, tzinfo=UTC), timeframe="4h"
    )

    def backtest(_: Settings) -> list[dict[str, object]]:
        raise AssertionError("the backtest must not run")

    with pytest.raises(ConfigurationError, match="--timeframe 4h: the bot trades 1h candles"):
        run_parity(settings, options, backtest)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (None, "2023-09-02", "--parity needs --start and --end"),
        ("2023-09-02", "2023-09-01", "--start 2023-09-02 is not before --end 2023-09-01"),
        ("2023-13-01", "2023-09-01", "--start '2023-13-01': expected an ISO date"),
    ],
)
def test_the_window_must_be_two_ordered_moments(start: str | None, end: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_window(start, end)


def test_naive_moments_are_utc() -> None:
    assert parse_window("2023-09-01", "2023-09-01T12:00") == (
        datetime(2023, 9, 1, tzinfo=UTC),
        datetime(2023, 9, 1, 12, tzinfo=UTC),
    )
