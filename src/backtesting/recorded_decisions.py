"""The decisions the bot actually made, replayed in an AI backtest by their key (symbol, candle).

Every decision the trading cycle records (live, paper, replay) carries ``candle_at``, the open time of the bar
it decided. ``backtest.py --strategy ai --decisions-from DATABASE_URL`` loads those of one symbol and period
(through ``backend.app.db.queries.decisions``, injected as a ``DecisionLoader``: SQL lives in
``backend/app/db``) and the AI strategy uses them instead of asking the model. A decision is matched by its
key, never by its prompt: inputs the backtest cannot know (the live orderbook, fear & greed) do not matter.

A candidate bar without a recorded decision is never invented: it is a hold, and it is listed
(``missing_decisions``, symbol and candle time) in the report and the JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from src.ai.models import AIDecision
from src.domain.decisions import Decision, DecisionSource
from src.exceptions import DataError

# Sources whose decision is the adviser's own answer (the model now, or its cached answer). A bar the bot
# decided without the adviser (the quick filter blocked it, the AI was off) replays as a hold.
ADVISER_SOURCES = frozenset({DecisionSource.AI, DecisionSource.CACHE})


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    """One row of ``ai_decisions`` (purpose ``decision``), as a backtest replays it."""

    symbol: str
    candle_at: datetime  # open time (UTC) of the bar decided
    decision: Decision  # what the adviser (or the rules) proposed
    final_decision: Decision  # what the bot did after the validator, risk and liquidity
    source: DecisionSource
    confidence: Decimal | None
    reason: str | None = None
    model: str | None = None
    prompt_hash: str | None = None
    cost_usd: Decimal | None = None  # what the model call cost when the bot made it (0 for a cache hit)

    def __post_init__(self) -> None:
        if self.candle_at.tzinfo is None:
            raise DataError(f"recorded decision of {self.symbol}: candle_at {self.candle_at.isoformat()} is naive")

    @classmethod
    def from_row(cls, row: Any) -> RecordedDecision:
        """From a mapping with the columns of ``ai_decisions``; a wrong value is one ``DataError``."""
        try:
            return cls(
                symbol=str(row["symbol"]),
                candle_at=row["candle_at"].astimezone(UTC),
                decision=Decision(row["decision"]),
                final_decision=Decision(row["final_decision"]),
                source=DecisionSource(row["source"]),
                confidence=None if row["confidence"] is None else Decimal(str(row["confidence"])),
                reason=row.get("reason"),
                model=row.get("model"),
                prompt_hash=row.get("prompt_hash"),
                cost_usd=None if row.get("cost_usd") is None else Decimal(str(row["cost_usd"])),
            )
        except (KeyError, ValueError, TypeError, AttributeError, ArithmeticError) as exc:
            raise DataError(f"not a recorded decision: {type(exc).__name__}: {exc}") from exc

    @property
    def from_adviser(self) -> bool:
        return self.source in ADVISER_SOURCES

    def as_answer(self) -> AIDecision:
        """The adviser's answer as recorded; a bar decided without the adviser is a hold of its source."""
        if not self.from_adviser:
            reason = f"decided without the adviser ({self.source.value}): {self.reason or ''}".strip()
            return AIDecision(Decision.HOLD, Decimal("0"), reason, self.source, self.model, self.prompt_hash or "")
        return AIDecision(
            self.decision,
            self.confidence if self.confidence is not None else Decimal("0"),
            self.reason or "",
            self.source,
            self.model,
            self.prompt_hash or "",
        )


# (symbol, first candle open included, candle open excluded) -> the recorded decisions of that symbol and period
DecisionLoader = Callable[[str, datetime, datetime], Awaitable[list[RecordedDecision]]]


class RecordedDecisions:
    """The recorded decisions of one symbol, by candle. Several rows for one candle (the cycle ran twice for
    the same bar): the last recorded wins."""

    def __init__(self, symbol: str, decisions: Iterable[RecordedDecision], origin: str = "database") -> None:
        self.symbol = symbol
        self.origin = origin
        self._by_candle: dict[datetime, RecordedDecision] = {}
        for decision in decisions:
            if decision.symbol == symbol:
                self._by_candle[decision.candle_at] = decision

    def __len__(self) -> int:
        return len(self._by_candle)

    def values(self) -> list[RecordedDecision]:
        """The decisions, one per candle, in candle order."""
        return [self._by_candle[candle] for candle in sorted(self._by_candle)]

    def get(self, candle_at: datetime) -> RecordedDecision | None:
        return self._by_candle.get(candle_at.astimezone(UTC))

    @classmethod
    async def load(
        cls, loader: DecisionLoader, symbol: str, start: datetime, end: datetime, origin: str = "database"
    ) -> RecordedDecisions:
        return cls(symbol, await loader(symbol, start.astimezone(UTC), end.astimezone(UTC)), origin)
