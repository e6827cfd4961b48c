"""Indicators against independently computed values (plain numpy/pandas written here)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.exceptions import DataError
from src.trading import indicators as ind

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    data = pd.read_csv(ROOT / "backtest_data" / "daily" / "KRW-ETH_1d.csv", index_col="timestamp", parse_dates=True)
    return data.iloc[:400]


def wilder(values: np.ndarray, period: int, seed: float) -> np.ndarray:
    """Wilder smoothing starting from ``seed`` at index period-1 of ``values``' own positions."""
    out = np.full(len(values), np.nan)
    out[period - 1] = seed
    for i in range(period, len(values)):
        out[i] = (out[i - 1] * (period - 1) + values[i]) / period
    return out


def test_sma_and_ema(df: pd.DataFrame) -> None:
    close = df["close"].to_numpy()
    np.testing.assert_allclose(ind.sma(close, 20)[19:], pd.Series(close).rolling(20).mean().to_numpy()[19:])
    # EMA seeded with the SMA of the first 12 closes, then alpha = 2/13
    expected = np.full(len(close), np.nan)
    expected[11] = close[:12].mean()
    for i in range(12, len(close)):
        expected[i] = expected[i - 1] + 2 / 13 * (close[i] - expected[i - 1])
    np.testing.assert_allclose(ind.ema(close, 12)[11:], expected[11:], rtol=1e-10)


def test_rsi_is_wilders(df: pd.DataFrame) -> None:
    close = df["close"].to_numpy()
    change = np.diff(close)
    gains, losses = np.maximum(change, 0), np.maximum(-change, 0)
    avg_gain = wilder(gains, 14, gains[:14].mean())
    avg_loss = wilder(losses, 14, losses[:14].mean())
    expected = 100 - 100 / (1 + avg_gain / avg_loss)
    np.testing.assert_allclose(ind.rsi(close)[14:], expected[13:], rtol=1e-8)


def test_atr_is_wilders_true_range(df: pd.DataFrame) -> None:
    h, lo, c = (df[k].to_numpy() for k in ("high", "low", "close"))
    tr = np.maximum.reduce([h[1:] - lo[1:], np.abs(h[1:] - c[:-1]), np.abs(lo[1:] - c[:-1])])
    expected = wilder(tr, 14, tr[:14].mean())
    np.testing.assert_allclose(ind.atr(h, lo, c)[14:], expected[13:], rtol=1e-8)


def test_bollinger_uses_population_stddev_and_width(df: pd.DataFrame) -> None:
    close = pd.Series(df["close"].to_numpy())
    upper, middle, lower, width = ind.bollinger(close.to_numpy())
    mean = close.rolling(20).mean()
    std = close.rolling(20).std(ddof=0)
    np.testing.assert_allclose(middle[19:], mean[19:], rtol=1e-10)
    np.testing.assert_allclose(upper[19:], (mean + 2 * std)[19:], rtol=1e-8)
    np.testing.assert_allclose(lower[19:], (mean - 2 * std)[19:], rtol=1e-8)
    np.testing.assert_allclose(width[19:], ((4 * std) / mean)[19:], rtol=1e-7)


def test_width_percentile_and_squeeze() -> None:
    values = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 6.0])
    pct = ind.rolling_percentile_rank(values, 3)
    # window [3,2,1] -> 1 is the smallest of 3 -> 33.3 %; window [2,1,6] -> 6 is the largest -> 100 %
    assert math.isnan(pct[1])
    assert pct[4] == pytest.approx(100 / 3)
    assert pct[5] == pytest.approx(100.0)
    assert list(ind.bollinger_squeeze(pct, threshold=40.0)) == [False, False, True, True, True, False]


def test_stochastic_obv_donchian_volume_ratio(df: pd.DataFrame) -> None:
    h, lo, c, v = (df[k].to_numpy() for k in ("high", "low", "close", "volume"))
    hh = pd.Series(h).rolling(14).max().to_numpy()
    ll = pd.Series(lo).rolling(14).min().to_numpy()
    fast_k = 100 * (c - ll) / (hh - ll)
    slow_k = pd.Series(fast_k).rolling(3).mean().to_numpy()
    slow_d = pd.Series(slow_k).rolling(3).mean().to_numpy()
    k, d = ind.stochastic(h, lo, c)
    np.testing.assert_allclose(k[17:], slow_k[17:], rtol=1e-8)
    np.testing.assert_allclose(d[17:], slow_d[17:], rtol=1e-8)

    expected_obv = np.concatenate(([v[0]], v[0] + np.cumsum(np.sign(np.diff(c)) * v[1:])))
    np.testing.assert_allclose(ind.obv(c, v), expected_obv, rtol=1e-10)

    high20, low20 = ind.donchian(h, lo)
    np.testing.assert_array_equal(high20[19:], pd.Series(h).rolling(20).max().to_numpy()[19:])
    np.testing.assert_array_equal(low20[19:], pd.Series(lo).rolling(20).min().to_numpy()[19:])
    np.testing.assert_allclose(ind.volume_ratio(v)[19:], (v / pd.Series(v).rolling(20).mean().to_numpy())[19:])


def test_adx_is_high_in_a_steady_trend_and_low_in_chop() -> None:
    n = 200
    trend = np.linspace(100, 300, n)
    chop = 100 + np.tile([1.0, -1.0], n // 2)
    adx_trend = ind.adx(trend + 1, trend - 1, trend)
    adx_chop = ind.adx(chop + 1, chop - 1, chop)
    assert adx_trend[-1] > 90
    assert adx_chop[-1] < 20


def test_compute_indicators_has_the_contract_columns_and_no_lookahead(df: pd.DataFrame) -> None:
    full = ind.compute_indicators(df)
    assert tuple(full.columns) == ind.INDICATOR_KEYS
    assert full.index.equals(df.index)
    head = ind.compute_indicators(df.iloc[:250])
    pd.testing.assert_frame_equal(full.iloc[:250], head)
    assert full["atr_pct"].iloc[-1] == pytest.approx(100 * full["atr_14"].iloc[-1] / df["close"].iloc[-1])


def test_get_latest_indicators_drops_nan_keys(df: pd.DataFrame) -> None:
    latest = ind.get_latest_indicators(df)
    assert set(latest) == set(ind.INDICATOR_KEYS)
    assert all(isinstance(v, float) and not math.isnan(v) for v in latest.values())
    short = ind.get_latest_indicators(df.iloc[:25])
    assert "sma_50" not in short
    assert "sma_20" in short


def test_missing_column_is_a_data_error(df: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="volume"):
        ind.compute_indicators(df.drop(columns=["volume"]))
