"""Strategy signals: the rule gates on a crafted breakout, the live reading of the last bar, parameter checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from src.exceptions import ConfigurationError, DataError
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import StrategySignals
from src.trading.indicators import atr


def quiet_then_breakout(bars: int = 150) -> pd.DataFrame:
    """A slow up-drift with a tight range (a squeeze), then one wide up-bar on triple volume at the end."""
    close = 100.0 + 0.02 * np.arange(bars)
    close[-1] = close[-2] + 3.0
    opens = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(opens, close) + 0.1
    low = np.minimum(opens, close) - 0.1
    volume = np.full(bars, 10.0)
    volume[-1] = 30.0
    index = pd.date_range("2023-01-01", periods=bars, freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": opens, "high": high, "low": low, "close": close, "volume": volume}, index=index)


def test_rule_gates_fire_on_a_squeeze_breakout_with_volume() -> None:
    df = quiet_then_breakout()
    strategy = RuleBasedBreakoutStrategy(squeeze_mode="bb")  # a pure drift has ADX 100: no ADX squeeze
    signals = strategy.generate_signals(df)
    gates = strategy.gates(df)
    # Then every gate holds on the last bar, and the buy is the last bar's conclusion
    assert all(bool(gates[name][-1]) for name in ("trend", "squeeze", "breakout", "volume"))
    assert signals.entry[-1]
    assert not signals.entry[-2]  # no breakout before
    latest = signals.latest()
    assert latest["buy"] is True
    assert latest["breakout"] is True
    assert latest["timestamp"] == df.index[-1].isoformat()
    # And the ATR the exit levels are set from is the signal bar's ATR(14); the exits are 2 and 3 ATR
    atr_now = atr(df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy())[-1]
    assert signals.atr[-1] == pytest.approx(atr_now)
    assert (strategy.exit_policy.stop_atr, strategy.exit_policy.target_atr) == (2.0, 3.0)


def test_volume_gate_blocks_without_volume_or_obv() -> None:
    df = quiet_then_breakout()
    df.iloc[-1, df.columns.get_loc("volume")] = 10.0
    strategy = RuleBasedBreakoutStrategy(squeeze_mode="adx", adx_max=100.0, use_obv=False)
    assert not strategy.generate_signals(df).entry[-1]


def test_volatility_breakout_target_and_live_reading() -> None:
    df = quiet_then_breakout(10)
    signals = VolatilityBreakoutStrategy(k=0.5).generate_signals(df)
    expected = df["open"].to_numpy()[1:] + 0.5 * (df["high"].to_numpy()[:-1] - df["low"].to_numpy()[:-1])
    np.testing.assert_array_equal(signals.entry[1:], df["high"].to_numpy()[1:] >= expected)
    assert not signals.entry[0]
    assert signals.exit.all()  # held one bar: sold at the next close
    assert signals.latest()["buy"] == bool(df["high"].iloc[-1] >= expected[-1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: VolatilityBreakoutStrategy(k=0),
        lambda: VolatilityBreakoutStrategy(k=0.5, trend_window=0),
        lambda: RuleBasedBreakoutStrategy(squeeze_mode="nope"),  # type: ignore[arg-type]
        lambda: RuleBasedBreakoutStrategy(breakout_mode="nope"),  # type: ignore[arg-type]
        lambda: RuleBasedBreakoutStrategy(stop_atr=-1),
        lambda: RuleBasedBreakoutStrategy(donchian_period=1),
    ],
)
def test_bad_parameters_are_configuration_errors(make) -> None:
    with pytest.raises(ConfigurationError):
        make()


def test_missing_columns_and_empty_frames_are_data_errors() -> None:
    with pytest.raises(DataError, match="high"):
        VolatilityBreakoutStrategy().generate_signals(pd.DataFrame({"open": [1.0], "low": [1.0], "close": [1.0]}))
    with pytest.raises(DataError, match="no candles"):
        StrategySignals.empty(pd.DatetimeIndex([], tz="UTC")).latest()
