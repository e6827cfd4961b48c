"""Liveness, readiness (database reachable, migrations current) and the Prometheus metrics."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.db.repositories.bot import BotRepository
from backend.app.db.types import utcnow
from backend.app.main import _app_from_environment, create_app
from backend.app.models import RiskStateRow
from backend.tests.conftest import API_KEY, AppFactory, Seeder, SettingsFactory, at
from src.config.settings import get_settings
from src.domain.modes import TradingMode
from src.domain.orders import Side
from src.exceptions import DatabaseNotMigratedError

FRESH = {"cache_seconds": 0.0}


def _samples(text_body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text_body)
        for sample in family.samples
    }


async def _scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


async def test_health_and_ready(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/health")).json() == {"status": "ok"}
    ready = await anonymous.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert (body["status"], body["database"]) == ("ready", True)
    assert body["migration_current"] == body["migration_head"]


async def test_ready_is_503_when_the_database_is_behind(anonymous: httpx.AsyncClient, db_engine: AsyncEngine) -> None:
    # Given the database is moved back behind the newest migration while the API runs
    async with db_engine.begin() as connection:
        head = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        await connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        response = await anonymous.get("/ready")
    finally:
        async with db_engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    # Then readiness says so, with both revisions
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["migration_current"], body["migration_head"]) == ("not_ready", "0001", head)
    assert "newest is" in body["detail"]


async def test_api_refuses_to_start_on_an_unmigrated_database(make_settings: SettingsFactory, tmp_path: Path) -> None:
    app = create_app(make_settings(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    with pytest.raises(DatabaseNotMigratedError, match="has no schema yet"):
        async with app.router.lifespan_context(app):
            pass


async def test_api_starts_in_live_mode_without_upbit_keys(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given live mode and no Upbit keys: the API reads the database and never calls Upbit
    make_settings(TRADING_MODE="live")
    for name in ("UPBIT_ACCESS_KEY", "UPBIT_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        # When the app is built the way uvicorn builds it (settings from the environment) and started
        app, settings = _app_from_environment()
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
                health = await client.get("/health")
    finally:
        get_settings.cache_clear()
    # Then it runs and answers
    assert settings.trading.mode is TradingMode.LIVE
    assert not settings.upbit.has_keys
    assert health.json() == {"status": "ok"}


async def test_http_metrics_are_labelled_by_route_template(client: httpx.AsyncClient) -> None:
    # Given requests to a templated route, an unknown path and a validation error
    await client.get("/api/v1/trades/abc")
    await client.get("/api/v1/trades/def")
    await client.get("/no/such/path")
    await client.get("/api/v1/trades", params={"limit": "0"})
    samples = await _scrape(client)
    # Then the labels are templates, never raw paths
    key = ("method", "GET"), ("route", "/api/v1/trades/{trade_id}"), ("status", "404")
    assert samples[("http_requests_total", key)] == 2
    assert samples[("http_request_duration_seconds_count", key)] == 2
    unmatched = ("method", "GET"), ("route", "<unmatched>"), ("status", "404")
    assert samples[("http_requests_total", unmatched)] == 1
    invalid = ("method", "GET"), ("route", "/api/v1/trades"), ("status", "422")
    assert samples[("http_requests_total", invalid)] == 1
    assert not any("abc" in str(labels) for _, labels in samples)


async def test_database_metrics_reflect_trades_decisions_portfolio_and_bot(
    make_client: AppFactory, seed: Seeder, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given trades, decisions, a snapshot and a fresh running heartbeat
    await seed.add(
        seed.trade(at(0), price="100000000", amount="0.002", fee="100"),
        seed.trade(at(1), price="100000000", amount="0.001", fee="50.5"),
        seed.trade(at(2), side=Side.SELL, price="110000000", amount="0.001", fee="55", realized_pnl="9900"),
        seed.decision(at(0), confidence="60"),
        seed.decision(at(1), confidence="81.25", final_decision="hold", decision="buy", overridden=True),
        seed.snapshot(at(3), "10250000.50", "0.025"),
    )
    await BotRepository(db_sessions).write_heartbeat(
        "default", state="running", mode="paper", symbols=["KRW-BTC"], heartbeat_at=utcnow()
    )
    client = await make_client(headers={"X-API-Key": API_KEY}, metrics_options=FRESH)
    # When Prometheus scrapes
    samples = await _scrape(client)
    # Then the totals, the newest confidence, the portfolio and the bot state are there
    buy = ("mode", "paper"), ("side", "buy"), ("symbol", "KRW-BTC")
    sell = ("mode", "paper"), ("side", "sell"), ("symbol", "KRW-BTC")
    assert samples[("trades_total", buy)] == 2
    assert samples[("trades_total", sell)] == 1
    assert samples[("trade_volume_krw_total", buy)] == 300000
    assert samples[("trade_fee_krw_total", buy)] == 150.5
    assert samples[("ai_decisions_total", (("decision", "buy"), ("symbol", "KRW-BTC")))] == 1
    assert samples[("ai_decisions_total", (("decision", "hold"), ("symbol", "KRW-BTC")))] == 1
    assert samples[("ai_confidence", (("symbol", "KRW-BTC"),))] == 81.25
    assert samples[("portfolio_value_krw", (("mode", "paper"),))] == 10250000.5
    assert samples[("portfolio_profit_rate", (("mode", "paper"),))] == 0.025
    assert samples[("bot_running", ())] == 1
    assert samples[("api_metrics_database_up", ())] == 1

    # When more trades arrive, the totals advance incrementally (a scrape that finds a refresh running
    # serves the values it has, so the new count shows within a refresh or two)
    await seed.add(seed.trade(at(4), price="100000000", amount="0.001", fee="50"))
    assert await _eventually(client, ("trades_total", buy), 3) == 3


async def _eventually(client: httpx.AsyncClient, key: tuple[str, tuple[tuple[str, str], ...]], want: float) -> float:
    value = -1.0
    for _ in range(50):
        value = (await _scrape(client))[key]
        if value == want:
            break
        await asyncio.sleep(0.02)
    return value


async def test_full_recount_agrees_with_incremental_totals(make_client: AppFactory, seed: Seeder) -> None:
    # Given a collector that recounts in the background on every scrape
    await seed.add(seed.trade(at(0), fee="10"), seed.trade(at(1), fee="20"))
    client = await make_client(
        headers={"X-API-Key": API_KEY}, metrics_options={"cache_seconds": 0.0, "full_refresh_seconds": 0.0}
    )
    key = ("mode", "paper"), ("side", "buy"), ("symbol", "KRW-BTC")
    assert await _eventually(client, ("trade_fee_krw_total", key), 30) == 30
    await seed.add(seed.trade(at(2), fee="30"))
    # The recounts that keep starting and the incremental reads agree: three trades, 60 KRW of fees
    assert await _eventually(client, ("trades_total", key), 3) == 3
    assert await _eventually(client, ("trade_fee_krw_total", key), 60) == 60


async def test_bot_running_is_zero_for_a_stale_heartbeat(
    make_client: AppFactory, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await BotRepository(db_sessions).write_heartbeat(
        "default", state="running", mode="paper", symbols=[], heartbeat_at=utcnow() - timedelta(hours=1)
    )
    client = await make_client(metrics_options=FRESH)
    assert (await _scrape(client))[("bot_running", ())] == 0


async def test_openapi_docs_are_served_with_both_security_schemes(anonymous: httpx.AsyncClient) -> None:
    docs = await anonymous.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = (await anonymous.get("/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"ApiKey", "OAuth2Password"}
    trades = schema["paths"]["/api/v1/trades"]["get"]
    assert {"401", "422", "429"} <= set(trades["responses"])
    money = schema["components"]["schemas"]["TradeOut"]["properties"]["price"]
    assert money.get("type") == "string" or any(option.get("type") == "string" for option in money.get("anyOf", []))


async def test_bot_safe_mode_gauge_follows_the_risk_state(
    make_client: AppFactory, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given no risk state yet, the gauge is 0; after the daily breaker trips, it is 1
    client = await make_client(metrics_options=FRESH)
    assert (await _scrape(client))[("bot_safe_mode", (("mode", "paper"),))] == 0
    async with db_sessions.begin() as session:
        session.add(RiskStateRow(mode=TradingMode.PAPER, safe_mode=True, safe_mode_reason="daily loss -10.2%"))
    client = await make_client(metrics_options=FRESH)
    assert (await _scrape(client))[("bot_safe_mode", (("mode", "paper"),))] == 1
