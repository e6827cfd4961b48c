"""``python backtest.py --parity`` end to end, as a user runs it: the backtest and the replay of the same strategy
over the same candles, compared trade by trade (docs/PARITY.md). Each run is a real process on a short window:
bundled KRW-BTC hourly candles for both bundled strategies and the user strategy example, and a candle file the
test generates. The issue's Done-when: the two lists are the same (exit status 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]  # real processes, a replay each


def clean_env(**extra: str) -> dict[str, str]:
    """The bot's default settings: no keys, no .env overrides, no metrics port to collide on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UPBIT_", "TRADING_", "STRATEGY_"))}
    env.update(TRADING_MODE="paper", SCHEDULER_METRICS_PORT="0", PYTHONPATH=str(ROOT), **extra)
    return env


def parity(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "parity.json"
    done = subprocess.run(
        [sys.executable, "backtest.py", "--parity", *args, "--json", str(out)],
        cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.is_file(), done.stdout + done.stderr
    return done, json.loads(out.read_text())


def assert_same_round_trips(done: subprocess.CompletedProcess[str], report: dict[str, Any]) -> None:
    """Exit 0 and an identical list with at least one closed round trip (an empty list, or one position held to the
    end, proves little)."""
    assert report["differences"] == [], done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["identical"] is True
    assert report["counts"]["backtest"] == report["counts"]["replay"] >= 1
    assert any(trip["exit_reason"] != "end" for trip in report["replay"]), done.stdout
    assert done.stdout.splitlines()[-1].startswith(f"identical: {report['counts']['backtest']} round trips in both")
    for backtest, replay in zip(report["backtest"], report["replay"], strict=True):
        assert backtest["entry_at"] == replay["entry_at"]
        assert backtest["exit_reason"] == replay["exit_reason"]


@pytest.mark.parametrize(
    ("strategy", "start", "end"),
    [
        ("rule_breakout", "2023-09-25", "2023-10-09"),  # a week of breakouts, then quiet
        # an entry every few hours, a signal exit at the next bar (the quick filter passes it in the 2021 rally only)
        ("volatility_breakout", "2021-02-03", "2021-02-10"),
    ],
)
def test_bundled_strategies_on_bundled_candles_trade_the_same_in_backtest_and_replay(
    tmp_path: Path, strategy: str, start: str, end: str
) -> None:
    # When the parity report runs a bundled strategy with the bot's default settings on bundled KRW-BTC hours
    done, report = parity(tmp_path, "--strategy", strategy, "--start", start, "--end", end)

    # Then the backtest and the bot made the same round trips
    assert report["strategy"] == strategy
    assert report["symbol"] == "KRW-BTC"
    assert_same_round_trips(done, report)


def test_the_user_strategy_example_trades_the_same_in_backtest_and_replay(tmp_path: Path) -> None:
    done, report = parity(tmp_path, "--strategy", "sma_crossover", "--start", "2023-11-12", "--end", "2023-11-26")

    assert report["strategy"] == "sma_crossover"
    assert_same_round_trips(done, report)
    assert {trip["exit_reason"] for trip in report["replay"]} <= {"signal", "stop_loss", "time_out", "end"}


@pytest.mark.parametrize(
    ("start", "end"),
    [
        # the bar before --start (opening 2021-01-31 23:00) signals an entry: it is not in the window, so neither
        # side may act on it at the moment --start
        ("2021-02-01", "2021-02-03"),
        # the last bar (opening 06:00) signals an entry: both act on it at its close, the moment --end
        ("2021-02-03", "2021-02-03T07:00"),
    ],
)
def test_the_windows_edges_are_the_same_bars_in_both(tmp_path: Path, start: str, end: str) -> None:
    """The window's bars open in [start, end) and are acted on at their close, in (start, end], in both worlds."""
    done, report = parity(tmp_path, "--strategy", "volatility_breakout", "--start", start, "--end", end)

    assert report["differences"] == [], done.stdout
    assert done.returncode == 0


def trending_walk(bars: int, seed: int = 7) -> pd.DataFrame:
    """A seeded random walk whose drift changes every two days (down, flat, up) and whose volatility alternates
    between calm and busy stretches: squeezes, breakouts and trends, so the rule strategy trades."""
    rng = np.random.default_rng(seed)
    drift = np.repeat(rng.choice([-0.002, 0.0, 0.003], size=bars // 48 + 1), 48)[:bars]
    calm = np.repeat(rng.choice([0.3, 1.0], size=bars // 72 + 1), 72)[:bars]
    returns = drift + rng.normal(0, 0.006, bars) * calm
    close = 40_000_000 * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([40_000_000.0], close[:-1]))
    wick = np.abs(rng.normal(0, 0.003, bars)) * close
    volume = rng.lognormal(2.0, 0.5, bars) * (1 + 2 * (np.abs(returns) > 0.01))
    index = pd.date_range("2024-03-01", periods=bars, freq="h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + wick,
            "low": np.minimum(open_, close) - wick,
            "close": close,
            "volume": volume,
            "value": volume * close,
        },
        index=index,
    )


def test_a_generated_candle_file_trades_the_same_in_backtest_and_replay(tmp_path: Path) -> None:
    # Given 64 days of generated hourly candles (50 days of history before the 14-day window)
    data = tmp_path / "KRW-BTC_1h.csv"
    trending_walk(64 * 24).to_csv(data, index_label="timestamp", date_format="%Y-%m-%dT%H:%M:%SZ")

    # When the parity report runs the rule strategy on the file's last two weeks
    done, report = parity(tmp_path, "--data", str(data), "--start", "2024-04-20", "--end", "2024-05-04")

    # Then both worlds made the same round trips on it
    assert report["data_file"] == str(data)
    assert_same_round_trips(done, report)


def test_fills_beyond_the_slippage_setting_are_reported_trade_by_trade(tmp_path: Path) -> None:
    """Given a backtest forced to 0.2 % slippage while the bot fills with its setting (0.05 %), then the round
    trips both made differ by their prices (about 0.15 % apart), the printout names each one, and the exit status
    is 1."""
    done, report = parity(tmp_path, "--start", "2023-09-25", "--end", "2023-10-09", "--slippage", "0.2")

    assert done.returncode == 1, done.stderr
    assert report["identical"] is False
    assert report["slippage_pct"] == 0.05
    assert report["differences"]
    assert done.stdout.splitlines()[1].startswith("DIFFERENT: backtest")
    assert any("more than the 0.05 % slippage" in line for line in done.stdout.splitlines())
    assert "entry_price" in {difference["kind"] for difference in report["differences"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parity", "--end", "2023-10-01"], "--parity needs --start and --end"),
        (["--parity", "--start", "2023-10-01", "--end", "2023-09-01"], "--start 2023-10-01 is not before --end"),
        (["--parity", "--strategy", "nope", "--start", "2023-09-01", "--end", "2023-09-02"], "unknown strategy 'nope'"),
        (
            ["--parity", "--timeframe", "4h", "--start", "2023-09-01", "--end", "2023-09-02"],
            "--timeframe 4h: the bot trades 1h candles (CANDLE_INTERVAL_MINUTES=60)",
        ),
    ],
)
def test_bad_parity_requests_are_one_line_errors(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "backtest.py", *args],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert done.stderr.startswith("backtest.py: error: ")
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
