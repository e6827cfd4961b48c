"""Risk rules (entries, sizing, circuit breakers, exits) and the persistence port of positions and risk state."""

from src.risk.manager import RiskManager
from src.risk.models import EntryRule, ExitSignal, PortfolioView, RiskVerdict, SizingDecision, TradeStats
from src.risk.store import (
    AppliedFill,
    InMemoryRiskStore,
    PositionChange,
    PositionRecord,
    PositionStatus,
    RiskState,
    RiskStore,
    UnsettledOrder,
)

__all__ = [
    "AppliedFill",
    "EntryRule",
    "ExitSignal",
    "InMemoryRiskStore",
    "PortfolioView",
    "PositionChange",
    "PositionRecord",
    "PositionStatus",
    "RiskManager",
    "RiskState",
    "RiskStore",
    "RiskVerdict",
    "SizingDecision",
    "TradeStats",
    "UnsettledOrder",
]
