"""Benchmark: the trading pipeline's own overhead per symbol, and replay speed.

Run from the project root::

    .venv/bin/python -m benchmarks.pipeline.run [--cycles 300] [--replay-days 365] [--skip-replay]

1. Cycle overhead: ``TradingPipeline.run_symbol`` on real KRW-BTC hourly candles against zero-latency
   in-process collaborators (paper exchange over a replay source, an adviser that answers at once), so
   what is measured is the pipeline itself: risk checks, candle collection, indicators, the strategy,
   the quick filter, validator, liquidity, order placement/settlement and the records. Four setups:
   in-memory stores or SQLite, each on the hold path and on the buy path (an order placed, filled and
   settled in every measured cycle; the position is sold outside the timing).
2. Replay speed: ``scheduler_main.py --replay`` over ``--replay-days`` of hourly bars on a fresh SQLite
   file (all scheduler jobs, every record written), in trading cycles per second.

Prints a markdown table and writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.app.core.replay import ReplayOptions, run_replay
from backend.app.db.migrations import upgrade_to_head
from backend.app.db.repositories.paper import SqlPaperAccountStore
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.db.session import create_engine, session_factory
from src.ai.models import AIDecision, MarketContext
from src.api.paper_account import InMemoryPaperAccountStore, PaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.backtesting.data_provider import HistoricalDataProvider
from src.backtesting.quick_filter import QuickBacktestFilter
from src.config.settings import Settings, load_settings
from src.data.replay import ReplayMarketSource
from src.domain.decisions import Decision, DecisionSource
from src.domain.modes import TradingMode
from src.risk import InMemoryRiskStore
from src.risk.store import RiskStore
from src.strategy.contract import Strategy, StrategySignals
from src.strategy.registry import AI_STRATEGY
from src.trading.pipeline import TradingPipeline
from src.trading.pipeline.compose import PipelineAdapters, build_pipeline
from src.trading.pipeline.memory import InMemoryTradingRepository
from src.trading.repository import ITradingRepository
from src.utils.logger import configure_logging

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SYMBOL = "KRW-BTC"
BENCH_ENV = {
    "MIN_TRADE_INTERVAL_HOURS": "0",
    "MAX_TRADES_PER_DAY": "10000",
    "VALIDATOR_MAX_RSI": "100",
    "VALIDATOR_MAX_ATR_PCT": "100",
    "VALIDATOR_FAKEOUT_ADX": "0",
    "LOG_LEVEL": "WARNING",
}


class InstantAdviser:
    """A zero-latency adviser: answers ``decision`` at once (what the pipeline does around it is measured)."""

    available = True

    off_reason = None

    def __init__(self) -> None:
        self.decision = Decision.HOLD

    async def check_budget(self, *, reread: bool = False) -> str | None:
        return None

    async def decide(self, context: MarketContext) -> AIDecision:
        return AIDecision(self.decision, Decimal("90"), "bench", DecisionSource.AI, "bench", "0" * 64, "{}", "{}")


class EntryEveryBar(Strategy):
    """The ai strategy's candidate with an entry on every bar, so the adviser is asked in every measured cycle."""

    name = "entry_every_bar"

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        return self.signals(df, np.ones(len(df), dtype=np.bool_))


@dataclass(slots=True)
class Setup:
    name: str
    pipeline: TradingPipeline
    source: ReplayMarketSource
    adviser: InstantAdviser
    close: Callable[[], Awaitable[None]]


def load_settings_for_bench() -> Settings:
    for name, value in BENCH_ENV.items():
        os.environ[name] = value
    os.environ.pop("OPENAI_API_KEY", None)
    return load_settings(env_file=None)


def candles(settings: Settings) -> pd.DataFrame:
    return HistoricalDataProvider(settings.market_data.backtest_data_dir).load_historical_data(
        SYMBOL, "1h", start="2023-06-01", end="2024-01-01"
    )


def _pipeline(
    settings: Settings,
    source: ReplayMarketSource,
    adviser: InstantAdviser,
    repository: ITradingRepository,
    risk_store: RiskStore,
    account: PaperAccountStore,
) -> TradingPipeline:
    """The bot's own graph (``build_pipeline``) in replay mode, trading the ai strategy on a candidate that enters
    on every bar (the adviser decides hold or buy); the quick filter is measured separately below (it is cached
    per bar in live use)."""
    settings = settings.model_copy(update={"strategy": settings.strategy.model_copy(update={"name": AI_STRATEGY})})
    adapters = PipelineAdapters(
        exchange=PaperExchange.from_settings(settings, source, account, clock=source.now),
        repository=repository,
        risk_store=risk_store,
        clock=source.now,
        adviser=adviser,
        strategy=EntryEveryBar(),
        quick_filter=None,
    )
    return build_pipeline(settings, adapters, mode=TradingMode.REPLAY, instance="bench")


def memory_setup(settings: Settings, frame: pd.DataFrame, start: datetime) -> Setup:
    source = ReplayMarketSource({SYMBOL: {"1h": frame}}, start=start)
    repo = InMemoryTradingRepository()
    adviser = InstantAdviser()
    pipeline = _pipeline(settings, source, adviser, repo, InMemoryRiskStore(orders=repo), InMemoryPaperAccountStore())

    async def close() -> None:
        return None

    return Setup("in-memory stores", pipeline, source, adviser, close)


