"""Candles for the dashboard's market view, and the AI spend against its budgets."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import Field

from backend.app.schemas.common import ApiModel, Money
from src.domain.modes import TradingMode


class CandlesOut(ApiModel):
    symbol: str
    timeframe: str
    mode: TradingMode
    source: str = Field(description="Where the candles come from: `bundled` (BACKTEST_DATA_DIR) or `upbit`")
    candles: list[tuple[datetime, float, float, float, float, float]] = Field(
        description="[open time (UTC), open, high, low, close, volume], oldest first"
    )


class AIUsageOut(ApiModel):
    day: date = Field(description="The UTC day counted as `today`")
    day_calls: int
    day_cost_usd: Money
    daily_budget_usd: Money
    month_calls: int
    month_cost_usd: Money
    monthly_budget_usd: Money
