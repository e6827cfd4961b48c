"""End to end through the fake servers with the real clients: live mode on the fake Upbit (JWT, order
states, dropped connections), the AI adviser on the fake OpenAI, the database on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.models import AIDecisionRow, OrderRow, PositionRow, TradeRow
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import Settings
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.fakes.upbit_server import FakeUpbit
from tests.support.strategies import AlwaysBuy

SettingsFactory = Callable[..., Settings]
RELAXED_VALIDATOR = {"VALIDATOR_MAX_RSI": "100", "VALIDATOR_MAX_ATR_PCT": "100", "VALIDATOR_FAKEOUT_ADX": "0"}


@pytest.fixture
def live_settings(
    make_settings: SettingsFactory, fake_upbit: FakeUpbit, fake_openai: FakeOpenAI, fake_fear_greed: FakeFearGreed
) -> Callable[..., Settings]:
    fake_upbit.seed_demo()

    def build(**overrides: str) -> Settings:
        env = {
            "TRADING_MODE": "live",
            "TRADING_SYMBOLS": "KRW-BTC",
            "UPBIT_BASE_URL": fake_upbit.base_url,
            "UPBIT_ACCESS_KEY": fake_upbit.access_key,
            "UPBIT_SECRET_KEY": fake_upbit.secret_key,
            "OPENAI_API_KEY": fake_openai.api_key,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_MAX_RETRIES": "0",
            "OPENAI_TIMEOUT_SECONDS": "3",
            "FEAR_GREED_URL": fake_fear_greed.url,
            "MIN_TRADE_INTERVAL_HOURS": "0",
            "TRADING_STRATEGY": "ai",  # the adviser confirms the candidate's entries
            **RELAXED_VALIDATOR,
        }
        return make_settings(**{**env, **overrides})

    return build


@pytest.fixture
async def engines(db_engine: AsyncEngine) -> AsyncIterator[Callable[..., object]]:
    """Builds engines on the test database and closes them at the end."""
    built: list[TradingEngine] = []

    async def build(settings: Settings) -> TradingEngine:
        # a candidate entry on every bar, so the adviser is asked; the fake's random candles would fail the filter
        engine = await TradingEngine.create(settings, db_engine, strategy=AlwaysBuy(), quick_filter=None)
        built.append(engine)
        return engine

    yield build
    for engine in built:
        await engine.aclose()


async def rows(sessions: async_sessionmaker[AsyncSession], model: type) -> list:
    async with sessions() as session:
        return list(await session.scalars(select(model).order_by(model.id)))


async def test_ai_buy_is_filled_on_upbit_and_recorded_from_the_fills(
    live_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_upbit: FakeUpbit,
    fake_openai: FakeOpenAI,
) -> None:
    """Given the adviser says buy and every check passes, when a live cycle runs, then exactly one signed
    order reaches Upbit, and the order row, trades (one per Upbit fill) and position are written."""
    fake_openai.script(Behaviour.ok("buy", 88, "breakout with volume"))
    engine = await engines(live_settings())

    [report] = await engine.trading_job()

    assert report.error is None
    assert report.source == "ai"
    assert [o.status for o in report.orders] == [OrderStatus.FILLED]
    [post] = fake_upbit.requests_to("/v1/orders", "POST")
    [order] = await rows(db_sessions, OrderRow)
    assert order.identifier == post.json["identifier"]
    assert order.status is OrderStatus.FILLED
    exchange_order = fake_upbit.order(identifier=order.identifier)
    assert {t.trade_id for t in await rows(db_sessions, TradeRow)} == {t["uuid"] for t in exchange_order["trades"]}
    assert len(await rows(db_sessions, PositionRow)) == 1
    [decision] = await rows(db_sessions, AIDecisionRow)
    assert decision.source == "ai"
    assert decision.prompt_hash
    assert decision.prompt_tokens == 812
    assert fake_openai.request_count == 1


async def test_crash_after_the_order_was_accepted_is_settled_at_restart_without_a_second_order(
    live_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_upbit: FakeUpbit,
    fake_openai: FakeOpenAI,
) -> None:
    """Given Upbit executes the order but the connection drops before the answer (the row stays pending),
    when the process restarts, then start-up reconciliation finds the order by identifier and settles it;
    Upbit received exactly one order."""
    fake_openai.script(Behaviour.ok("buy", 88, "breakout"))
    fake_upbit.inject_drop_after_accept()
    first = await engines(live_settings())

    [report] = await first.trading_job()

    assert [o.status for o in report.orders] == [OrderStatus.PENDING]
    [pending] = await rows(db_sessions, OrderRow)
    assert pending.status is OrderStatus.PENDING
    assert await rows(db_sessions, TradeRow) == []

    restarted = await engines(live_settings())
    await restarted.start_up()

    [settled] = await rows(db_sessions, OrderRow)
    assert settled.status is OrderStatus.FILLED
    assert settled.exchange_uuid == fake_upbit.order(identifier=pending.identifier)["uuid"]
    assert len(await rows(db_sessions, TradeRow)) >= 1
    assert len(await rows(db_sessions, PositionRow)) == 1
    assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 1


async def test_validator_override_is_recorded_and_nothing_reaches_upbit(
    live_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_upbit: FakeUpbit,
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(Behaviour.ok("buy", 95, "moon"))
    engine = await engines(live_settings(VALIDATOR_MAX_RSI="1"))

    [report] = await engine.trading_job()

    assert report.decision == "buy"
    assert report.final_decision == "hold"
    [decision] = await rows(db_sessions, AIDecisionRow)
    assert decision.overridden
    assert any("rsi" in reason for reason in decision.override_reasons)
    assert fake_upbit.requests_to("/v1/orders", "POST") == []


@pytest.mark.parametrize(
    "behaviour",
    [Behaviour.server_error(500), Behaviour.malformed("not json"), Behaviour.refusal(), Behaviour.rate_limited()],
    ids=["5xx", "malformed", "refusal", "429"],
)
async def test_ai_failure_becomes_a_recorded_hold(
    behaviour: Behaviour,
    live_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_upbit: FakeUpbit,
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(behaviour)
    engine = await engines(live_settings())

    [report] = await engine.trading_job()

    assert report.final_decision == "hold"
    assert report.source == "fallback"
    [decision] = await rows(db_sessions, AIDecisionRow)
    assert decision.error
    assert fake_upbit.requests_to("/v1/orders", "POST") == []


async def test_ai_timeout_becomes_a_recorded_hold(
    live_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_upbit: FakeUpbit,
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(Behaviour.slow(2.0, "buy", 95))
    engine = await engines(live_settings(OPENAI_TIMEOUT_SECONDS="0.5"))

    [report] = await engine.trading_job()

    assert report.final_decision == "hold"
    [decision] = await rows(db_sessions, AIDecisionRow)
    assert decision.error.startswith("timeout")
    assert engine.metrics.registry.get_sample_value("ai_request_errors_total", {"reason": "timeout"}) == 1
    assert fake_upbit.requests_to("/v1/orders", "POST") == []


async def test_insufficient_funds_fails_the_order_with_the_upbit_error_name(
    live_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_upbit: FakeUpbit,
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(Behaviour.ok("buy", 90, "breakout"))
    fake_upbit.inject_insufficient_funds()
    engine = await engines(live_settings())

    [report] = await engine.trading_job()

    assert [o.status for o in report.orders] == [OrderStatus.FAILED]
    [order] = await rows(db_sessions, OrderRow)
    assert "insufficient_funds" in order.error_message
    await engine.start_up()
    assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 1


async def test_live_mode_refuses_to_start_without_keys(make_settings: SettingsFactory, db_engine: AsyncEngine) -> None:
    settings = make_settings(TRADING_MODE="paper")

    with pytest.raises(Exception, match="UPBIT_ACCESS_KEY"):
        await TradingEngine.create(settings, db_engine, mode=TradingMode.LIVE)
