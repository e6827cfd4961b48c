"""``backtest.py ai-value`` on the bot's recorded decisions (SQLite and PostgreSQL): rules only, rules + AI and
buy-and-hold over the same bars, bootstrap intervals, the AI's cost for the period, regimes, and the training
cut-off keeping possibly contaminated candles out of the headline; the model is never asked."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import backtest
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.tests.conftest import SettingsFactory
from src.backtesting.runner import BacktestRequest, simulate
from src.research.ai_value import (
    Regime,
    buy_and_hold_equity,
    classify_regimes,
    paired_bootstrap,
    scope_masks,
)
from src.trading.repository import AIDecisionRecord
from tests.fakes.openai_server import Behaviour, FakeOpenAI

START, END, CUTOFF = "2023-07-01", "2024-01-01", "2023-10-01"
COST = Decimal("0.0021")


async def test_ai_value_on_recorded_decisions_with_a_planted_skill(
    make_settings: SettingsFactory,
    database_url: str,
    db_sessions: async_sessionmaker[AsyncSession],
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    # Given the bot's settings with a (fake) OpenAI key, and the rules-only trades of rule_breakout over H2 2023
    settings = make_settings(
        OPENAI_API_KEY=fake_openai.api_key,
        OPENAI_BASE_URL=fake_openai.base_url,
        VALIDATOR_MAX_RSI="100",
        VALIDATOR_MAX_ATR_PCT="100",
        AI_MIN_CONFIDENCE="50",
    )
    rules = simulate(
        BacktestRequest(
            strategy="rule_breakout", start=START, end=END, risk_rules=False, quick_filter=False, show_trades=0
        ),
        settings,
    ).result
    trades = rules.trades
    assert len(trades) >= 6
    # And recorded decisions that knew the future: buy on the bars whose trade won, hold on those that lost
    repository = SqlTradingRepository(db_sessions)
    for row in trades.itertuples(index=False):
        won = row.pnl > 0
        candle = row.entry_candle.to_pydatetime()
        await repository.save_ai_decision(
            AIDecisionRecord(
                symbol="KRW-BTC",
                decision="buy" if won else "hold",
                final_decision="buy" if won else "hold",
                source="ai",
                confidence=Decimal("95"),
                reason="planted",
                candle_at=candle,
                created_at=candle + timedelta(hours=1),
                cost_usd=COST,
                prompt_tokens=900,
                completion_tokens=60,
            )
        )
    out = tmp_path / "ai.json"
    # When ai-value replays them, with the model's training cut-off in the middle of the period
    code = await asyncio.to_thread(
        backtest.main,
        [
            "ai-value",
            "--decisions-from",
            database_url,
            "--start",
            START,
            "--end",
            END,
            "--no-risk-rules",
            "--no-quick-filter",
            "--training-cutoff",
            CUTOFF,
            "--bootstrap",
            "500",
            "--seed",
            "3",
            "--json",
            str(out),
            "--html",
            str(tmp_path / "ai.html"),
            "--no-store",
        ],
    )
    assert code == 0
    report = json.loads(out.read_text())
    # Then the model was never asked (recorded decisions only; no --ask-model)
    assert fake_openai.request_count == 0
    assert report["decisions"]["KRW-BTC"]["recorded"] == len(trades)
    # And the three variants are side by side; the rules-only one is the backtest of the same rules
    variants = {v["name"]: v for v in report["variants"]}
    assert set(variants) == {"rules", "rules_ai", "buy_and_hold"}
    assert variants["rules"]["scopes"]["all"]["total_return_pct"] == pytest.approx(rules.metrics["total_return_pct"])
    assert variants["rules"]["scopes"]["all"]["trades"] == len(trades)
    # And the AI that bought only the winners did better than the rules, and the interval says so
    winners = int((trades["pnl"] > 0).sum())
    assert variants["rules_ai"]["scopes"]["all"]["trades"] <= winners
    assert variants["rules_ai"]["scopes"]["all"]["win_rate_pct"] == 100.0
    [ai_vs_rules] = [
        d for d in report["differences"] if d["scope"] == "all" and d["label"].startswith("Rules + AI minus rules")
    ]
    assert ai_vs_rules["difference_pct"] > 0
    assert ai_vs_rules["ci_low_pct"] <= ai_vs_rules["difference_pct"] <= ai_vs_rules["ci_high_pct"]
    assert ai_vs_rules["probability_better"] > 0.9
    # And the candles before the cut-off are possibly contaminated; the headline uses only those after it
    assert report["cutoff"] == "2023-10-01T00:00:00+00:00"
    assert report["headline"]["scope"] == "after_cutoff"
    assert variants["rules_ai"]["scopes"]["before_cutoff"]["possibly_contaminated"] is True
    assert variants["rules_ai"]["scopes"]["after_cutoff"]["possibly_contaminated"] is False
    after = variants["rules_ai"]["scopes"]["after_cutoff"]
    assert report["headline"]["rules_ai_pct"] == after["total_return_pct"]
    assert after["bars"] + variants["rules_ai"]["scopes"]["before_cutoff"]["bars"] == report["bars"]
    # And the regimes split the headline's bars
    assert {r["regime"] for r in report["regimes"]} >= {"up", "down", "sideways"}
    assert sum(r["bars"] for r in report["regimes"]) == after["bars"]
    # And the AI's cost for the period is what the recorded answers cost
    assert report["cost"]["answers"] == len(trades)
    assert Decimal(report["cost"]["usd_exact"]) == COST * len(trades)
    assert report["cost"]["calls"] == len(trades)
    # And the HTML report draws the comparison
    assert "ResearchCharts.renderResearch" in (tmp_path / "ai.html").read_text()


def test_regimes_follow_the_trailing_return() -> None:
    close = np.array([100, 100, 100, 110, 121, 121, 100, 100, 99, 99.5])
    labels = classify_regimes(close, 2, 5.0)
    assert list(labels[:2]) == [Regime.UNCLASSIFIED.value] * 2
    assert list(labels[2:]) == ["sideways", "up", "up", "up", "down", "down", "sideways", "sideways"]


def test_scopes_split_at_the_cutoff_and_none_means_all_possibly_contaminated() -> None:
    index = pd.date_range("2023-09-30T22:00", periods=4, freq="h", tz="UTC")
    masks = scope_masks(index, datetime(2023, 10, 1, tzinfo=UTC))
    assert masks["after_cutoff"].tolist() == [False, False, True, True]
    assert masks["before_cutoff"].tolist() == [True, True, False, False]
    assert set(scope_masks(index, None)) == {"all"}


def test_buy_and_hold_pays_costs_on_the_buy_and_the_final_sale() -> None:
    equity = buy_and_hold_equity(np.array([100.0, 110.0, 120.0]), 1000.0, 0.001, 0.1)
    units = 1000 / (100 * 1.001 * 1.001)
    assert equity[1] == pytest.approx(units * 110)
    assert equity[-1] == pytest.approx(units * 120 * 0.999 * 0.999)


def test_paired_bootstrap_interval_is_reproducible_and_centred() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.001, 0.01, 2000)
    b = a - 0.0005  # a beats b by 5 bp every bar
    first = paired_bootstrap(a, b, runs=1000, seed=4)
    assert first == paired_bootstrap(a, b, runs=1000, seed=4)
    diff, low, high, better = first
    assert low <= diff <= high
    assert better == 1.0  # paired: b never beats a on the same bars


async def test_ai_value_asks_the_model_only_with_ask_model_and_then_replays_the_cache_for_free(
    make_settings: SettingsFactory, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the fake OpenAI server answering buy with 90% confidence, and an empty decision cache
    fake_openai.default = Behaviour.ok("buy", 90.0)
    make_settings(
        OPENAI_API_KEY=fake_openai.api_key,
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_MAX_RETRIES="0",
        QUICK_FILTER_TIER="lenient",
        AI_DAILY_BUDGET_USD="0",
        AI_MONTHLY_BUDGET_USD="0",
    )
    cache = tmp_path / "decisions.jsonl"
    period = [
        "ai-value",
        "--start",
        "2023-10-01",
        "--end",
        "2023-11-01",
        "--ai-cache",
        str(cache),
        "--no-store",
        "--bootstrap",
        "200",
        "--seed",
        "1",
    ]
    # When ai-value runs with --ask-model, the model answers the candidates (and the answers are cached)
    first = tmp_path / "asked.json"
    assert await asyncio.to_thread(backtest.main, [*period, "--ask-model", "--json", str(first)]) == 0
    asked = fake_openai.request_count
    assert asked > 0
    paid = json.loads(first.read_text())["cost"]
    assert paid["calls"] > 0
    assert Decimal(paid["usd_exact"]) > 0
    # And when it runs again without --ask-model (the key still set), nothing is asked: the cache is replayed,
    # with the same decisions and the cost those answers had when the model gave them
    again = tmp_path / "replayed.json"
    assert await asyncio.to_thread(backtest.main, [*period, "--json", str(again)]) == 0
    assert fake_openai.request_count == asked
    replayed = json.loads(again.read_text())
    assert replayed["cost"]["usd_exact"] == paid["usd_exact"]
    assert replayed["headline"] == json.loads(first.read_text())["headline"]
    assert replayed["decisions"]["KRW-BTC"]["from_cache"] == replayed["decisions"]["KRW-BTC"]["answered"] > 0
    # And without a cache or a key the command refuses in one error (never a silent rules-only result)
    monkeypatch.delenv("OPENAI_API_KEY")
    empty = [
        "ai-value",
        "--start",
        "2023-10-01",
        "--end",
        "2023-11-01",
        "--ai-cache",
        str(tmp_path / "none.jsonl"),
        "--no-store",
    ]
    assert await asyncio.to_thread(backtest.main, empty) == 1
