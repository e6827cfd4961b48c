from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from backend.app.schemas.common import ApiModel, PageInfo
from src.api.interfaces import OrderType, Side
from src.config.settings import TradingMode
from src.trading.orders import OrderStatus


class OrderOut(ApiModel):
    id: int
    order_id: str
    identifier: str
    exchange_uuid: str | None
    symbol: str
    side: Side
    order_type: OrderType
    price: Decimal | None
    amount: Decimal | None
    requested_total: Decimal | None
    filled_amount: Decimal
    executed_funds: Decimal
    avg_fill_price: Decimal | None
    paid_fee: Decimal
    status: OrderStatus
    exchange_state: str | None
    error_message: str | None
    reason: str | None
    mode: TradingMode
    cycle_id: str | None
    created_at: datetime
    updated_at: datetime


class OrderPage(PageInfo):
    items: list[OrderOut]
