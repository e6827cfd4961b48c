"""What the trading service needs from around it: the position book, the order guard and a metrics hook."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from src.domain.exits import ExitReason
from src.trading.repository import OrderRecord, TradeRecord


class PositionBook(Protocol):
    """What execution needs from the position side (implemented over ``PositionService``)."""

    async def on_fill(
        self,
        order: OrderRecord,
        trades: list[TradeRecord],
        at: datetime,
        *,
        atr: Decimal | None,
        exit_reason: ExitReason | None,
    ) -> Decimal | None:
        """Apply a final order's fills to the position once; return the realised P&L of a sell (None otherwise).

        Applying an order again changes nothing and returns the same P&L.
        """

    async def needs_applying(self, order: OrderRecord, trades: list[TradeRecord]) -> bool:
        """True when the order's fills are not yet in the positions, or their P&L not yet on the trades."""


class OrderGuard(Protocol):
    """Whether this process may send orders for the account now (implemented by the scheduler's lock)."""

    async def ensure_held(self) -> None:
        """Return when the single-trader lock is held (re-taking it if it was lost and is free); raise
        ``SchedulerLockLost`` otherwise. Called before every order is written and right before it is sent."""


class ExecutionObserver(Protocol):
    """Metrics hook; the backend implements it with prometheus counters."""

    def on_trade(self, trade: TradeRecord) -> None: ...

    def on_exchange_error(self, operation: str, error: str) -> None: ...


class NullObserver:
    def on_trade(self, trade: TradeRecord) -> None:
        return None

    def on_exchange_error(self, operation: str, error: str) -> None:
        return None
