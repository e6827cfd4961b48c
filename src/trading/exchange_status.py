"""The exchange's order state in our terms, and which of our statuses are final."""

from __future__ import annotations

from src.api.interfaces import ExchangeOrderState, Order
from src.domain.orders import OrderStatus

_FINAL = (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.FAILED)


def is_final(status: OrderStatus) -> bool:
    return status in _FINAL


def status_from_exchange(order: Order) -> OrderStatus:
    """Map the exchange's state to ours. A cancel or a self-match prevention (``prevented``, final) that executed
    something is a fill of what executed; one that executed nothing is cancelled."""
    if order.is_filled:
        return OrderStatus.FILLED
    if order.state in (ExchangeOrderState.CANCEL, ExchangeOrderState.PREVENTED):
        return OrderStatus.CANCELLED
    return OrderStatus.OPEN
