"""Hard crashes for exactly-once tests: an exception nothing on the way catches, and a position book that dies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from src.trading.pipeline.positions import ServicePositionBook
from src.trading.repository import OrderRecord, TradeRecord


class ProcessDied(BaseException):
    """A hard crash: not an ``Exception``, so nothing on the way catches it."""


class CrashingBook:
    """The real position book, except that its next ``on_fill`` dies before anything is applied."""

    def __init__(self, book: ServicePositionBook) -> None:
        self.book = book
        self.crash_before_apply = False

    def arm_crash(self) -> None:
        self.crash_before_apply = True

    async def on_fill(
        self,
        order: OrderRecord,
        trades: list[TradeRecord],
        at: datetime,
        *,
        atr: Decimal | None,
        exit_reason: str | None,
    ) -> Decimal | None:
        if self.crash_before_apply:
            self.crash_before_apply = False
            raise ProcessDied
        return await self.book.on_fill(order, trades, at, atr=atr, exit_reason=exit_reason)

    async def needs_applying(self, order: OrderRecord, trades: list[TradeRecord]) -> bool:
        return await self.book.needs_applying(order, trades)
