"""AI cost counted and capped (issue 11, section 6), through the real AI client against the fake OpenAI
server (812 prompt + 24 completion tokens a call at the default 0.15 / 0.60 USD per million), the real
engine and scheduler job runner, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import backend.app.core.replay as replay_module
from backend.app.core.jobs import JobName, JobRunner
from backend.app.core.replay import ReplayOptions, run_replay
from backend.app.db.repositories.bot import BotRepository
from backend.app.models import AIDecisionRow
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.ai.models import AIDecision
from src.backtesting.data_provider import load_candle_csv
from src.config.settings import Settings
from src.domain.events import EventKind, NullNotifier
from src.strategy.bundled import RuleBasedBreakoutStrategy
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.upbit_server import FakeUpbit
from tests.support.strategies import AlwaysBuy

ROOT = Path(__file__).resolve().parents[2]
CALL_COST = Decimal("0.0001362")  # (812 * 0.15 + 24 * 0.60) / 1e6
SettingsFactory = Callable[..., Settings]


class Clock:
    """The scheduler's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class NoCache:
    """Every cycle asks the model (the fake Upbit's candles repeat, so real prompts would hit the cache)."""

    async def get(self, prompt_hash: str) -> AIDecision | None:
        return None

    async def put(self, decision: AIDecision) -> None:
        return None


@pytest.fixture
def ai_settings(
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
            "SCHEDULER_METRICS_PORT": "0",
            "TRADING_STRATEGY": "ai",  # the adviser confirms the candidate's entries
        }
        return make_settings(**{**env, **overrides})

    return build


@pytest.fixture
async def engines(db_engine: AsyncEngine) -> AsyncIterator[Callable[..., object]]:
    built: list[TradingEngine] = []

    async def build(settings: Settings, **kwargs: object) -> TradingEngine:
        engine = await TradingEngine.create(settings, db_engine, **kwargs)  # type: ignore[arg-type]
        built.append(engine)
        return engine

    yield build
    for engine in built:
        await engine.aclose()


async def decision_rows(sessions: async_sessionmaker[AsyncSession]) -> list[AIDecisionRow]:
    async with sessions() as session:
        return list(await session.scalars(select(AIDecisionRow).order_by(AIDecisionRow.id)))


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return load_candle_csv(ROOT / "backtest_data" / "hourly" / "KRW-ETH_1h.csv").iloc[:400]


# --- the quick filter's calls: recorded, costed, and not asked again after a restart -----------------------------
async def test_filter_calls_are_recorded_with_cost_and_a_restarted_engine_does_not_ask_again(
    ai_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_openai: FakeOpenAI,
    candles: pd.DataFrame,
) -> None:
    """Given the engine's quick filter with the AI stage on the fake OpenAI, when its AI backtest runs over
    candles with rule entry candidates, then each model call is an ai_decisions row with purpose=filter,
    its tokens and its cost, and is counted in ai_tokens_total / ai_cost_usd_total{purpose="filter"};
    when a second engine (a restart) runs the same backtest, the model is not asked again."""
    settings = ai_settings(AI_DAILY_BUDGET_USD="0", AI_MONTHLY_BUDGET_USD="0")
    candidates = int(RuleBasedBreakoutStrategy().generate_signals(candles).entry.sum())
    assert candidates >= 2
    metrics = SchedulerMetrics()
    first = await engines(settings, metrics=metrics)
    factory = first.pipeline.analyzer.quick_filter.ai_strategy_factory
    assert factory is not None

    stats = await factory("KRW-ETH").prepare(candles)

    assert stats.answered == candidates
    assert stats.from_cache == 0
    assert fake_openai.request_count == candidates
    rows = await decision_rows(db_sessions)
    assert len(rows) == candidates
    assert {row.purpose for row in rows} == {"filter"}
    assert {row.source for row in rows} == {"ai"}
    assert all((row.prompt_tokens, row.completion_tokens, row.cost_usd) == (812, 24, CALL_COST) for row in rows)
    assert all(row.symbol == "KRW-ETH" and row.prompt_hash for row in rows)
    registry = metrics.registry
    assert registry.get_sample_value("ai_tokens_total", {"purpose": "filter", "kind": "prompt"}) == 812 * candidates
    assert registry.get_sample_value("ai_tokens_total", {"purpose": "filter", "kind": "completion"}) == 24 * candidates
    cost = registry.get_sample_value("ai_cost_usd_total", {"purpose": "filter"})
    assert cost == pytest.approx(float(CALL_COST) * candidates)

    restarted = await engines(settings)
    again = await restarted.pipeline.analyzer.quick_filter.ai_strategy_factory("KRW-ETH").prepare(candles)

    assert again.answered == again.from_cache == candidates
    assert fake_openai.request_count == candidates  # nothing new crossed the wire
    assert len(await decision_rows(db_sessions)) == candidates  # cache hits cost nothing and add no rows


