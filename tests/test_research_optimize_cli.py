"""``python backtest.py optimize``: a search and a walk-forward from the command line (JSON as documented), and
bad input as one line with a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import backtest
from src.backtesting.engine import EngineConfig
from src.research.batch import evaluate_batch
from src.research.data import ResearchData

ROOT = Path(__file__).resolve().parents[1]
WINDOW = ["--start", "2023-06-01", "--end", "2023-09-01", "--no-store"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "backtest.py", "optimize", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def test_grid_search_writes_the_best_parameters_of_the_grid(tmp_path: Path) -> None:
    # Given a grid over k and the trend filter on the bundled BTC hours, research rules, fee and slippage given
    out = tmp_path / "search.json"
    search = ["--strategy", "volatility_breakout", "--space", "k=0.4:1.2:0.4", "--space", "trend_filter=false,true",
              "--objective", "return", "--min-trades", "5", "--no-risk-rules", "--no-quick-filter", "--fee", "0.0005",
              "--slippage", "0.1", "--cache-dir", str(tmp_path / "cache"), *WINDOW]  # fmt: skip
    done = _run(*search, "--json", str(out))
    # Then it succeeds and the JSON holds every trial and the best parameters
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["method"] == "grid"
    assert report["trials"] == 6
    assert report["objectives"] == ["return"]
    best = report["best_params"]
    assert {"k", "trend_filter", "trend_window"} <= set(best)
    assert report["top"][0]["params"] == best
    assert report["heatmap"]["x"] == {"name": "k", "values": [0.4, 0.8, 1.2]}
    top = report["top"][0]["metrics"]
    assert top["trades"] >= 5
    assert all(t["metrics"]["total_return_pct"] <= top["total_return_pct"] for t in report["top"])
    assert "Best of 6 trials" in done.stdout
    # And the search is counted against its best: deflated Sharpe over all 6 trials, PBO over the feasible sets
    overfitting = report["overfitting"]
    assert overfitting["top_sets"] == report["feasible_trials"]
    assert overfitting["deflated_sharpe"]["trials"] == 6
    assert 0.0 <= overfitting["deflated_sharpe"]["deflated_sharpe"] <= 1.0
    assert 0.0 <= overfitting["probability_of_overfitting"]["pbo"] <= 1.0
    assert "Probability of backtest overfitting" in done.stdout
    # And the finished batches are on disk: the same run again reads them back and reports the same
    assert list((tmp_path / "cache").rglob("*.json"))
    again = tmp_path / "again.json"
    rerun = _run(*search, "--json", str(again))
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(again.read_text())["top"] == report["top"]


def test_walk_forward_writes_folds_with_windows_params_and_oos_metrics(tmp_path: Path) -> None:
    # Given a TPE search in 3 anchored folds with an embargo of a day
    out = tmp_path / "wf.json"
    done = _run("--strategy", "volatility_breakout", "--space", "k=0.2:2.0:0.1", "--trials", "12", "--method", "tpe",
                "--walk-forward", "3", "--test", "10d", "--embargo", "1d", "--anchored", "--min-trades", "1",
                "--no-quick-filter", "--json", str(out), "--cache-dir", str(tmp_path / "cache"), *WINDOW)  # fmt: skip
    # Then the JSON holds the folds (ISO windows, params, test metrics) and the stitched out-of-sample metrics
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    folds = report["folds"]
    assert len(folds) == 3
    assert report["mode"] == "anchored"
    assert report["embargo_bars"] == 24
    for fold in folds:
        assert fold["test"]["bars"] == 240
        assert fold["train"]["end"] < fold["test"]["start"]
        assert fold["params"] is None or 0.2 <= fold["params"]["k"] <= 2.0
    assert folds[-1]["test"]["end"] == "2023-08-31T23:00:00+00:00"  # the close of the last bar acted on
    assert {f["train"]["start"] for f in folds} == {folds[0]["train"]["start"]}
    assert "total_return_pct" in report["oos_metrics"]
    assert len(report["stitched_equity"]) == 3 * 240
    assert report["best_params"] == folds[-1]["params"]
    assert set(report["is_oos_decay"]) >= {"sharpe", "cagr_pct"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nope=1:2"], "has no parameter nope"),
        (["--space", "k="], "empty space"),
        (["--space", "k=1.5:0.5"], "is above hi"),
        (["--objective", "sharp"], "unknown objective 'sharp'"),
        (["--objective", "sharpe,return", "--method", "tpe", "--trials", "5"], "need --method nsga2"),
        (["--method", "random"], "needs --trials"),
        (["--space", "k=0.1:3.0:0.1", "--trials", "5", "--method", "grid"], "more than --trials 5"),
        (["--walk-forward", "50", "--test", "30d"], "--walk-forward 50"),
        (["--train", "100"], "need --walk-forward"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a bad option / When optimize runs / Then one line on stderr names it and the exit code is not 0
    code = backtest.main(["optimize", "--strategy", "volatility_breakout", *args, *WINDOW])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_research_data_of_the_cli_window_matches_a_direct_evaluation() -> None:
    # Given the candles optimize loads for a window
    from argparse import Namespace

    from src.research.cli_optimize import build_parser, load_research_data
    from src.research.cli_support import ResearchContext

    args: Namespace = build_parser().parse_args(["--strategy", "volatility_breakout", *WINDOW])
    from rich.console import Console

    from src.config.settings import load_settings

    context = ResearchContext(prog="t", console=Console(quiet=True), settings_loader=load_settings)
    data, config, _ = load_research_data(args, context)
    # Then the first bar traded closes at --start, the warm-up is before it, and the data evaluates
    assert isinstance(data, ResearchData)
    assert data.index[data.start].isoformat() == "2023-05-31T23:00:00+00:00"
    assert data.start > 0
    assert isinstance(config, EngineConfig)
    assert evaluate_batch(data, "volatility_breakout", [{"k": 0.5}], config)[0]["trades"] >= 0


def _rows(url: str, model: Any) -> list[Any]:
    from sqlalchemy import select

    from backend.app.db.session import create_engine, session_factory

    async def read() -> list[Any]:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return list(await session.scalars(select(model)))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_the_search_is_stored_with_its_choice_and_apply_without_a_yes_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a migrated database as DATABASE_URL
    from backend.app.db.migrations import upgrade_to_head
    from backend.app.models import BotConfigRow, ResearchRunRow

    url = f"sqlite+aiosqlite:///{tmp_path / 'research.db'}"
    upgrade_to_head(url)
    monkeypatch.setenv("DATABASE_URL", url)
    for name in ("TRADING_STRATEGY", "STRATEGY_PARAMS"):
        monkeypatch.delenv(name, raising=False)
    # When optimize runs with --apply but no terminal to confirm and no --yes
    code = backtest.main(["optimize", "--strategy", "volatility_breakout", "--space", "k=0.5:1.5:0.5",
                          "--no-quick-filter", "--start", "2023-06-01", "--end", "2023-08-01", "--no-cache",
                          "--apply"])  # fmt: skip
    # Then the run is stored, done, as an optimize run with its chosen parameters, and nothing is applied
    assert code == 1
    [run] = _rows(url, ResearchRunRow)
    assert run.kind == "optimize"
    assert run.status == "done"
    assert run.chosen["strategy"] == "volatility_breakout"
    assert run.chosen["params"] == run.result["best_params"]
    assert run.params["space"] == ["k=0.5:1.5:0.5"]
    assert _rows(url, BotConfigRow) == []
