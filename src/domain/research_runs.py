"""A research run (``backtest.py optimize | monte-carlo | ai-value``): what kind it is and its status."""

from __future__ import annotations

from enum import StrEnum


class ResearchKind(StrEnum):
    OPTIMIZE = "optimize"
    MONTE_CARLO = "monte_carlo"
    AI_VALUE = "ai_value"


class ResearchStatus(StrEnum):
    """A sub-command stores its run as running when it starts; it ends done (with its result) or failed (with the
    error the command printed)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