# --- the budget: off with the reason and an alert, rules decide, on again the next UTC day -------------------------
async def test_budget_reached_switches_the_ai_off_until_the_next_utc_day(
    ai_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_openai: FakeOpenAI,
) -> None:
    """Given a daily AI budget of $0.0002 (two calls at $0.0001362 exceed it), when hourly cycles run on the
    scheduler's clock, then after two model calls the AI is off: the third cycle is decided by the rules with
    the budget reason recorded, the heartbeat says ai=disabled with the reason, one AI_BUDGET_REACHED alert
    went out and the day's remaining budget is 0; a restarted engine the same day stays off (the spend is
    read from the database); after UTC midnight the model is asked again and AI_BUDGET_RESTORED goes out."""
    settings = ai_settings(AI_DAILY_BUDGET_USD="0.0002", AI_MONTHLY_BUDGET_USD="5")
    clock = Clock(datetime(2026, 12, 5, 20, 0, tzinfo=UTC))
    notifier = NullNotifier()
    metrics = SchedulerMetrics()
    # a candidate entry every hour, so the adviser is asked; the fake's random candles would fail the filter
    engine = await engines(
        settings,
        clock=clock,
        notifier=notifier,
        metrics=metrics,
        ai_cache=NoCache(),
        strategy=AlwaysBuy(),
        quick_filter=None,
    )
    runner = JobRunner(engine, instance=settings.scheduler.instance_name, metrics=metrics)

    sources = []
    for _ in range(3):
        await runner.run(JobName.TRADING)
        sources.append((await decision_rows(db_sessions))[-1].source)
        clock.now += timedelta(hours=1)

    assert sources == ["ai", "ai", "disabled"]  # the candidate entry is held, never bought on the rules
    assert fake_openai.request_count == 2
    third = (await decision_rows(db_sessions))[-1]
    assert third.purpose == "decision"
    assert "AI budget reached: day limit $0.0002" in third.error
    assert "AI budget reached" in third.reason
    assert third.prompt_tokens == 0
    assert third.cost_usd == 0
    reached = [e for e in notifier.events if e.kind is EventKind.AI_BUDGET_REACHED]
    assert len(reached) == 1
    assert Decimal(reached[0].fields["spent_day_usd"]) == 2 * CALL_COST
    assert reached[0].at == datetime(2026, 12, 5, 22, 0, tzinfo=UTC)  # the scheduler's clock
    await runner.write_heartbeat()
    heartbeat = await BotRepository(db_sessions).get_heartbeat(settings.scheduler.instance_name)
    assert heartbeat.details["ai"] == "disabled"
    assert "AI budget reached" in heartbeat.details["ai_disabled_reason"]
    assert metrics.registry.get_sample_value("ai_budget_remaining_usd", {"period": "day"}) == 0
    month_left = metrics.registry.get_sample_value("ai_budget_remaining_usd", {"period": "month"})
    assert month_left == pytest.approx(5 - 2 * float(CALL_COST))
    assert metrics.registry.get_sample_value("ai_budget_limit_usd", {"period": "day"}) == pytest.approx(0.0002)

    restarted = await engines(
        settings, clock=clock, notifier=notifier, ai_cache=NoCache(), strategy=AlwaysBuy(), quick_filter=None
    )
    [report] = await restarted.trading_job()
    assert report.source == "disabled"
    assert fake_openai.request_count == 2

    clock.now = datetime(2026, 12, 6, 0, 30, tzinfo=UTC)  # the next UTC day
    await runner.run(JobName.TRADING)

    assert (await decision_rows(db_sessions))[-1].source == "ai"
    assert fake_openai.request_count == 3
    assert engine.ai_available
    assert engine.ai_off_reason is None
    assert [e.kind for e in notifier.events if e.kind.value.startswith("ai_budget")] == [
        EventKind.AI_BUDGET_REACHED,
        EventKind.AI_BUDGET_REACHED,  # the restarted engine found the day's budget spent
        EventKind.AI_BUDGET_RESTORED,
    ]


