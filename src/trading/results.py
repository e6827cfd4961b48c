"""What one order came to, as the trading service reports it to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from src.domain.money import ZERO
from src.domain.orders import OrderStatus, Side
from src.trading.repository import TradeRecord


@dataclass(slots=True)
class ExecutionResult:
    """What one order came to: ``status`` is ours (pending/open/filled/cancelled/failed)."""

    identifier: str
    symbol: str
    side: Side
    status: OrderStatus
    trades: list[TradeRecord] = field(default_factory=list)
    error: str | None = None

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
        }