async def sqlite_setup(settings: Settings, frame: pd.DataFrame, start: datetime, folder: Path) -> Setup:
    url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    db_engine = create_engine(url)
    sessions = session_factory(db_engine)
    source = ReplayMarketSource({SYMBOL: {"1h": frame}}, start=start)
    adviser = InstantAdviser()
    pipeline = _pipeline(
        settings,
        source,
        adviser,
        SqlTradingRepository(sessions),
        SqlRiskStore(sessions),
        SqlPaperAccountStore(sessions, "replay"),
    )

    async def close() -> None:
        await db_engine.dispose()

    return Setup("SQLite (SQL repositories, SQL paper account)", pipeline, source, adviser, close)


async def measure(setup: Setup, cycles: int, decision: Decision) -> dict[str, Any]:
    setup.adviser.decision = decision
    pipeline = setup.pipeline
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    moment = setup.source.now()
    for _ in range(cycles):
        moment += timedelta(hours=1)
        setup.source.advance_to(moment)
        started = time.perf_counter()
        report = await pipeline.run_symbol(SYMBOL)
        totals.append((time.perf_counter() - started) * 1000)
        if report.error:
            raise RuntimeError(report.error)
        if decision is Decision.BUY and not report.orders:
            raise RuntimeError(f"expected an order on the buy path, got {report.outcome}")
        cycle = (await _last_cycle(pipeline)) or {}
        for stage, ms in cycle.items():
            stages.setdefault(stage, []).append(ms)
        if decision is Decision.BUY:  # flatten outside the timing so the next cycle can buy again
            balances = await pipeline.exchange.get_balances()
            btc = next((b for b in balances if b.currency == "BTC" and b.balance > 0), None)
            if btc is not None:
                await pipeline.trading.market_sell(SYMBOL, btc.balance, reason="bench", cycle_id=None)
    return {
        "cycles": cycles,
        "median_ms": round(statistics.median(totals), 3),
        "p95_ms": round(sorted(totals)[int(len(totals) * 0.95) - 1], 3),
        "mean_ms": round(statistics.fmean(totals), 3),
        "stage_median_ms": {k: round(statistics.median(v), 3) for k, v in stages.items()},
    }


async def _last_cycle(pipeline: TradingPipeline) -> dict[str, float] | None:
    repo = pipeline.repository
    if isinstance(repo, InMemoryTradingRepository):
        return {s.stage: s.duration_ms for s in repo.cycles[-1].stages}
    return None


def quick_filter_cost(frame: pd.DataFrame, settings: Settings, runs: int = 20) -> float:
    """A cache miss of the quick filter (a 200-bar rule backtest); live, it runs once per bar and symbol."""
    timings = []
    for offset in range(runs):
        qf = QuickBacktestFilter(lookback_days=settings.backtest.quick_filter_lookback_days)
        window = frame.iloc[offset : offset + 200]
        started = time.perf_counter()
        qf.evaluate(SYMBOL, window)
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 3)


async def bench_cycles(settings: Settings, cycles: int) -> dict[str, Any]:
    frame = candles(settings)
    start = frame.index[300].to_pydatetime() + timedelta(hours=1)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for make in ("memory", "sqlite"):
            for decision in (Decision.HOLD, Decision.BUY):
                setup = (
                    memory_setup(settings, frame, start)
                    if make == "memory"
                    else await sqlite_setup(settings, frame, start, Path(folder) / decision.value)
                )
                try:
                    await measure(setup, 20, decision)  # warm-up
                    results[f"{make}/{decision.value}"] = {
                        "setup": setup.name,
                        **await measure(setup, cycles, decision),
                    }
                finally:
                    await setup.close()
    results["quick_filter_miss_ms"] = quick_filter_cost(frame, settings)
    return results


async def bench_replay(settings: Settings, days: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'replay.db'}"
        await asyncio.to_thread(upgrade_to_head, url)
        end = datetime(2024, 1, 1, tzinfo=UTC)
        options = ReplayOptions(symbols=[SYMBOL], start=end - timedelta(days=days), end=end, database_url=url)
        started = time.perf_counter()
        summary = await run_replay(settings, options)
        wall = time.perf_counter() - started
    return {
        "days": days,
        "trading_cycles": summary.cycles,
        "scheduler_moments": summary.moments,
        "jobs": summary.jobs,
        "trades": summary.trades,
        "drive_seconds": round(summary.seconds, 2),
        "wall_seconds": round(wall, 2),
        "trading_cycles_per_second": round(summary.cycles / summary.seconds, 1),
        "moments_per_second": round(summary.moments / summary.seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.pipeline.run")
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--replay-days", type=int, default=365)
    parser.add_argument("--skip-replay", action="store_true")
    args = parser.parse_args()
    configure_logging(level="WARNING", log_format="console")
    settings = load_settings_for_bench()
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cycle": asyncio.run(bench_cycles(settings, args.cycles)),
    }
    path = RESULTS / "pipeline.json"
    if not args.skip_replay:
        results["replay"] = asyncio.run(bench_replay(settings, args.replay_days))
    elif path.exists():  # keep the last replay measurement
        previous = json.loads(path.read_text())
        if "replay" in previous:
            results["replay"] = previous["replay"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print("| setup | path | median ms | p95 ms | mean ms |")
    print("|---|---|---|---|---|")
    for key, row in results["cycle"].items():
        if isinstance(row, dict):
            print(f"| {row['setup']} | {key.split('/')[1]} | {row['median_ms']} | {row['p95_ms']} | {row['mean_ms']} |")
    print(f"\nquick filter cache miss: {results['cycle']['quick_filter_miss_ms']} ms")
    if "replay" in results:
        print(json.dumps(results["replay"], indent=2))


if __name__ == "__main__":
    main()
