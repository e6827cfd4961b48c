from __future__ import annotations

from datetime import datetime

from pydantic import Field

from backend.app.schemas.common import ApiModel, Money, PageInfo
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side


class OrderOut(ApiModel):
    id: int
    order_id: str
    identifier: str
    exchange_uuid: str | None
    symbol: str
    side: Side
    order_type: OrderType
    price: Money | None
    amount: Money | None
    requested_total: Money | None
    filled_amount: Money
    executed_funds: Money
    avg_fill_price: Money | None
    paid_fee: Money
    status: OrderStatus
    exchange_state: str | None
    error_message: str | None
    reason: str | None
    mode: TradingMode
    cycle_id: str | None
    exit_reason: ExitReason | None = Field(
        description="A sell: the exit that caused it (stop_loss, take_profit, trailing_stop, signal); null on buys"
    )
    created_at: datetime
    updated_at: datetime


class OrderPage(PageInfo):
    items: list[OrderOut]
