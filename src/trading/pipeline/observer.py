"""The pipeline's metrics hook (prometheus in the backend) and its do-nothing default."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from src.domain.decisions import Decision, DecisionSource
from src.trading.ports import NullObserver


class PipelineObserver(Protocol):
    """Metrics hook (prometheus in the backend); every method must be cheap and never raise."""

    def on_stage(self, stage: str, seconds: float) -> None: ...

    def on_decision(self, source: DecisionSource, decision: Decision, confidence: Decimal | None) -> None:
        """The final decision of a cycle (after validator, risk and liquidity): what is done."""

    def on_override(self, proposed: str, by: str) -> None:
        """A proposed decision was turned into a hold by ``by`` (one of ``analysis.OVERRIDERS``)."""

    def on_ai_error(self, reason: str) -> None: ...

    def on_trade(self, trade: Any) -> None: ...

    def on_exchange_error(self, operation: str, error: str) -> None: ...

    def on_portfolio(self, equity: Decimal, profit_rate: Decimal | None) -> None: ...


class NullPipelineObserver(NullObserver):
    def on_stage(self, stage: str, seconds: float) -> None:
        return None

    def on_decision(self, source: DecisionSource, decision: Decision, confidence: Decimal | None) -> None:
        return None

    def on_override(self, proposed: str, by: str) -> None:
        return None

    def on_ai_error(self, reason: str) -> None:
        return None

    def on_portfolio(self, equity: Decimal, profit_rate: Decimal | None) -> None:
        return None
