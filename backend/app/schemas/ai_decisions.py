from __future__ import annotations

from datetime import datetime

from pydantic import Field

from backend.app.schemas.common import ApiModel, Money, PageInfo
from src.ai.models import AIPurpose
from src.domain.decisions import Decision


class AIDecisionOut(ApiModel):
    id: int
    symbol: str
    decision: Decision = Field(description="What the adviser said")
    final_decision: Decision = Field(description="What was acted on after the validator")
    confidence: Money | None = Field(description="0..100")
    reason: str | None
    overridden: bool = Field(description="The validator changed the adviser's decision")
    override_reasons: list[str] | None
    source: str = Field(description="ai | cache | fallback | disabled")
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Money
    error: str | None
    cycle_id: str | None
    purpose: AIPurpose = Field(description="decision (the trading cycle) | filter (the quick filter's AI backtest)")
    candle_at: datetime | None = Field(description="Open time (UTC) of the bar decided: with the symbol, the key")
    created_at: datetime


class AIDecisionPage(PageInfo):
    items: list[AIDecisionOut]
