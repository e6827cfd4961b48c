from __future__ import annotations

from datetime import datetime
from typing import Any

from backend.app.schemas.common import ApiModel, Money, PageInfo
from src.domain.modes import TradingMode


class PortfolioSnapshotOut(ApiModel):
    id: int
    mode: TradingMode
    total_value_krw: Money
    total_value_usd: Money | None
    cash_krw: Money | None
    profit_rate: Money | None
    positions: dict[str, Any]
    created_at: datetime


class PortfolioHistoryPage(PageInfo):
    items: list[PortfolioSnapshotOut]
