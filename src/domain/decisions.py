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


class PositionSizing(StrEnum):
    FIXED = "fixed"
    HALF_KELLY = "half_kelly"
