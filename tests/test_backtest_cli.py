"""``python backtest.py``: default run, options, JSON/HTML outputs, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import backtest

ROOT = Path(__file__).resolve().parents[1]


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTING_KEYS}
    return {**env, **values}


SETTING_KEYS = {"TRADING_STRATEGY", "STRATEGY_PARAMS", "PAPER_STARTING_KRW", "MIN_TRADE_INTERVAL_HOURS"}


def test_no_arguments_runs_the_bots_strategy_and_rules_on_bundled_btc() -> None:
    # When the script runs as a user would, from the project root, offline
    done = subprocess.run(
        [sys.executable, "backtest.py"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    # Then it prints the metrics table, the rules and gates with their refusals, and the last trades
    assert done.returncode == 0, done.stderr
    assert "Backtest: rule_breakout on KRW-BTC 1h" in done.stdout
    assert "Sharpe" in done.stdout
    assert "Entry rules and gates" in done.stdout
    assert "quick_filter" in done.stdout
    assert "min_trade_interval" in done.stdout
    assert "Last 10 trades" in done.stdout


def test_defaults_come_from_the_bots_settings(tmp_path: Path) -> None:
    # Given the bot's settings: the volatility breakout with k 0.7, 3 M KRW paper account, 6 h spacing
    out = tmp_path / "bot.json"
    env = _env(TRADING_STRATEGY="volatility_breakout", STRATEGY_PARAMS='{"k": 0.7}', PAPER_STARTING_KRW="3000000",
               MIN_TRADE_INTERVAL_HOURS="6")  # fmt: skip
    # When backtest.py runs with no strategy flags
    done = subprocess.run(
        [sys.executable, "backtest.py", "--start", "2023-07-01", "--end", "2023-09-01", "--json", str(out),
         "--no-quick-filter"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    # Then it backtests exactly that strategy, those parameters and those rules
    assert report["strategy"] == "volatility_breakout"
    assert report["parameters"]["k"] == 0.7
    assert report["settings"]["initial_capital"] == 3_000_000
    assert report["settings"]["min_trade_interval_hours"] == 6
    assert report["settings"]["quick_filter"] is False
    # And it trades only from the start (the warm-up before it is history), 6 h apart at least
    trades = report["trades"]
    assert trades
    assert trades[0]["entry_time"] >= "2023-07-01"
    assert report["metrics"]["start"] == "2023-06-30T23:00:00+00:00"  # the bar whose close is the first moment
    fills = sorted([t["entry_time"] for t in trades] + [t["exit_time"] for t in trades if t["exit_reason"] != "end"])
    buys = [t["entry_time"] for t in trades]
    for buy in buys[1:]:
        before = max(f for f in fills if f < buy)
        assert (datetime.fromisoformat(buy) - datetime.fromisoformat(before)).total_seconds() >= 6 * 3600


def test_json_output_has_metrics_final_equity_and_trades(tmp_path: Path) -> None:
    out = tmp_path / "vb.json"
    code = backtest.main(
        ["--strategy", "volatility_breakout", "--timeframe", "1d", "--k", "0.5", "--trend-filter",
         "--start", "2021-01-01", "--end", "2023-01-01", "--fee", "0.0005", "--capital", "1000000",
         "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["strategy"] == "volatility_breakout"
    assert {k: report["parameters"][k] for k in ("k", "trend_filter", "trend_window")} == {
        "k": 0.5, "trend_filter": True, "trend_window": 5
    }  # fmt: skip
    assert report["settings"]["initial_capital"] == 1_000_000
    assert set(report["gates"]["refused_by"]) >= {"quick_filter", "safe_mode", "min_trade_interval"}
    assert report["metrics"]["bars"] == 730
    assert report["final_equity"] == report["metrics"]["final_equity"]
    assert len(report["trades"]) == report["metrics"]["trades"] > 0
    trade = report["trades"][0]
    assert {"entry_time", "entry_candle", "entry_price", "exit_time", "exit_candle", "exit_price", "pnl", "fees",
            "exit_reason"} <= set(trade)  # fmt: skip
    assert trade["entry_candle"] >= "2021-01-01"
    assert trade["exit_reason"] in {"stop_loss", "take_profit", "trailing_stop", "time_out", "signal", "end"}


def test_a_backtest_over_the_bundled_hole_reports_the_gaps_and_the_trades_held_across(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the bundled hourly BTC, whose data miss 368 days from 2021-04-26 23:00
    out = tmp_path / "gaps.json"
    # When a backtest runs over that hole
    code = backtest.main(["--start", "2021-01-01", "--end", "2022-12-01", "--json", str(out), "--trades", "0"])
    # Then the JSON and the screen say so: the gaps, the longest first, and the trades whose holding includes one
    assert code == 0
    gaps = json.loads(out.read_text())["data_gaps"]
    assert gaps["longest"][0] == {
        "after": "2021-04-26T23:00:00+00:00",
        "before": "2022-04-30T11:00:00+00:00",
        "missing_bars": 8843,
    }
    assert gaps["count"] >= 1
    assert gaps["missing_bars"] >= 8843
    assert gaps["trades_held_across_a_gap"] >= 1
    screen = " ".join(capsys.readouterr().out.split())
    assert "the longest 2021-04-26T23:00 -> 2022-04-30T11:00 (8,843 bars)" in screen
    assert "held across a gap" in screen


def test_params_flag_and_research_switches(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    code = backtest.main(
        ["--strategy", "rule_breakout", "--params", '{"donchian_period": 30, "max_hold_hours": 48}', "--atr-stop",
         "1.5", "--no-risk-rules", "--no-quick-filter", "--position-fraction", "0.5", "--end", "2019-01-01",
         "--json", str(out), "--trades", "0"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["parameters"]["donchian_period"] == 30
    assert report["settings"]["exit_policy"]["stop_atr"] == 1.5
    assert report["settings"]["exit_policy"]["max_hold_hours"] == 48
    assert report["settings"]["risk_rules"] is False
    assert report["settings"]["quick_filter"] is False
    assert report["settings"]["position_fraction_pct"] == 50
    assert report["gates"]["refused_by"]["quick_filter"] == 0
    assert all(t["exit_reason"] != "time_out" or t["exit_time"] > t["entry_time"] for t in report["trades"])


def test_a_data_file_named_for_a_market_titles_the_report_with_that_market(tmp_path: Path) -> None:
    """Given --data .../KRW-ETH_4h.csv and no --symbol, the report is about KRW-ETH, not the default KRW-BTC."""
    out = tmp_path / "eth.html"
    data = ROOT / "backtest_data" / "hourly" / "KRW-ETH_4h.csv"

    assert backtest.main(["--data", str(data), "--html", str(out), "--trades", "0"]) == 0

    assert "<title>KRW-ETH " in out.read_text()
    assert backtest.market_of_file(Path("candles.csv")) is None


def test_data_file_and_html_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    data = ROOT / "backtest_data" / "hourly" / "KRW-ETH_1h.csv"
    assert backtest.main(["--data", str(data), "--html", str(out), "--trades", "0"]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "BacktestCharts.renderBacktest(" in page
    assert "Drawdown" in page
    assert " src=" not in page
    assert " href=" not in page


@pytest.mark.parametrize(
    "argv",
    [["--strategy", "Magic!"], ["--k", "-1"], ["--fee", "0.5"], ["--timeframe", "7h"], ["--capital", "abc"],
     ["--params", "{nope"], ["--params", "[1, 2]"]],
)  # fmt: skip
def test_bad_arguments_give_one_clear_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        backtest.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("backtest.py: error:")


def test_bad_data_gives_one_line_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2023-01-01T00:00:00Z,1,0.5,1,1,1\n")
    assert backtest.main(["--data", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"backtest.py: error: {bad}:2: high < low at 2023-01-01T00:00:00+00:00"


def test_unknown_symbol_empty_range_unknown_strategy_and_bad_params_are_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert backtest.main(["--symbol", "KRW-DOGE"]) == 1
    assert "no cached candles for KRW-DOGE 1h" in capsys.readouterr().err
    assert backtest.main(["--start", "2030-01-01"]) == 1
    assert "no candles at or after --start 2030-01-01" in capsys.readouterr().err
    assert backtest.main(["--strategy", "magic"]) == 1
    assert "unknown strategy 'magic'; available: rule_breakout, volatility_breakout" in capsys.readouterr().err
    assert backtest.main(["--strategy", "volatility_breakout", "--params", '{"k": 99}']) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("backtest.py: error: strategy volatility_breakout: parameter k must be in")
    assert len(err.splitlines()) == 1


def test_ai_strategy_without_key_or_cache_stops_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_ENABLED", "false")  # whatever a developer's .env holds, no model can be asked
    code = backtest.main(["--strategy", "ai", "--ai-cache", str(tmp_path / "none.jsonl")])
    assert code == 1
    assert "needs OPENAI_API_KEY or a decision cache" in capsys.readouterr().err


USER_STRATEGY = """
import numpy as np
from src.strategy import EXIT_PARAMS, Param, ParameterSpace, Strategy


