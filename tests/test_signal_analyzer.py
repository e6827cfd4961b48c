"""Named signals from indicator snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from src.trading.indicators import get_latest_indicators
from src.trading.signal_analyzer import Signal, SignalAnalyzer

ROOT = Path(__file__).resolve().parents[1]


def by_name(signals: list[Signal]) -> dict[str, Signal]:
    return {s.name: s for s in signals}


def test_bullish_breakout_snapshot() -> None:
    # Given a close above SMA50, at the 20-bar high, on 2.5x volume, with a low band-width percentile
    snapshot = {
        "close": 105.0,
        "sma_20": 102.0,
        "sma_50": 100.0,
        "rsi_14": 62.0,
        "donchian_high_20": 105.0,
        "donchian_low_20": 90.0,
        "volume_ratio": 2.5,
        "bb_width_percentile": 10.0,
        "obv_slope": 1200.0,
    }
    signals = by_name(SignalAnalyzer().analyze_signals(snapshot))
    # Then the trend, breakout and OBV signals are bullish, volume is at full strength, squeeze half
    assert signals["trend"].direction == "bullish"
    assert signals["trend"].strength == 1.0
    assert signals["breakout"].direction == "bullish"
    assert signals["volume"].strength == 1.0
    assert signals["squeeze"].strength == 0.5
    assert signals["rsi"].direction == "neutral"
    assert "macd" not in signals  # not in the snapshot -> no signal invented


def test_overbought_rsi_and_stochastic_are_bearish() -> None:
    signals = by_name(SignalAnalyzer().analyze_signals({"rsi_14": 85.0, "stoch_k": 90.0, "stoch_d": 95.0}))
    assert signals["rsi"].direction == "bearish"
    assert 0 < signals["rsi"].strength <= 1
    assert signals["stochastic"].direction == "bearish"


def test_summary_is_json_and_nets_strengths() -> None:
    analyzer = SignalAnalyzer()
    df = pd.read_csv(ROOT / "backtest_data" / "daily" / "KRW-BTC_1d.csv", index_col="timestamp", parse_dates=True)
    signals = analyzer.analyze_signals(get_latest_indicators(df))
    summary = analyzer.summary(signals)
    json.dumps(summary)
    assert len(summary["signals"]) == 11
    assert summary["net_strength"] == round(summary["bullish_strength"] - summary["bearish_strength"], 4)
    assert summary["bias"] in ("bullish", "bearish", "neutral")
    assert all(0.0 <= s.strength <= 1.0 for s in signals)
