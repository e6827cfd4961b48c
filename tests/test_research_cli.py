"""``backtest.py monte-carlo`` and the sub-command plumbing: JSON with percentiles and p-value, reproducible with a
seed, runs stored in the database, ``--apply`` only after a confirmation, bad input one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import backtest
from backend.app.db.migrations import upgrade_to_head
from backend.app.db.session import create_engine, session_factory
from backend.app.models import BotConfigRow, ResearchRunRow, SystemLogRow

ROOT = Path(__file__).resolve().parents[1]
# volatility breakout on the bundled KRW-BTC hourly candles, Q1 2023: a few hundred trades
MC = ["monte-carlo", "--strategy", "volatility_breakout", "--start", "2023-01-01", "--end", "2023-04-01",
      "--no-quick-filter", "--runs", "400", "--seed", "7"]  # fmt: skip
KEEP_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT", "NUMBA_CACHE_DIR")


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database as DATABASE_URL (and no other settings from the environment)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'research.db'}"
    upgrade_to_head(url)
    monkeypatch.setenv("DATABASE_URL", url)
    for name in ("TRADING_STRATEGY", "STRATEGY_PARAMS", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return url


def _rows(url: str, model: Any) -> list[Any]:
    async def read() -> list[Any]:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return list(await session.scalars(select(model)))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_monte_carlo_writes_percentiles_and_a_p_value_and_a_seed_repeats_it(database: str, tmp_path: Path) -> None:
    # When the same Monte Carlo runs twice with one seed
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert backtest.main([*MC, "--json", str(first), "--no-store"]) == 0
    assert backtest.main([*MC, "--json", str(second), "--no-store"]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    # Then the JSON holds the 5th, 50th and 95th percentiles of return, drawdown and losing streak, and a p-value
    for metric in ("total_return", "max_drawdown", "longest_losing_streak"):
        levels = a["percentiles"][metric]
        assert set(levels) == {"5", "50", "95"}
        assert levels["5"] <= levels["50"] <= levels["95"]
    assert 0 < a["p_value"] <= 1
    assert a["monte_carlo"]["runs"] == 400
    assert a["monte_carlo"]["trades"] == a["backtest"]["trades"] > 20
    # And a reshuffle keeps the backtest's total return (the same trades in another order)
    assert a["percentiles"]["total_return"]["50"] == pytest.approx(a["backtest"]["total_return_pct"], rel=1e-6)
    # And the seed makes it reproducible
    assert a["percentiles"] == b["percentiles"]
    assert a["p_value"] == b["p_value"]
    assert a["deflated_sharpe"] == b["deflated_sharpe"]
    # And nothing was stored (--no-store)
    assert _rows(database, ResearchRunRow) == []


def test_a_grid_search_first_deflates_the_sharpe_by_its_trials_and_reports_pbo(database: str, tmp_path: Path) -> None:
    # When the Monte Carlo runs on the best of a 6-set grid
    out = tmp_path / "grid.json"
    grid = ["--search-space", "k=0.4:0.6:0.1", "--search-space", "trend_filter=true,false"]
    assert backtest.main([*MC, "--runs", "200", *grid, "--json", str(out), "--no-store"]) == 0
    report = json.loads(out.read_text())
    search = report["search"]
    # Then every set was backtested, the best by Sharpe ratio is the one resampled, and the deflated Sharpe counts
    # the grid's six trials and their Sharpe variance
    assert search["sets"] == len(search["trials"]) == 6
    sharpes = [t["sharpe"] for t in search["trials"] if t["sharpe"] is not None]
    assert search["best_sharpe"] == max(sharpes)
    assert {k: report["params"][k] for k in search["best_params"]} == search["best_params"]
    assert report["deflated_sharpe"]["trials"] == 6
    assert report["deflated_sharpe"]["expected_max_sharpe_annualised"] > 0
    # And the probability of backtest overfitting of the grid is reported (CSCV, 16 blocks)
    assert 0.0 <= search["overfitting"]["pbo"] <= 1.0
    assert search["overfitting"]["splits"] == 12870


def test_the_run_is_stored_and_apply_without_confirmation_changes_nothing(database: str, tmp_path: Path) -> None:
    # When a Monte Carlo with --apply runs where nobody can answer the prompt (no terminal)
    code = backtest.main(
        [*MC, "--runs", "100", "--params", '{"k": 0.6}', "--apply", "--html", str(tmp_path / "r.html")]
    )
    # Then it exits non-zero, the run is stored, and the bot's settings are untouched
    assert code == 1
    [run] = _rows(database, ResearchRunRow)
    assert run.kind == "monte_carlo"
    assert run.status == "done"
    assert run.chosen["strategy"] == "volatility_breakout"
    assert run.chosen["params"]["k"] == 0.6
    assert run.result["p_value"] == run.summary["p_value"]
    assert run.applied_at is None
    assert _rows(database, BotConfigRow) == []
    # And the HTML report was written with the fan chart's data
    assert "ResearchCharts.renderResearch" in (tmp_path / "r.html").read_text()


def test_apply_with_yes_writes_the_audited_run_time_settings(database: str) -> None:
    assert backtest.main([*MC, "--runs", "100", "--params", '{"k": 0.6}', "--apply", "--yes"]) == 0
    [run] = _rows(database, ResearchRunRow)
    config = {row.key: row.value for row in _rows(database, BotConfigRow)}
    assert config["strategy.name"] == "volatility_breakout"
    assert config["strategy.params"]["k"] == 0.6
    audit = [row for row in _rows(database, SystemLogRow) if row.message.startswith("bot config strategy.")]
    assert len(audit) == 2
    assert all(row.context["research_run"] == run.id for row in audit)
    assert run.applied_by.startswith("cli:")


def test_without_a_database_the_run_is_not_stored_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "trading.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{missing}")
    assert backtest.main([*MC, "--runs", "50", "--json", str(tmp_path / "out.json")]) == 0
    assert (tmp_path / "out.json").is_file()
    assert "the run was not stored" in capsys.readouterr().err
    assert not missing.exists()  # never created by a research run


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
    base["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'absent.db'}"
    return subprocess.run(
        [sys.executable, "backtest.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**base, **env},
    )  # fmt: skip


RULES = ["monte-carlo", "--strategy", "rule_breakout"]
MC_ERROR = "backtest.py monte-carlo: error: "
AI_ERROR = "backtest.py ai-value: error: "
AI_PERIOD = ["ai-value", "--start", "2023-01-01", "--end", "2023-03-01"]


@pytest.mark.parametrize(
    ("args", "code", "start"),
    [
        (["monte-carlo"], 2, MC_ERROR + "the following arguments are required: --strategy"),
        ([*RULES, "--runs", "0"], 2, MC_ERROR + "argument --runs"),
        ([*RULES, "--method", "shuffle"], 2, MC_ERROR + "argument --method"),
        ([*RULES, "--seed", "-1"], 2, MC_ERROR + "argument --seed"),
        ([*RULES, "--end", "nope"], 2, MC_ERROR + "argument --end"),
        ([*RULES, "--fee", "nan"], 2, MC_ERROR + "argument --fee"),
        ([*RULES, "--apply", "--no-store"], 2, MC_ERROR + "--apply needs the stored run"),
        ([*RULES, "--search-space", "k=0.9:0.1:0.1"], 2, MC_ERROR + "argument --search-space"),
        ([*RULES, "--search-space", "k"], 2, MC_ERROR + "argument --search-space"),
        ([*RULES, "--end", "2017-10-01"], 1, MC_ERROR),
        (["ai-value", "--symbols", "krw-btc"], 2, AI_ERROR + "argument --symbols"),
        (["ai-value", "--symbol", "KRW-BTC", "--symbols", "KRW-ETH"], 2, AI_ERROR + "use either"),
        (["ai-value", "--bootstrap", "5"], 2, AI_ERROR + "argument --bootstrap"),
        ([*AI_PERIOD, "--ai-cache", "/nonexistent/cache.jsonl"], 1,
         AI_ERROR + "the ai strategy needs OPENAI_API_KEY or a decision cache"),
        ([*AI_PERIOD, "--decisions-from", "sqlite+aiosqlite:////no/such.db"], 1,
         AI_ERROR + "--decisions-from: no database file"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_a_non_zero_exit(args: list[str], code: int, start: str, tmp_path: Path) -> None:
    done = _run(args, tmp_path)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(start), lines[0]
    assert "Traceback" not in done.stderr


def test_plain_backtest_and_help_still_work_and_list_the_sub_commands(tmp_path: Path) -> None:
    done = _run(["--help"], tmp_path)
    assert done.returncode == 0
    for name in ("optimize", "monte-carlo", "ai-value"):
        assert name in done.stdout
    assert "--symbol" in _run(["monte-carlo", "--help"], tmp_path).stdout


def test_a_sub_command_without_its_research_packages_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an install without the research extras (Optuna missing)
    def without_optuna(name: str) -> object:
        raise ModuleNotFoundError("No module named 'optuna'", name="optuna")

    monkeypatch.setattr(backtest.importlib, "import_module", without_optuna)
    # When a research sub-command starts
    code = backtest.run_subcommand("optimize", ["--strategy", "rule_breakout"])
    # Then one line names the package and how to install it
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "backtest.py optimize: error: needs the package optuna "
        '(pip install -r requirements-research.txt, or pip install ".[research]")'
    ]


# --- the research HTML report, drawn in a real browser ------------------------------------------------------------
def _open_in_browser(page: Path) -> dict[str, Any]:
    from tests.test_report_html import CHROMIUM, _browser

    with _browser() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            view = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            remote: list[str] = []
            view.on("pageerror", lambda error: problems.append(str(error)))
            view.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            view.on("request", lambda r: remote.append(r.url) if not r.url.startswith("file:") else None)
            view.goto(page.as_uri())
            view.wait_for_selector(".bt-root")
            view.wait_for_timeout(300)
            return {
                "problems": problems,
                "remote": remote,
                "panes": view.locator(".bt-pane").count(),
                "canvases": view.locator(".bt-pane canvas").count(),
                "text": view.inner_text(".bt-root"),
                "heat_cells": view.locator(".rs-heat td[style*='background']").count(),
            }
        finally:
            browser.close()


def test_the_monte_carlo_report_draws_its_fan_chart_offline(database: str, tmp_path: Path) -> None:
    page = tmp_path / "mc.html"
    assert backtest.main([*MC, "--runs", "200", "--html", str(page), "--no-store"]) == 0
    seen = _open_in_browser(page)
    assert seen["problems"] == []
    assert seen["remote"] == []
    assert seen["panes"] == 1
    assert seen["canvases"] >= 3
    assert "Longest losing streak" in seen["text"]
    assert "p-value" in seen["text"]


def test_the_search_sections_draw_folds_stitched_equity_and_a_heat_map(tmp_path: Path) -> None:
    # Given the report keys a walk-forward search writes (S15-SEARCH's optimize calls write_research_report)
    from src.research.report_html import fold_rows, heatmap_payload, write_research_report

    folds = fold_rows(
        [
            {"train": {"start": "2023-01-01T00:00:00+00:00", "end": "2023-03-01T00:00:00+00:00"},
             "test": {"start": "2023-03-02T00:00:00+00:00", "end": "2023-04-01T00:00:00+00:00"},
             "params": {"k": 0.5}, "test_metrics": {"total_return_pct": 1.5, "sharpe": 0.8, "trades": 12}},
            {"train": ["2023-02-01T00:00:00+00:00", "2023-04-01T00:00:00+00:00"],
             "test": ["2023-04-02T00:00:00+00:00", "2023-05-01T00:00:00+00:00"],
             "params": {"k": 0.6}, "test_metrics": {"total_return_pct": -0.4, "sharpe": -0.2, "trades": 9}},
        ]
    )  # fmt: skip
    stitched = [[f"2023-03-{day:02d}T00:00:00+00:00", 1_000_000 + 1000 * day] for day in range(2, 29)]
    heat = heatmap_payload("k", [0.4, 0.5, 0.6], "trend_window", [3, 5], [[0.1, 0.4, None], [-0.2, 0.9, 0.3]], "sharpe")
    page = tmp_path / "search.html"
    write_research_report(page, {"folds": folds, "stitched_equity": stitched, "heatmap": heat}, "search")
    # Then the browser draws the fold table, the stitched equity and the heat map, offline and without errors
    seen = _open_in_browser(page)
    assert seen["problems"] == []
    assert seen["remote"] == []
    assert seen["panes"] == 1
    assert "Walk-forward folds" in seen["text"]
    assert '{"k":0.6}' in seen["text"]
    assert seen["heat_cells"] == 5  # every evaluated cell is coloured, the missing one is not
    with pytest.raises(ValueError, match="one row per y value"):
        heatmap_payload("k", [1, 2], "w", [1], [[1.0]], "sharpe")


def test_a_run_that_fails_is_stored_as_failed_with_its_error(database: str) -> None:
    # When a Monte Carlo cannot run (no candle closes before --end)
    assert backtest.main(["monte-carlo", "--strategy", "rule_breakout", "--end", "2017-10-01"]) == 1
    # Then its run is kept, failed, with the one-line reason the command printed
    [run] = _rows(database, ResearchRunRow)
    assert run.status == "failed"
    assert run.error.startswith("no KRW-BTC 1h candles in the requested range")
    assert run.result is None
