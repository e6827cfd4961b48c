"""What the adviser (AI or rules) decided, where the decision came from, and how a buy is sized."""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class DecisionSource(StrEnum):
    AI = "ai"  # answered by the model now
    CACHE = "cache"  # the model's earlier answer to the identical prompt
    FALLBACK = "fallback"  # the model failed; hold
    DISABLED = "disabled"  # AI off, no key or the AI budget reached; hold
    # Decisions the adviser was not asked for (the pipeline's sources, stored beside the AI's):
    RULES = "rules"  # the rule strategy decided (AI unavailable)
    FILTER = "filter"  # the quick filter failed, the adviser was not asked


class PositionSizing(StrEnum):
    FIXED = "fixed"
    HALF_KELLY = "half_kelly"
