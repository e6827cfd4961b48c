"""What one order came to, as the trading service reports it to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from src.domain.money import ZERO
from src.domain.orders import OrderStatus, Side
from src.trading.repository import TradeRecord


@dataclass(slots=True)
class ExecutionResult:
    """What one order came to: ``status`` is ours (pending/open/filled/cancelled/failed).

    An order larger than the first 30 book levels hold is sent in parts (``TradingService``): then ``parts``
    lists each part's own result (its own identifier and row), ``identifier`` is the first part's, ``trades``
    are all parts' trades, and ``status`` is ``filled`` when every part filled, else the status of the part
    that stopped the sequence.
    """

    identifier: str
    symbol: str
    side: Side
    status: OrderStatus
    trades: list[TradeRecord] = field(default_factory=list)
    error: str | None = None
    parts: list[ExecutionResult] = field(default_factory=list)

    @property
    def filled(self) -> bool:
        return self.status is OrderStatus.FILLED

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "side": self.side.value,
            "status": self.status.value,
            "trades": len(self.trades),
            "volume": str(sum((t.amount for t in self.trades), ZERO)),
            "total": str(sum((t.total for t in self.trades), ZERO)),
            "error": self.error,
            "parts": len(self.parts) or 1,
        }

    @classmethod
    def combined(cls, parts: list[ExecutionResult]) -> ExecutionResult:
        """One result for the parts of a split order (the single part itself when there is one)."""
        if len(parts) == 1:
            return parts[0]
        first, last = parts[0], parts[-1]
        return cls(
            identifier=first.identifier,
            symbol=first.symbol,
            side=first.side,
            status=last.status,
            trades=[trade for part in parts for trade in part.trades],
            error=next((part.error for part in parts if part.error), None),
            parts=list(parts),
        )
