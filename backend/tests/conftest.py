"""App and client fixtures for the API tests, on top of the database fixtures (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.core.security import hash_password
from backend.app.main import create_app
from backend.app.models import AIDecisionRow, OrderRow, PortfolioSnapshotRow, TradeRow
from src.config.settings import Settings, load_settings
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side, TradeStatus

API_KEY = "test-api-key-0123456789abcdef0123456789"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
ADMIN_PASSWORD = "correct horse battery staple"
ADMIN_PASSWORD_HASH = hash_password(ADMIN_PASSWORD)

BASE_ENV = {
    "API_KEY": API_KEY,
    "API_JWT_SECRET": JWT_SECRET,
    "API_ADMIN_USERNAME": "admin",
    "API_ADMIN_PASSWORD_HASH": ADMIN_PASSWORD_HASH,
    "API_RATE_LIMIT_PER_MINUTE": "100000",
    "API_PUBLIC_READ": "false",
    "TRADING_MODE": "paper",
    "SCHEDULER_INSTANCE_NAME": "default",
    "HEARTBEAT_STALE_SECONDS": "600",
}

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> SettingsFactory:
    """Settings from the environment only (no .env), pointing at the test database; ``overrides`` are env vars."""

    def build(**overrides: str) -> Settings:
        for name, value in {**BASE_ENV, "DATABASE_URL": database_url, **overrides}.items():
            monkeypatch.setenv(name, value)
        return load_settings(env_file=None)

    return build


AppFactory = Callable[..., Any]


@pytest.fixture
async def make_client(db_engine: AsyncEngine, make_settings: SettingsFactory) -> AsyncIterator[AppFactory]:
    """``await make_client(headers=..., metrics_options=..., **env)`` → an httpx client on a started app."""
    async with AsyncExitStack() as stack:

        async def build(
            headers: dict[str, str] | None = None, metrics_options: dict[str, float] | None = None, **env: str
        ) -> httpx.AsyncClient:
            app = create_app(make_settings(**env), **(metrics_options or {}))
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
            client = httpx.AsyncClient(transport=transport, base_url="http://api.test", headers=headers or {})
            client.app = app  # type: ignore[attr-defined]
            return await stack.enter_async_context(client)

        yield build


@pytest.fixture
async def client(make_client: AppFactory) -> httpx.AsyncClient:
    """Authenticated with the API key."""
    return await make_client(headers={"X-API-Key": API_KEY})


@pytest.fixture
async def anonymous(make_client: AppFactory) -> httpx.AsyncClient:
    return await make_client()


def app_of(client: httpx.AsyncClient) -> FastAPI:
    return client.app  # type: ignore[attr-defined,no-any-return]


class Seeder:
    """Writes rows the way the scheduler would, straight through the ORM."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._count = 0

    async def add(self, *rows: Any) -> None:
        async with self.sessions.begin() as session:
            session.add_all(rows)

    def trade(
        self,
        at: datetime,
        *,
        symbol: str = "KRW-BTC",
        side: Side = Side.BUY,
        price: str = "100000000",
        amount: str = "0.001",
        fee: str | None = None,
        realized_pnl: str | None = None,
        status: TradeStatus = TradeStatus.COMPLETED,
        mode: TradingMode = TradingMode.PAPER,
    ) -> TradeRow:
        self._count += 1
        total = Decimal(price) * Decimal(amount)
        return TradeRow(
            trade_id=f"t-{self._count:05d}",
            symbol=symbol,
            side=side,
            price=Decimal(price),
            amount=Decimal(amount),
            total=total,
            fee=Decimal(fee) if fee is not None else (total * Decimal("0.0005")),
            realized_pnl=None if realized_pnl is None else Decimal(realized_pnl),
            status=status,
            mode=mode,
            created_at=at,
        )

    def order(self, at: datetime, *, status: OrderStatus = OrderStatus.FILLED, symbol: str = "KRW-BTC") -> OrderRow:
        self._count += 1
        return OrderRow(
            order_id=f"o-{self._count:05d}",
            identifier=f"bot-{self._count:05d}",
            symbol=symbol,
            side=Side.BUY,
            order_type=OrderType.MARKET_BUY,
            requested_total=Decimal("100000"),
            status=status,
            mode=TradingMode.PAPER,
            created_at=at,
        )

    def decision(
        self,
        at: datetime,
        *,
        symbol: str = "KRW-BTC",
        decision: str = "buy",
        final_decision: str = "buy",
        confidence: str | None = "72.50",
        overridden: bool = False,
    ) -> AIDecisionRow:
        return AIDecisionRow(
            symbol=symbol,
            decision=decision,
            final_decision=final_decision,
            confidence=None if confidence is None else Decimal(confidence),
            reason="breakout with volume",
            overridden=overridden,
            override_reasons=["rsi above 70"] if overridden else None,
            source="ai",
            model="gpt-4o-mini",
            prompt="secret prompt text",
            prompt_tokens=1200,
            completion_tokens=80,
            cost_usd=Decimal("0.000228"),
            created_at=at,
        )

    def snapshot(self, at: datetime, value: str, profit_rate: str = "0.01") -> PortfolioSnapshotRow:
        return PortfolioSnapshotRow(
            total_value_krw=Decimal(value),
            cash_krw=Decimal("5000000"),
            profit_rate=Decimal(profit_rate),
            positions={"KRW-BTC": {"amount": "0.05"}},
            mode=TradingMode.PAPER,
            created_at=at,
        )


@pytest.fixture
def seed(db_sessions: async_sessionmaker[AsyncSession]) -> Seeder:
    return Seeder(db_sessions)


def at(minutes: int) -> datetime:
    """A fixed UTC time ``minutes`` after the reference moment, so ordering is explicit in tests."""
    return datetime(2026, 1, 5, 12, 0, tzinfo=UTC) + timedelta(minutes=minutes)
