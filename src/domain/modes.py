"""Where the bot trades: paper (simulated exchange), live (Upbit) or replay (recorded market data)."""

from __future__ import annotations

from enum import StrEnum


class TradingMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"
    REPLAY = "replay"
