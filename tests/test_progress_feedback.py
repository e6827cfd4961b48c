"""Progress that moves: a backtest reports each stage with its counts (the ai strategy each decision), draws a
live bar only on a terminal, and the candle collector prints a line per tenth of the way where no bar can be
drawn; none of it reaches a JSON report or a pipe's output as bar characters."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from scripts.backtesting import data_collector
from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.data_provider import save_candle_csv
from src.backtesting.runner import BacktestRequest, run_backtest, simulate
from src.config.settings import load_settings
from src.strategy.bundled import VolatilityBreakoutStrategy
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles
from tests.test_backtesting_ai_strategy import RecordingAdviser, lenient_validator

STAGES = ("loading candles", "simulating", "writing reports")


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    bars = 3000
    close = 50_000_000 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    index = pd.date_range("2024-01-01", periods=bars, freq="h", tz="UTC", name="timestamp")
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.003,
            "low": np.minimum(open_, close) * 0.997,
            "close": close,
            "volume": rng.uniform(1, 5, bars),
            "value": close * 3.0,
        },
        index=index,
    )
    path = tmp_path / "KRW-BTC_1h.csv"
    save_candle_csv(frame, path)
    return path


def request(csv: Path, **changes: object) -> BacktestRequest:
    base = BacktestRequest(data_file=csv, strategy="volatility_breakout", quick_filter=False, show_trades=0)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_a_backtest_reports_every_stage_with_its_counts(csv: Path) -> None:
    # Given a rule backtest of 3,000 bars
    seen: list[tuple[float, str]] = []
    # When it runs with a progress callback
    done = simulate(request(csv), load_settings(), lambda share, stage: seen.append((share, stage)))
    # Then the share only grows and each stage says what it works on
    shares = [share for share, _ in seen]
    assert shares == sorted(shares)
    assert len(seen) >= 4
    stages = " | ".join(stage for _, stage in seen)
    assert "loading candles: KRW-BTC_1h.csv" in stages
    assert "3,000 bars" in stages
    assert f"writing reports: {int(done.result.metrics['trades']):,} trades" in stages


def test_the_quick_filter_stage_names_the_entry_attempts(csv: Path) -> None:
    seen: list[str] = []
    simulate(request(csv, quick_filter=True), load_settings(), lambda _share, stage: seen.append(stage))
    assert any("quick filter at each of up to" in stage for stage in seen)


async def test_the_ai_strategy_reports_each_decision(csv: Path) -> None:
    # Given an ai strategy over many candidate entries
    candles = pd.read_csv(csv, index_col="timestamp", parse_dates=["timestamp"])
    strategy = AITradingStrategy(
        RecordingAdviser(), "KRW-BTC", VolatilityBreakoutStrategy(), validator=lenient_validator()
    )
    calls: list[tuple[int, int]] = []
    # When it decides them
    await strategy.prepare(candles, lambda done, total: calls.append((done, total)))
    # Then it reported after each one, up to all of them
    total = strategy.stats.candidates
    assert total > 20
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_a_terminal_shows_a_live_bar_and_a_pipe_does_not(csv: Path, tmp_path: Path) -> None:
    settings = load_settings()
    # On a terminal: the bar is drawn (transient: it is cleared before the report)
    terminal = io.StringIO()
    run_backtest(request(csv), settings, Console(file=terminal, force_terminal=True, width=140))
    assert "Backtest: volatility_breakout" in terminal.getvalue()
    assert any(stage in terminal.getvalue() for stage in STAGES)
    # In a pipe: the report only, and the JSON is strict JSON
    pipe = io.StringIO()
    out = tmp_path / "out.json"
    run_backtest(request(csv, json_out=out), settings, Console(file=pipe, force_terminal=False, width=140))
    assert not any(stage in pipe.getvalue() for stage in STAGES)
    assert "\x1b[" not in pipe.getvalue()  # no cursor movement or colour codes
    assert json.loads(out.read_text())["strategy"] == "volatility_breakout"


def test_the_collector_prints_a_line_per_tenth_when_not_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 3,000 hourly candles on the fake exchange (15 pages)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with FakeUpbit() as fake:
        fake.set_candles("KRW-BTC", "1h", make_candles(start, 3000, "1h", seed=2))
        # When the collector runs into a pipe
        code = data_collector.main(
            [
                "--symbol", "KRW-BTC", "--timeframe", "1h", "--start", "2024-01-01", "--end", "2024-05-05",
                "--data-dir", str(tmp_path), "--base-url", fake.base_url,
            ]
        )  # fmt: skip
    # Then it printed progress lines as it went: percentages rising, requests, candles and the position
    assert code == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("KRW-BTC 1h ") and "%" in line]
    assert len(lines) >= 5
    percents = [int(line.split()[2].rstrip("%")) for line in lines]
    assert percents == sorted(percents)
    assert "requests" in lines[-1]
    assert "new candles, at 2024-" in lines[-1]
    assert "ETA" in lines[-1]
    assert "\x1b[" not in printed
