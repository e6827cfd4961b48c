"""Issue 13, item 6: one AI market context, decisions keyed by candle, recorded decisions replayed in a backtest.

Through the real replay (scheduler jobs, pipeline, AI client against the fake OpenAI server), the real AI
backtest strategy and the real ``backtest.py`` process, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import backend.app.core.replay as replay_module
from backend.app.core.replay import ReplayOptions, run_replay
from backend.app.db.migrations import alembic_config, upgrade_to_head
from backend.app.db.recorded_decisions import database_decision_loader
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.db.session import create_engine, session_factory
from backend.app.db.types import JSONType
from backend.app.models import AIDecisionRow
from src.ai.cache import JsonlDecisionCache
from src.ai.service import AIService
from src.backtesting.ai_backtest import ai_strategy_from_settings
from src.backtesting.data_provider import load_candle_csv
from src.config.settings import Settings
from src.domain.decisions import DecisionSource
from src.strategy.bundled import RuleBasedBreakoutStrategy
from src.strategy.contract import history_bars
from src.trading.repository import AIDecisionRecord
from tests.fakes.openai_server import Behaviour, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
SettingsFactory = Callable[..., Settings]
HOUR = pd.Timedelta(hours=1)
# rule_breakout enters on the bundled KRW-BTC hourly candles opening 03:00 and 04:00, and the lenient quick
# filter passes at the close of the first (the replay decides bars 03:00, 04:00 and 05:00)
START = datetime(2023, 1, 4, 4, tzinfo=UTC)
END = START + timedelta(hours=3)


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return load_candle_csv(ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv")


def replay_candles(btc: pd.DataFrame) -> pd.DataFrame:
    """The candles the replay of [START, END) loads: ``history_bars`` warm-up candles before START (counted in candles:
    the data has gaps), none from END on."""
    before = btc[btc.index < pd.Timestamp(START)].tail(history_bars(30, 3600))
    return pd.concat([before, btc[(btc.index >= pd.Timestamp(START)) & (btc.index < pd.Timestamp(END))]])


async def decision_rows(sessions: async_sessionmaker[AsyncSession]) -> list[AIDecisionRow]:
    async with sessions() as session:
        query = select(AIDecisionRow).where(AIDecisionRow.purpose == "decision").order_by(AIDecisionRow.id)
        return list(await session.scalars(query))


def ai_env(fake_openai: FakeOpenAI) -> dict[str, str]:
    return {
        "TRADING_SYMBOLS": "KRW-BTC",
        "TRADING_STRATEGY": "ai",
        "OPENAI_API_KEY": fake_openai.api_key,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_MAX_RETRIES": "0",
        "QUICK_FILTER_TIER": "lenient",
        "SCHEDULER_METRICS_PORT": "0",
    }


async def test_the_backtest_sends_the_prompt_the_replay_bot_sent_and_replays_its_recorded_decisions(
    make_settings: SettingsFactory,
    database_url: str,
    db_sessions: async_sessionmaker[AsyncSession],
    fake_openai: FakeOpenAI,
    btc: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a replay of four hours with the AI on the fake OpenAI server (it answers buy), its answers cached
    fake_openai.default = Behaviour.ok("buy", 90.0)
    cache_file = tmp_path / "decisions.jsonl"
    monkeypatch.setattr(replay_module, "replay_ai_cache_path", lambda settings: cache_file)
    settings = make_settings(**ai_env(fake_openai))
    options = ReplayOptions(symbols=["KRW-BTC"], start=START, end=END, database_url=database_url)
    await run_replay(settings, options)
    rows = await decision_rows(db_sessions)
    # Then every decision it recorded names its candle: the bar that closed when the cycle ran
    assert rows
    assert all(row.candle_at is not None for row in rows)
    asked = {row.candle_at: row for row in rows if row.source in (DecisionSource.AI, DecisionSource.CACHE)}
    assert asked, "the replay asked the adviser at least once"
    for row in rows:
        assert row.market_data["candle"]["timestamp"] == row.candle_at.isoformat()

    # When the AI backtest runs over the replay's candles with the replay's answers cache
    candles = replay_candles(btc)
    service = AIService(settings.ai, JsonlDecisionCache(cache_file))
    strategy = ai_strategy_from_settings(settings, "KRW-BTC", service, has_cache=True)
    await strategy.prepare(candles)

    # Then for every entry bar the replay bot asked about while flat, the backtest built the same prompt
    # (same hash), and the answer came from the replay's cache: the model was not asked again for it
    entries = RuleBasedBreakoutStrategy().generate_signals(candles).entry
    entry_bars = {t.to_pydatetime() for t in candles.index[np.nonzero(entries)[0]]}
    compared = [at for at, row in asked.items() if at in entry_bars and row.market_data.get("position") is None]
    assert compared, "at least one entry bar in the replay window"
    for candle_at in compared:
        outcome = strategy.outcomes[pd.Timestamp(candle_at)]
        assert outcome.prompt_hash == asked[candle_at].prompt_hash, candle_at
        assert outcome.source is DecisionSource.CACHE

    # And `backtest.py --strategy ai --decisions-from` replays the recorded decisions by candle, listing the
    # entry bars the bot recorded nothing for (the warm-up bars before the replay started), never inventing them
    data = tmp_path / "KRW-BTC_1h.csv"
    candles.rename_axis("timestamp").to_csv(data)
    out = tmp_path / "out.json"
    env = {**os.environ, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    command_line = [sys.executable, "backtest.py", "--strategy", "ai", "--data", str(data), "--json", str(out)]
    command_line += ["--decisions-from", database_url]
    done = await asyncio.to_thread(
        subprocess.run, command_line, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())["ai"]
    recorded_entries = sorted(at for at in entry_bars if at in {row.candle_at for row in rows})
    missing = sorted(entry_bars - set(recorded_entries))
    assert report["decisions_from"] is not None
    assert report["recorded"] == len(recorded_entries) > 0
    assert report["missing_decisions"] == [{"symbol": "KRW-BTC", "candle_at": at.isoformat()} for at in missing]
    assert report["approved"] <= report["recorded"]  # only a recorded buy can be bought
    assert "No recorded decision for these candidate bars" in done.stdout

    # And offline (no key) on the answers cache, `backtest.py` builds the same prompts: it finds the answers,
    # and nothing crosses the wire
    requests = fake_openai.request_count
    offline_out = tmp_path / "offline.json"
    command_line = [sys.executable, "backtest.py", "--strategy", "ai", "--data", str(data), "--json", str(offline_out)]
    command_line += ["--ai-cache", str(cache_file)]
    offline_env = {**os.environ, "OPENAI_API_KEY": ""}
    done = await asyncio.to_thread(
        subprocess.run, command_line, cwd=ROOT, env=offline_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    offline = json.loads(offline_out.read_text())["ai"]
    assert offline["from_cache"] == offline["answered"] >= len(compared)
    assert fake_openai.request_count == requests


async def test_a_recorded_buy_is_replayed_through_the_validator_and_missing_bars_are_holds(
    make_settings: SettingsFactory, database_url: str, db_sessions: async_sessionmaker[AsyncSession], btc: pd.DataFrame
) -> None:
    # Given a database where the bot recorded, by candle, a confident buy on one entry bar, a buy on an
    # overbought bar (the validator's RSI limit set so that it objects), and nothing for the other entry bars
    candles = btc[(btc.index >= "2023-10-01") & (btc.index < "2023-12-01")]
    entries = candles.index[np.nonzero(RuleBasedBreakoutStrategy().generate_signals(candles).entry)[0]]
    settings = make_settings(TRADING_STRATEGY="ai", VALIDATOR_MAX_RSI="99")
    repository = SqlTradingRepository(db_sessions)
    recorded = list(entries[-3:-1])
    for at in recorded:
        await repository.save_ai_decision(
            AIDecisionRecord(
                symbol="KRW-BTC",
                decision="buy",
                final_decision="buy",
                source="ai",
                confidence=Decimal("90"),
                reason="recorded",
                candle_at=at.to_pydatetime(),
                created_at=at.to_pydatetime() + timedelta(hours=1),
            )
        )
    # When the AI backtest replays them
    strategy = ai_strategy_from_settings(
        settings, "KRW-BTC", None, has_cache=False, decision_loader=database_decision_loader(database_url)
    )
    stats = await strategy.prepare(candles)
    signals = strategy.generate_signals(candles)
    # Then the recorded buys are the only candidates bought (if the validator agrees), the others are listed
    assert stats.recorded == 2
    assert stats.missing_decisions == [
        {"symbol": "KRW-BTC", "candle_at": at.isoformat()} for at in entries if at not in recorded
    ]
    bought = set(candles.index[signals.entry])
    assert bought <= set(recorded)
    assert stats.approved + sum(stats.vetoed.values()) == 2
    assert len(bought) == stats.approved

    # And with a validator that objects to every buy (RSI above 1), none of them is bought
    strict = make_settings(TRADING_STRATEGY="ai", VALIDATOR_MAX_RSI="1")
    vetoing = ai_strategy_from_settings(
        strict, "KRW-BTC", None, has_cache=False, decision_loader=database_decision_loader(database_url)
    )
    stats = await vetoing.prepare(candles)
    assert stats.vetoed == {"validator": 2}
    assert not vetoing.generate_signals(candles).entry.any()
    assert all("rsi" in reason for o in vetoing.outcomes.values() for reason in o.reasons if o.vetoed_by)


# --- migration 0008: candle_at and its index, old rows keyed from what they stored ------------------------------
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_0008_adds_candle_at_with_its_index_and_keys_old_decisions(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade_to_head(url)
    asyncio.run(_delete_decisions(url))
    command.downgrade(alembic_config(url), "0006")
    try:
        # Given a decision written before 0008 (the candle only in market_data) and a filter call
        asyncio.run(_insert_old_rows(url))
        # When migrated to 0008
        command.upgrade(alembic_config(url), "0008")
        # Then the decision is keyed by its candle, the filter call is not, and the index exists
        keyed = asyncio.run(_candle_ats(url))
        assert keyed == {"decision": datetime(2023, 12, 2, 19, tzinfo=UTC), "filter": None}
        assert "idx_ai_decisions_symbol_candle_at" in asyncio.run(_indexes(url))
    finally:
        command.upgrade(alembic_config(url), "head")
        asyncio.run(_delete_decisions(url))


async def _delete_decisions(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM ai_decisions"))
    await engine.dispose()


async def _insert_old_rows(url: str) -> None:
    engine = create_engine(url)
    market_data = {"candle": {"timestamp": "2023-12-02T19:00:00+00:00", "close": 1.0}}
    async with engine.begin() as connection:
        for purpose, data in (("decision", market_data), ("filter", {"purpose": "filter"})):
            await connection.execute(
                sa.text(
                    "INSERT INTO ai_decisions (symbol, decision, final_decision, source, market_data, purpose, "
                    "overridden, prompt_tokens, completion_tokens, cost_usd, created_at) VALUES ('KRW-BTC', 'hold', "
                    "'hold', 'ai', :data, :purpose, false, 0, 0, '0', CURRENT_TIMESTAMP)"
                ).bindparams(sa.bindparam("data", data, type_=JSONType)),
                {"purpose": purpose},
            )
    await engine.dispose()


async def _candle_ats(url: str) -> dict[str, datetime | None]:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        rows = (await session.execute(select(AIDecisionRow.purpose, AIDecisionRow.candle_at))).all()
    await engine.dispose()
    return {str(purpose.value if hasattr(purpose, "value") else purpose): at for purpose, at in rows}


async def _indexes(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: {i["name"] for i in inspect(sync).get_indexes("ai_decisions")})
    await engine.dispose()
    return names


async def test_the_api_shows_the_candle_a_decision_is_keyed_by(
    client: httpx.AsyncClient, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a decision the pipeline recorded for the bar that opened at 19:00
    candle_at = datetime(2023, 12, 2, 19, tzinfo=UTC)
    await SqlTradingRepository(db_sessions).save_ai_decision(
        AIDecisionRecord(symbol="KRW-BTC", decision="hold", final_decision="hold", source="ai", candle_at=candle_at)
    )
    # When the decisions are listed, then it names that candle
    [item] = (await client.get("/api/v1/ai/decisions")).json()["items"]
    assert item["candle_at"] == "2023-12-02T19:00:00Z"


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (
            ["--strategy", "rule_breakout", "--decisions-from", "sqlite+aiosqlite:///x.db"],
            2,
            "use it with --strategy ai",
        ),
        (["--strategy", "ai", "--decisions-from", "not a url"], 1, "expects a database URL"),
        (["--strategy", "ai", "--decisions-from", "sqlite+aiosqlite:///nowhere/none.db"], 1, "no database file"),
    ],
)
def test_bad_decisions_from_is_one_clear_error(arguments: list[str], code: int, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "backtest.py", "--start", "2023-12-01", "--end", "2023-12-03", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
