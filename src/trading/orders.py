"""Our side of an order's life: an explicit state machine with legal transitions.

``pending``: the row is written and the request may or may not have reached the exchange.
Only reconciliation (asking the exchange by ``identifier``) moves a pending order on after a crash.
"""

from __future__ import annotations

from enum import StrEnum

from src.api.interfaces import ExchangeOrderState, Order
from src.exceptions import TradingSystemError


class OrderStatus(StrEnum):
    PENDING = "pending"
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"
    FAILED = "failed"


class TradeStatus(StrEnum):
    COMPLETED = "completed"
    PENDING = "pending"
    FAILED = "failed"


_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.OPEN, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.FAILED}),
    OrderStatus.OPEN: frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED}),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.FAILED: frozenset(),
}


class IllegalOrderTransition(TradingSystemError):
    """An order was asked to move to a state it cannot reach from where it is."""


def check_transition(current: OrderStatus, new: OrderStatus) -> None:
    if new is not current and new not in _TRANSITIONS[current]:
        raise IllegalOrderTransition(f"order cannot go from {current} to {new}", current=current, new=new)


def status_from_exchange(order: Order) -> OrderStatus:
    """Map the exchange's state to ours. A cancel that executed something is a fill."""
    if order.is_filled:
        return OrderStatus.FILLED
    if order.state is ExchangeOrderState.CANCEL:
        return OrderStatus.CANCELLED
    return OrderStatus.OPEN
