"""Orders: sides, types, our order statuses and their legal transitions, and trade statuses.

``pending``: the row is written and the request may or may not have reached the exchange.
Only reconciliation (asking the exchange by ``identifier``) moves a pending order on after a crash.
"""

from __future__ import annotations

from enum import StrEnum

from src.exceptions import TradingSystemError


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def upbit(self) -> str:
        return "bid" if self is Side.BUY else "ask"

    @classmethod
    def from_upbit(cls, side: str) -> Side:
        return cls.BUY if side == "bid" else cls.SELL


class OrderType(StrEnum):
    """Upbit's ``ord_type`` values."""

    LIMIT = "limit"
    MARKET_BUY = "price"  # market buy of a KRW total
    MARKET_SELL = "market"  # market sell of a base volume


class SmpType(StrEnum):
    """Upbit's self-match prevention (``smp_type``), decided by the taker order's value.

    ``cancel_maker`` (Upbit's default since 2026-11-09) keeps the incoming order and cancels our resting one;
    ``cancel_taker`` keeps the resting one; ``reduce`` takes the overlap off both; ``none`` lets our own orders
    trade with each other. We always send it explicitly (``UPBIT_SMP_TYPE``).
    """

    CANCEL_MAKER = "cancel_maker"
    CANCEL_TAKER = "cancel_taker"
    REDUCE = "reduce"
    NONE = "none"


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


ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.OPEN, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.FAILED}),
    OrderStatus.OPEN: frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED}),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.FAILED: frozenset(),
}


class IllegalOrderTransition(TradingSystemError):
    """An order was asked to move to a state it cannot reach from where it is."""


def check_transition(current: OrderStatus, new: OrderStatus) -> None:
    """Refuse a status change the table does not allow; staying where it is is always allowed."""
    if new is not current and new not in ORDER_TRANSITIONS[current]:
        raise IllegalOrderTransition(f"order cannot go from {current} to {new}", current=current, new=new)
