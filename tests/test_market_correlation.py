"""btc_correlation: Pearson correlation of log returns over the last aligned bars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from src.ai.market_correlation import btc_correlation
from src.exceptions import InvalidInput


def hourly(values: np.ndarray, start: str = "2026-01-01") -> pd.Series:
    index = pd.date_range(start, periods=len(values), freq="1h", tz="UTC", name="timestamp")
    return pd.Series(values, index=index, dtype=float)


def random_walk(seed: int, bars: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))


def test_same_moves_at_another_scale_correlate_fully() -> None:
    # Given an altcoin that moves exactly like BTC at 1/1000 of the price
    btc = hourly(random_walk(1))
    alt = btc / 1000

    # Then the correlation is 1
    assert btc_correlation(alt, btc, window=100) == pytest.approx(1.0)


def test_mirrored_log_returns_correlate_negatively() -> None:
    btc = hourly(random_walk(2))
    alt = hourly(10_000 / btc.to_numpy())  # log return of alt = -log return of btc
    assert btc_correlation(alt, btc, window=200) == pytest.approx(-1.0)


def test_independent_walks_are_near_zero() -> None:
    result = btc_correlation(hourly(random_walk(3, 3000)), hourly(random_walk(4, 3000)), window=3000)
    assert abs(result) < 0.1


def test_matches_a_plain_pearson_on_log_returns() -> None:
    # Given two related walks
    btc = hourly(random_walk(5))
    alt = hourly(btc.to_numpy() * np.exp(np.random.default_rng(6).normal(0, 0.01, len(btc))))

    # When correlating the last 50 bars
    result = btc_correlation(alt, btc, window=50)

    # Then it equals numpy's Pearson on the 49 log returns of those bars
    expected = np.corrcoef(np.diff(np.log(alt.to_numpy()[-50:])), np.diff(np.log(btc.to_numpy()[-50:])))[0, 1]
    assert result == pytest.approx(expected)


def test_only_the_last_window_counts() -> None:
    # Given unrelated history followed by 30 identical bars
    btc = random_walk(7, 300)
    alt = np.concatenate([random_walk(8, 270), btc[270:] / btc[270] * 50])

    # Then a window inside the identical part gives 1, a long window does not
    assert btc_correlation(hourly(alt), hourly(btc), window=30) == pytest.approx(1.0)
    assert btc_correlation(hourly(alt), hourly(btc), window=300) < 0.9


def test_series_are_aligned_on_their_index() -> None:
    # Given BTC with every hour and the altcoin missing every third hour
    btc = hourly(random_walk(9, 120))
    alt = (btc * 3).drop(btc.index[::3])

    # Then the bars both have are compared and the result is still exact
    assert btc_correlation(alt, btc, window=60) == pytest.approx(1.0)


def test_nan_and_non_positive_prices_are_skipped() -> None:
    # Given a few NaN and zero closes in the altcoin
    btc = hourly(random_walk(10, 200))
    values = btc.to_numpy() * 2
    values[[50, 120, 180]] = np.nan
    values[90] = 0.0
    result = btc_correlation(hourly(values), btc, window=200)

    # Then the remaining pairs still correlate exactly and the result is a number
    assert result == pytest.approx(1.0)


def test_plain_arrays_are_aligned_from_their_ends() -> None:
    btc = random_walk(11, 100)
    alt = np.concatenate([[1.0, 2.0, 3.0], btc * 5])  # three extra old bars
    assert btc_correlation(alt, list(btc), window=100) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("alt", "btc"),
    [
        pytest.param([100.0, 101.0, 102.0], [50.0, 51.0, 52.0], id="too-few-bars"),
        pytest.param([100.0] * 20, list(random_walk(12, 20)), id="alt-flat"),
        pytest.param([np.nan] * 20, list(random_walk(13, 20)), id="all-nan"),
        pytest.param([], [], id="empty"),
    ],
)
def test_undefined_correlation_is_nan(alt: list[float], btc: list[float]) -> None:
    assert math.isnan(btc_correlation(alt, btc, window=20))


def test_window_too_small_is_an_error() -> None:
    with pytest.raises(InvalidInput, match="window"):
        btc_correlation([1.0, 2.0], [1.0, 2.0], window=3)
