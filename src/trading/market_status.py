"""Upbit's market flags as a hard gate: the latest ``market_event.warning``/``caution`` per market.

``MarketStatusBook`` holds what the last refresh of ``GET /v1/market/all?is_details=true`` said (the scheduler's
market-status job, and every announcement); the risk stage refuses a new buy in a flagged market, and the
market-status job acts on held coins that are flagged (``src/trading/pipeline/market_gate.py``). Replay has no
flags (no source): the book stays empty and nothing is gated.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from src.domain.market_stream import MarketStatus
from src.risk.models import EntryRule


class MarketStatusSource(Protocol):
    """Where the flags come from (``UpbitClient.get_market_statuses``: a public endpoint, no keys needed)."""

    async def get_market_statuses(self) -> list[MarketStatus]: ...


class MarketStatusBook:
    """The flags of every market as last reported. A market the exchange did not list reads as clear."""

    def __init__(self) -> None:
        self._flags: dict[str, MarketStatus] = {}
        self.refreshed_at: datetime | None = None
        self.last_error: str | None = None
        self._handled: dict[str, MarketStatus] = {}  # held coin -> the flags last acted on and announced

    def status(self, symbol: str) -> MarketStatus:
        return self._flags.get(symbol) or MarketStatus(symbol)

    @property
    def flagged(self) -> list[MarketStatus]:
        return sorted((s for s in self._flags.values() if s.flagged), key=lambda s: s.symbol)

    def entry_refusal(self, symbol: str) -> str | None:
        """``market_warning: ...`` / ``market_caution: ...`` (an ``EntryRule`` reason) when ``symbol`` is flagged."""
        status = self.status(symbol)
        if status.warning:
            return f"{EntryRule.MARKET_WARNING}: Upbit flags {symbol} with an investment warning; no new buys"
        if status.caution:
            return f"{EntryRule.MARKET_CAUTION}: Upbit flags {symbol} with a caution; no new buys"
        return None

    def update(self, statuses: Iterable[MarketStatus], at: datetime) -> list[MarketStatus]:
        """Take a full refresh; returns the markets whose flags changed (newly flagged, cleared, or other flags)."""
        fresh = {status.symbol: status for status in statuses}
        changed = [
            status
            for symbol in sorted(set(fresh) | set(self._flags))
            if (status := fresh.get(symbol) or MarketStatus(symbol)) != self.status(symbol)
        ]
        self._flags = {symbol: status for symbol, status in fresh.items() if status.flagged}
        self._handled = {symbol: status for symbol, status in self._handled.items() if self.status(symbol) == status}
        self.refreshed_at, self.last_error = at, None
        return changed

    def is_news(self, symbol: str) -> bool:
        """``symbol`` is flagged and these flags were not yet handled for it (``handled``)."""
        status = self.status(symbol)
        return status.flagged and self._handled.get(symbol) != status

    def handled(self, symbol: str) -> None:
        """The held coin's current flags were acted on and announced."""
        self._handled[symbol] = self.status(symbol)

    def report(self) -> dict[str, object]:
        """For the heartbeat and logs: what is flagged and when the list was last read."""
        return {
            "flagged": {s.symbol: s.reason for s in self.flagged},
            "refreshed_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
            "error": self.last_error,
        }
