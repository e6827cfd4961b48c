"""The AI adviser's answer cache over ``ai_decisions`` (``src.ai.cache.DecisionCache`` on the database).

The pipeline already stores every decision with its ``prompt_hash``; that row is the cache entry, so
``put`` only remembers the answer in memory until the cycle's row is written (no second row). ``get``
looks in memory, then for the newest row with that hash whose answer came from the model.

The quick filter's calls have no cycle row: ``DatabaseCallRecorder`` writes one per call
(``purpose='filter'``, with tokens and cost), which is also what ``get`` finds after a restart.
"""

from __future__ import annotations

from decimal import Decimal

from src.ai.models import AIDecision, AIPurpose, MarketContext
from src.domain.decisions import Decision, DecisionSource
from src.trading.repository import AIDecisionRecord, ITradingRepository


def decision_from_record(record: AIDecisionRecord) -> AIDecision:
    kwargs = {}
    if record.created_at is not None:
        kwargs["created_at"] = record.created_at
    return AIDecision(
        decision=Decision(record.decision),
        confidence=record.confidence if record.confidence is not None else Decimal("0"),
        reason=record.reason or "",
        source=DecisionSource.AI,
        model=record.model,
        prompt_hash=record.prompt_hash or "",
        prompt=record.prompt,
        raw_response=record.raw_response,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cost_usd=record.cost_usd,
        error=record.error,
        purpose=AIPurpose(record.purpose),
        **kwargs,
    )


class DatabaseDecisionCache:
    def __init__(self, repository: ITradingRepository, *, memory_limit: int = 1024) -> None:
        self._repository = repository
        self._recent: dict[str, AIDecision] = {}
        self._memory_limit = memory_limit

    async def get(self, prompt_hash: str) -> AIDecision | None:
        if prompt_hash in self._recent:
            return self._recent[prompt_hash]
        record = await self._repository.find_ai_decision_by_prompt_hash(prompt_hash)
        return None if record is None else decision_from_record(record)

    async def put(self, decision: AIDecision) -> None:
        if decision.source is not DecisionSource.AI:
            return
        if len(self._recent) >= self._memory_limit:
            self._recent.pop(next(iter(self._recent)))
        self._recent[decision.prompt_hash] = decision


class DatabaseCallRecorder:
    """``src.ai.usage.AICallRecorder`` on ``ai_decisions``: one row per model call of the quick filter."""

    def __init__(self, repository: ITradingRepository) -> None:
        self._repository = repository

    async def record_call(self, decision: AIDecision, context: MarketContext) -> None:
        await self._repository.save_ai_decision(
            AIDecisionRecord(
                symbol=context.symbol,
                decision=decision.decision.value,
                final_decision=decision.decision.value,
                source=decision.source.value,
                confidence=decision.confidence,
                reason=decision.reason,
                market_data={"purpose": decision.purpose.value, "bar_closed_at": context.timestamp.isoformat()},
                candle_at=context.candle_at,
                model=decision.model,
                prompt_hash=decision.prompt_hash or None,
                prompt=decision.prompt,
                raw_response=decision.raw_response,
                prompt_tokens=decision.prompt_tokens,
                completion_tokens=decision.completion_tokens,
                cost_usd=decision.cost_usd,
                error=decision.error,
                created_at=decision.created_at,
                purpose=decision.purpose.value,
            )
        )
