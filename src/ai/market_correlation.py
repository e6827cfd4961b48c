"""How closely an altcoin moves with BTC: Pearson correlation of log returns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd

from src.exceptions import InvalidInput

MIN_RETURNS = 3  # fewer return pairs than this give no meaningful correlation

PriceSeries: TypeAlias = pd.Series | np.ndarray | Sequence[float]


def btc_correlation(alt_close: PriceSeries, btc_close: PriceSeries, window: int) -> float:
    """Pearson correlation of log returns over the last ``window`` aligned bars (-1..1).

    Two ``pd.Series`` are aligned on their index (bars present in both); plain arrays are aligned
    from their ends. Returns are taken between consecutive aligned bars; a pair with a NaN,
    a non-positive price or a NaN return on either side is dropped. Returns ``nan`` when fewer than
    ``MIN_RETURNS`` pairs remain or either series does not move.
    """
    if window < MIN_RETURNS + 1:
        raise InvalidInput(f"window must be at least {MIN_RETURNS + 1} bars, got {window}")
    aligned = _aligned(alt_close, btc_close).tail(window)
    prices = aligned.where(aligned > 0)
    returns = np.log(prices).diff().dropna()
    if len(returns) < MIN_RETURNS:
        return math.nan
    alt, btc = returns["alt"].to_numpy(), returns["btc"].to_numpy()
    if alt.std() == 0 or btc.std() == 0:
        return math.nan
    return float(np.clip(np.corrcoef(alt, btc)[0, 1], -1.0, 1.0))


def _aligned(alt_close: PriceSeries, btc_close: PriceSeries) -> pd.DataFrame:
    if isinstance(alt_close, pd.Series) and isinstance(btc_close, pd.Series):
        frame = pd.concat({"alt": alt_close, "btc": btc_close}, axis=1, join="inner")
        return frame.sort_index().astype(float)
    alt = np.asarray(alt_close, dtype=float)
    btc = np.asarray(btc_close, dtype=float)
    length = min(len(alt), len(btc))
    return pd.DataFrame({"alt": alt[len(alt) - length :], "btc": btc[len(btc) - length :]})
