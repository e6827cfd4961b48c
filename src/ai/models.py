"""The AI adviser's value types: its input (``MarketContext``) and its answer (``AIDecision``).

``src.ai.service`` re-exports them; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from src.ai.prompt import json_safe
from src.domain.decisions import Decision, DecisionSource
from src.domain.money import ZERO
from src.exceptions import DataError

# The longest reason kept, in characters. A reason is a sentence or two for the operator (the prompt asks for
# that); a model that runs on, or a server that is not the model, can send megabytes, which would bloat every
# row, log line and page of decisions. Longer reasons are cut to this length, the last character an ellipsis.
MAX_REASON_CHARS = 2000
REASON_CUT_MARKER = "\u2026"  # …


def bounded_reason(reason: str) -> str:
    """``reason`` as stored: at most ``MAX_REASON_CHARS`` characters, ending in ``…`` when it was cut."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - len(REASON_CUT_MARKER)] + REASON_CUT_MARKER


class AIPurpose(StrEnum):
    """Why the model was asked: the trading cycle's decision, or the quick filter's AI backtest."""

    DECISION = "decision"
    FILTER = "filter"


@dataclass(frozen=True, slots=True)
class MarketContext:
    """Everything the model sees for one market at one time."""

    symbol: str
    timestamp: datetime
    price: float
    indicators: dict[str, float]
    signals: dict[str, Any]
    orderbook: dict[str, Any] | None = None
    position: dict[str, Any] | None = None
    fear_greed: dict[str, Any] | None = None
    quick_filter: dict[str, Any] | None = None
    # The open time (UTC) of the bar decided: the decision's key with the symbol. Not part of the prompt
    # (``timestamp``, the bar's close, is); None for a context not tied to a candle.
    candle_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.symbol:
            raise DataError("MarketContext.symbol is empty; expected a market such as KRW-BTC")
        if self.timestamp.tzinfo is None:
            raise DataError(
                f"MarketContext.timestamp {self.timestamp.isoformat()} is naive; expected a UTC-aware datetime",
                symbol=self.symbol,
            )
        if self.candle_at is not None and self.candle_at.tzinfo is None:
            raise DataError(
                f"MarketContext.candle_at {self.candle_at.isoformat()} is naive; expected a UTC-aware datetime",
                symbol=self.symbol,
            )

    def to_prompt_payload(self) -> dict[str, Any]:
        """The JSON-safe dict the model receives (NaN → null, Decimal → str, datetime → ISO UTC)."""
        return json_safe(
            {
                "symbol": self.symbol,
                "timestamp": self.timestamp.astimezone(UTC),
                "price": self.price,
                "indicators": self.indicators,
                "signals": self.signals,
                "orderbook": self.orderbook,
                "position": self.position,
                "fear_greed": self.fear_greed,
                "quick_filter": self.quick_filter,
            }
        )


@dataclass(frozen=True, slots=True)
class AIDecision:
    """One answer of the adviser, with everything needed to store and audit it."""

    decision: Decision
    confidence: Decimal  # 0..100
    reason: str
    source: DecisionSource
    model: str | None
    prompt_hash: str
    prompt: str | None = None  # canonical JSON of the request (sha256 of it is prompt_hash)
    raw_response: str | None = None  # the HTTP body as received (answer or error)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = ZERO
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    purpose: AIPurpose = AIPurpose.DECISION

    def __post_init__(self) -> None:
        # One bound for every decision, whatever made it: the model, the cache, a fallback's error text
        object.__setattr__(self, "reason", bounded_reason(self.reason))

    def as_cache_hit(self) -> AIDecision:
        """This answer served again: no tokens were spent for it this time."""
        return replace(self, source=DecisionSource.CACHE, prompt_tokens=0, completion_tokens=0, cost_usd=ZERO)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "confidence": str(self.confidence),
            "reason": self.reason,
            "source": self.source.value,
            "model": self.model,
            "prompt_hash": self.prompt_hash,
            "prompt": self.prompt,
            "raw_response": self.raw_response,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": str(self.cost_usd),
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "purpose": self.purpose.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AIDecision:
        """Inverse of ``to_dict``; raises ``DataError`` naming the field that is missing or wrong."""
        try:
            return cls(
                decision=Decision(data["decision"]),
                confidence=Decimal(data["confidence"]),
                reason=str(data["reason"]),
                source=DecisionSource(data["source"]),
                model=data.get("model"),
                prompt_hash=str(data["prompt_hash"]),
                prompt=data.get("prompt"),
                raw_response=data.get("raw_response"),
                prompt_tokens=int(data.get("prompt_tokens", 0)),
                completion_tokens=int(data.get("completion_tokens", 0)),
                cost_usd=Decimal(data.get("cost_usd", "0")),
                error=data.get("error"),
                created_at=datetime.fromisoformat(data["created_at"]),
                purpose=AIPurpose(data.get("purpose", AIPurpose.DECISION.value)),
            )
        except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
            raise DataError(f"not a stored AI decision: {type(exc).__name__}: {exc}") from exc
