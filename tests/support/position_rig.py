"""A trading service over a paper account, a trading repository and a position store, whose position book can
die mid-fill: the rig of the exactly-once tests, in memory (``tests/``) and on SQL (``backend/tests/``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

import pytest

from src.api.paper_account import InMemoryPaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.data.replay import ReplayMarketSource
from src.domain.exits import ExitPolicy
from src.domain.modes import TradingMode
from src.position import PositionService
from src.risk.store import PositionRecord, RiskStore
from src.trading.pipeline.positions import ServicePositionBook
from src.trading.repository import ITradingRepository
from src.trading.service import TradingService
from tests.support.candles import make_candles
from tests.support.crashes import CrashingBook, ProcessDied

MODE = TradingMode.PAPER
SYMBOL = "KRW-BTC"
START = datetime(2024, 3, 1, tzinfo=UTC)

R = TypeVar("R", bound=ITradingRepository)
S = TypeVar("S", bound=RiskStore)


@dataclass
class Rig(Generic[R, S]):
    exchange: PaperExchange
    repo: R
    store: S
    positions: PositionService
    book: CrashingBook
    now: datetime

    def service(self) -> TradingService:
        """A trading service over the same account, orders and positions (a restarted process)."""
        return TradingService(
            self.exchange, self.repo, mode=MODE, instance="bot-1", clock=lambda: self.now, positions=self.book
        )

    async def buy_then_die_selling(self, arm_crash: Callable[[], None], reason: str) -> PositionRecord:
        """Buy for 1,000,000 KRW, then sell the whole position with ``arm_crash`` armed, so that the process dies
        during the sale; returns the position as it was held before the sale."""
        service = self.service()
        await service.market_buy(SYMBOL, Decimal("1000000"), reason="test", cycle_id=None)
        held = await self.positions.get(SYMBOL)
        assert held is not None
        arm_crash()
        with pytest.raises(ProcessDied):
            await service.market_sell(SYMBOL, held.amount, reason=reason, cycle_id=None)
        return held


def make_rig(repo: R, store: S) -> Rig[R, S]:
    now = START + timedelta(hours=300)
    source = ReplayMarketSource(
        {SYMBOL: {"1h": make_candles(START, 300, "1h", start_price=50_000_000, seed=5)}}, start=now
    )
    exchange = PaperExchange(source, InMemoryPaperAccountStore(), clock=lambda: now)
    positions = PositionService(store, ExitPolicy(stop_loss_pct=5, take_profit_pct=10), MODE)
    return Rig(exchange, repo, store, positions, CrashingBook(ServicePositionBook(positions)), now)
