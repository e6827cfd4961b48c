"""Start-up imports only what the run needs: a rule backtest never loads the model client, and the scheduler
loads neither the model client without an OpenAI key nor sentry-sdk without SENTRY_DSN. Each check runs in a
fresh interpreter and reads its ``sys.modules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from src.backtesting.data_provider import save_candle_csv

ROOT = Path(__file__).resolve().parents[1]
OFF = {"OPENAI_API_KEY": "", "SENTRY_DSN": "", "TELEGRAM_BOT_TOKEN": ""}


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **OFF, "PYTHONPATH": str(ROOT)},
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_backtest_does_not_import_the_model_client() -> None:
    modules = _modules_after("import backtest")
    assert "openai" not in modules
    assert "src.backtesting.ai_strategy" not in modules


def test_a_rule_backtest_run_never_imports_the_model_client(tmp_path: Path) -> None:
    csv = tmp_path / "KRW-BTC_1h.csv"
    _candles(csv)
    out = tmp_path / "out.json"
    code = (
        "import backtest\n"
        f"assert backtest.main(['--strategy', 'volatility_breakout', '--data', {str(csv)!r}, '--json', "
        f"{str(out)!r}, '--no-quick-filter', '--trades', '0']) == 0"
    )
    modules = _modules_after(code)
    assert "openai" not in modules
    assert "src.ai.service" not in modules
    assert json.loads(out.read_text())["strategy"] == "volatility_breakout"


def test_the_scheduler_and_the_api_entry_points_load_no_model_client_or_sentry_when_off() -> None:
    modules = _modules_after("import backend.app.core.entrypoints")
    assert "openai" not in modules
    assert "sentry_sdk" not in modules


def _candles(path: Path, bars: int = 400) -> None:
    rng = np.random.default_rng(1)
    close = 50_000_000 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    index = pd.date_range("2024-01-01", periods=bars, freq="h", tz="UTC", name="timestamp")
    frame = pd.DataFrame(
        {"open": open_, "high": np.maximum(open_, close) * 1.002, "low": np.minimum(open_, close) * 0.998,
         "close": close, "volume": rng.uniform(1, 5, bars), "value": close},
        index=index,
    )  # fmt: skip
    save_candle_csv(frame, path)
