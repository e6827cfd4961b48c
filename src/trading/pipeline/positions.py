"""``PositionService`` as the execution side's ``PositionBook``: fills in, realised P&L out."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from src.domain.exits import ExitReason
from src.domain.money import ZERO
from src.position.service import PositionService
from src.trading.repository import OrderRecord, TradeRecord


class ServicePositionBook:
    def __init__(self, service: PositionService) -> None:
        self.service = service

    async def on_fill(
        self,
        order: OrderRecord,
        trades: list[TradeRecord],
        at: datetime,
        *,
        atr: Decimal | None,
        exit_reason: ExitReason | None,
    ) -> Decimal | None:
        volume = sum((t.amount for t in trades), ZERO)
        funds = sum((t.total for t in trades), ZERO)
        if volume <= 0:
            return None
        fee = sum((t.fee for t in trades), ZERO)
        outcome = await self.service.on_fill(
            order.symbol,
            order.side,
            funds / volume,
            volume,
            fee,
            at,
            atr,
            order_identifier=order.identifier,
            reason=exit_reason,
        )
        await self.service.store.trade_executed(self.service.mode, at, order.identifier)
        return outcome.realized_pnl

    async def needs_applying(self, order: OrderRecord, trades: list[TradeRecord]) -> bool:
        """Not yet in the positions, or its realised P&L is not yet on its trades (a crash in between)."""
        applied = await self.service.applied(order.identifier)
        if applied is None:
            return True
        return applied.realized_pnl is not None and any(t.realized_pnl is None for t in trades)
