"""``python backtest.py``: default run, options, JSON/HTML outputs, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import backtest

ROOT = Path(__file__).resolve().parents[1]


def test_no_arguments_runs_the_rule_strategy_on_bundled_btc() -> None:
    # When the script runs as a user would, from the project root, offline
    done = subprocess.run(
        [sys.executable, "backtest.py"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    # Then it prints the metrics table and the last trades
    assert done.returncode == 0, done.stderr
    assert "Backtest: rule_breakout on KRW-BTC 1h" in done.stdout
    assert "Sharpe" in done.stdout
    assert "Last 10 trades" in done.stdout


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
    assert report["parameters"] == {"k": 0.5, "trend_filter": True, "trend_window": 5}
    assert report["settings"]["initial_capital"] == 1_000_000
    assert report["metrics"]["bars"] == 730
    assert report["final_equity"] == report["metrics"]["final_equity"]
    assert len(report["trades"]) == report["metrics"]["trades"] > 0
    trade = report["trades"][0]
    assert {"entry_time", "entry_price", "exit_time", "exit_price", "pnl_pct"} <= set(trade)
    assert trade["entry_time"] >= "2021-01-01"


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
    assert page.count("<svg") == 3
    assert "Drawdown" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.parametrize(
    "argv",
    [["--k", "-1"], ["--fee", "0.5"], ["--timeframe", "7h"], ["--capital", "abc"]],
)
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


def test_unknown_symbol_and_empty_range_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert backtest.main(["--symbol", "KRW-DOGE"]) == 1
    assert "no cached candles for KRW-DOGE 1h" in capsys.readouterr().err
    assert backtest.main(["--start", "2030-01-01"]) == 1
    assert "the data covers" in capsys.readouterr().err


def test_ai_strategy_without_key_or_cache_stops_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_ENABLED", "false")  # whatever a developer's .env holds, no model can be asked
    code = backtest.main(["--strategy", "ai", "--ai-cache", str(tmp_path / "none.jsonl")])
    assert code == 1
    assert "needs OPENAI_API_KEY or a decision cache" in capsys.readouterr().err