async def test_budget_limits_set_at_run_time_apply_from_the_next_cycle(
    ai_settings: Callable[..., Settings],
    engines: Callable[..., object],
    db_sessions: async_sessionmaker[AsyncSession],
    fake_openai: FakeOpenAI,
) -> None:
    """Given an uncapped engine that has made one call, when the daily limit is lowered below that spend at
    run time (``ai.daily_budget_usd``), then the next cycle holds with the AI off; raised again, the AI is back."""
    settings = ai_settings(AI_DAILY_BUDGET_USD="0", AI_MONTHLY_BUDGET_USD="0")
    engine = await engines(
        settings,
        clock=Clock(datetime(2026, 12, 5, 9, tzinfo=UTC)),
        ai_cache=NoCache(),
        strategy=AlwaysBuy(),
        quick_filter=None,
    )
    assert (await engine.trading_job())[0].source == "ai"

    engine.ai_budget.set_limits(Decimal("0.0001"), Decimal("0"))
    assert (await engine.trading_job())[0].source == "disabled"
    engine.ai_budget.set_limits(Decimal("1"), Decimal("0"))
    assert (await engine.trading_job())[0].source == "ai"
    assert fake_openai.request_count == 2


# --- a replay: every model call carries its cost --------------------------------------------------------------------
async def test_replay_with_the_ai_records_a_cost_for_every_model_call(
    make_settings: SettingsFactory,
    database_url: str,
    db_sessions: async_sessionmaker[AsyncSession],  # a clean database (PostgreSQL is truncated)
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given four hours of bundled KRW-BTC candles with a rule_breakout entry that passes the quick filter's rule
    stage and the ai strategy on the fake OpenAI (lenient tier, so its AI stage runs), when replay runs, then the
    number of requests the server saw equals the number of recorded model calls, and their recorded cost is the
    requests' tokens at the configured prices."""
    monkeypatch.setattr(replay_module, "replay_ai_cache_path", lambda settings: tmp_path / "decisions.jsonl")
    settings = make_settings(
        TRADING_SYMBOLS="KRW-BTC",
        OPENAI_API_KEY=fake_openai.api_key,
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_MAX_RETRIES="0",
        QUICK_FILTER_TIER="lenient",
        SCHEDULER_METRICS_PORT="0",
        TRADING_STRATEGY="ai",
    )
    start = datetime(2023, 10, 5, 12, tzinfo=UTC)
    options = ReplayOptions(symbols=["KRW-BTC"], start=start, end=start + timedelta(hours=4), database_url=database_url)

    summary = await run_replay(settings, options)

    assert fake_openai.request_count > 0
    assert sum(summary.ai_calls.values()) == fake_openai.request_count
    assert summary.ai_calls.get("filter", 0) > 0
    assert summary.ai_cost_usd == CALL_COST * fake_openai.request_count
    rows = await decision_rows(db_sessions)
    assert all(row.cost_usd == CALL_COST for row in rows if row.source in ("ai", "fallback"))
