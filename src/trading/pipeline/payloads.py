"""What the pipeline writes into JSON columns: finite numbers, holdings and liquidity as plain values."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from src.trading.pipeline.analysis import Analysis


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def position_payload(holding: Any) -> dict[str, Any] | None:
    if holding is None:
        return None
    return {
        "volume": str(holding.volume),
        "avg_buy_price": str(holding.avg_buy_price),
        "price": None if holding.price is None else str(holding.price),
        "profit_rate": None if holding.profit_rate is None else str(holding.profit_rate),
    }


def liquidity_payload(analysis: Analysis) -> dict[str, Any] | None:
    assessment = analysis.liquidity
    if assessment is None:
        return None
    return {
        "allowed": assessment.allowed,
        "split_into": assessment.split_into,
        "slippage_pct": None if assessment.slippage_pct is None else str(assessment.slippage_pct),
        "expected_avg_price": None if assessment.expected_avg_price is None else str(assessment.expected_avg_price),
        "reason": assessment.reason,
    }


def jsonable(value: Any) -> Any:
    """Decimals and datetimes as strings, NaN as null: what a JSON column can hold."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return jsonable(value.item())
    return value