class EveryFifthBar(Strategy):
    name = "every_fifth_bar"
    space = ParameterSpace((Param("every", int, 5, 2, 100),)) + EXIT_PARAMS.with_defaults(max_hold_hours=2.0)

    def generate_signals(self, df):
        return self.signals(df, np.arange(len(df)) % int(self.params["every"]) == 0)
"""


def test_a_user_strategy_from_strategy_path_is_backtested_with_its_exit_policy(tmp_path: Path) -> None:
    # Given a user strategy file in STRATEGY_PATH: buy every 5th bar, sell after 2 hours (time-out)
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "fifth.py").write_text(USER_STRATEGY)
    out = tmp_path / "user.json"
    # When backtest.py runs it by name, with a parameter
    done = subprocess.run(
        [sys.executable, "backtest.py", "--strategy", "every_fifth_bar", "--params", '{"every": 7}',
         "--start", "2023-11-01", "--end", "2023-12-01", "--no-quick-filter", "--json", str(out), "--trades", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env=_env(STRATEGY_PATH=str(folder)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    # Then its trades leave by the time-out 2 hours after the entry fill (or at the end)
    assert report["strategy"] == "every_fifth_bar"
    assert report["parameters"]["every"] == 7
    assert report["trades"]
    for trade in report["trades"][:-1]:
        assert trade["exit_reason"] == "time_out"
        held = datetime.fromisoformat(trade["exit_time"]) - datetime.fromisoformat(trade["entry_time"])
        assert held.total_seconds() == 2 * 3600
