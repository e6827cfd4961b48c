"""Settling an order the exchange answered: our status, its trades from the fills, the position, the news.

The order and its trades are written in one transaction; the position book then applies the fills once
and a sell's realised P&L goes onto its trades (see ``OrderSettlement._apply_to_position``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from src.api.interfaces import ExchangeOrderState, Order
from src.domain.events import EventKind, NotificationEvent, Notifier
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.money import ZERO, quantize_money
from src.domain.orders import OrderStatus, Side, TradeStatus
from src.trading.exchange_status import status_from_exchange
from src.trading.ports import ExecutionObserver, PositionBook
from src.trading.repository import ITradingRepository, OrderRecord, TradeRecord
from src.trading.results import ExecutionResult
from src.utils.logger import get_logger

log = get_logger(__name__)


class OrderSettlement:
    """The settling half of ``TradingService`` (which sets these attributes)."""

    repository: ITradingRepository
    mode: TradingMode
    clock: Callable[[], datetime]
    positions: PositionBook | None
    notifier: Notifier
    observer: ExecutionObserver

    async def _settle(
        self, record: OrderRecord, order: Order, *, atr: Decimal | None = None, exit_reason: ExitReason | None = None
    ) -> ExecutionResult:
        status = status_from_exchange(order)
        changes: dict[str, Any] = {
            "exchange_uuid": order.uuid,
            "exchange_state": order.state.value,
            "status": status,
        }
        if status is OrderStatus.OPEN:
            updated = await self.repository.update_order(record.identifier, **changes)
            log.info("order.open", identifier=record.identifier, state=order.state.value)
            return ExecutionResult(updated.identifier, updated.symbol, updated.side, status)
        changes.update(
            filled_amount=order.executed_volume,
            executed_funds=order.executed_funds,
            avg_fill_price=order.average_price,
            paid_fee=order.paid_fee,
        )
        prevented = _prevented_note(order)
        if prevented:
            changes["error_message"] = prevented
            log.warning("order.prevented", identifier=record.identifier, symbol=record.symbol, note=prevented)
        trades = self._trades_from(record, order) if status is OrderStatus.FILLED else []
        updated = await self.repository.settle_order(record.identifier, changes, trades)
        if trades:
            await self._apply_to_position(updated, trades, atr, exit_reason or exit_reason_of(record))
        for trade in trades:
            self.observer.on_trade(trade)
        if trades:
            self._announce(updated, trades)
        log.info(
            "order.settled",
            identifier=record.identifier,
            status=status.value,
            volume=str(order.executed_volume),
            funds=str(order.executed_funds),
            fee=str(order.paid_fee),
        )
        return ExecutionResult(updated.identifier, updated.symbol, updated.side, status, trades)

    def _trades_from(self, record: OrderRecord, order: Order) -> list[TradeRecord]:
        """One trade per exchange fill (trade_id = fill uuid), or one ``{identifier}-fill`` when none are listed."""
        at = self.clock()
        if order.trades:
            parts = [(f.uuid, f.price, f.volume, f.funds) for f in order.trades]
        else:
            price = order.average_price or ZERO
            parts = [(f"{record.identifier}-fill", price, order.executed_volume, order.executed_funds)]
        shares = _shares([funds for *_, funds in parts])
        return [
            TradeRecord(
                trade_id=trade_id,
                symbol=record.symbol,
                side=record.side,
                price=price,
                amount=volume,
                total=funds,
                fee=quantize_money(order.paid_fee * share),
                mode=self.mode,
                status=TradeStatus.COMPLETED,
                order_identifier=record.identifier,
                created_at=at,
                exit_reason=record.exit_reason,
            )
            for (trade_id, price, volume, funds), share in zip(parts, shares, strict=True)
        ]

    async def _apply_to_position(
        self,
        order: OrderRecord,
        trades: list[TradeRecord],
        atr: Decimal | None,
        exit_reason: ExitReason | None,
        at: datetime | None = None,
    ) -> bool:
        """Positions follow the written trades; a sell's realised P&L is then written onto its trades.

        The trades and the order are one transaction; the position update (with its ``position_fills``
        marker) is the next one, and the P&L on the trades the one after. A failure or a crash in between
        is repaired by ``reconcile``: both later steps are idempotent. False when the update failed.
        """
        if self.positions is None:
            return True
        try:
            pnl = await self.positions.on_fill(order, trades, at or self.clock(), atr=atr, exit_reason=exit_reason)
        except Exception as exc:
            log.exception("position.update_failed", identifier=order.identifier)
            await self.repository.log_event(
                "error",
                "position update after a fill failed",
                {"identifier": order.identifier, "symbol": order.symbol, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        if pnl is None:
            return True
        shares = _shares([t.total for t in trades])
        by_trade = {t.trade_id: quantize_money(pnl * share) for t, share in zip(trades, shares, strict=True)}
        await self.repository.record_realized_pnl(by_trade)
        for trade in trades:
            trade.realized_pnl = by_trade[trade.trade_id]
        return True

    def _announce(self, order: OrderRecord, trades: list[TradeRecord]) -> None:
        volume = sum((t.amount for t in trades), ZERO)
        total = sum((t.total for t in trades), ZERO)
        pnl = [t.realized_pnl for t in trades if t.realized_pnl is not None]
        self.notifier.notify(
            NotificationEvent(
                EventKind.TRADE_EXECUTED,
                f"{order.side.value.upper()} {order.symbol}",
                {
                    "symbol": order.symbol,
                    "side": order.side.value,
                    "price": order.avg_fill_price,
                    "volume": volume,
                    "total": total,
                    "fee": order.paid_fee,
                    "pnl": sum(pnl, ZERO) if pnl else None,
                    "mode": self.mode.value,
                    "reason": order.reason,
                    "identifier": order.identifier,
                },
                at=self.clock(),
            )
        )


def _prevented_note(order: Order) -> str | None:
    """What self-match prevention did to the order (Upbit's ``prevented`` state or ``prevented_volume``)."""
    if order.state is not ExchangeOrderState.PREVENTED and order.prevented_volume <= 0:
        return None
    return (
        f"self-match prevention (smp): state {order.state.value}, prevented volume {order.prevented_volume}, "
        f"executed {order.executed_volume}; the rest is cancelled"
    )


def _shares(amounts: list[Decimal]) -> list[Decimal]:
    total = sum(amounts, ZERO)
    if total <= 0:
        return [Decimal("1") / len(amounts)] * len(amounts)
    return [amount / total for amount in amounts]


def exit_reason_of(record: OrderRecord) -> ExitReason | None:
    """``exit: stop_loss`` -> ``STOP_LOSS`` (orders of the position job carry their exit reason)."""
    if record.side is not Side.SELL or not record.reason:
        return None
    return ExitReason.of_order_reason(record.reason)
