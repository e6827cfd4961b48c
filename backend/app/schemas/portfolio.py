from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from backend.app.schemas.common import ApiModel, PageInfo
from src.config.settings import TradingMode


class PortfolioSnapshotOut(ApiModel):
    id: int
    mode: TradingMode
    total_value_krw: Decimal
    total_value_usd: Decimal | None
    cash_krw: Decimal | None
    profit_rate: Decimal | None
    positions: dict[str, Any]
    created_at: datetime


class PortfolioHistoryPage(PageInfo):
    items: list[PortfolioSnapshotOut]
