"""User strategies from ``STRATEGY_PATH`` (``src.strategy.registry``): the worked example in ``strategies/`` loads,
validates its parameters and runs in a backtest and in replay; a broken user file is one ConfigurationError naming
the file and the line, at start-up, and the command lines print it on one line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import backtest
from backend.app.db.migrations import upgrade_to_head
from src.backtesting.data_provider import load_candle_csv
from src.config.settings import load_settings
from src.exceptions import ConfigurationError
from src.strategy.registry import available, build_strategy, strategy_from_settings, user_strategies

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "strategies"
BTC_HOURLY = ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv"

HEADER = """\
from src.strategy import EXIT_PARAMS, Param, ParameterSpace, Strategy, require_ohlc
"""

GOOD = (
    HEADER
    + """
class Good(Strategy):
    name = "{name}"
    space = ParameterSpace((Param("n", int, 5, 1, 50),)) + EXIT_PARAMS.with_defaults(stop_loss_pct=2.0)

    def generate_signals(self, df):
        _, _, _, close = require_ohlc(df)
        return self.signals(df, close > close.mean() * 0 + 1)
"""
)


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def load_error(folder: Path) -> str:
    with pytest.raises(ConfigurationError) as caught:
        user_strategies(folder)
    return caught.value.message


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UPBIT_", "TRADING_", "STRATEGY_"))}
    env.update(TRADING_MODE="paper", SCHEDULER_METRICS_PORT="0", PYTHONPATH=str(ROOT), **extra)
    return env


# --- the worked example -----------------------------------------------------------------------------------------
def test_the_example_loads_next_to_the_bundled_strategies() -> None:
    strategies = available(EXAMPLES)

    assert {"rule_breakout", "volatility_breakout", "sma_crossover"} <= set(strategies)
    example = build_strategy("sma_crossover", {}, EXAMPLES)
    assert example.parameters()["fast"] == 10
    assert example.parameters()["slow"] == 30
    assert example.exit_policy.stop_loss_pct == 3.0
    assert example.exit_policy.max_hold_hours == 72.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fast": 50, "slow": 20}, r"fast \(50\) must be less than slow \(20\)"),
        ({"fast": 1}, "parameter fast must be in 2..200"),
        ({"slow": 12.5}, "parameter slow must be a whole number"),
        ({"speed": 3}, "strategy sma_crossover has no parameter speed"),
        ({"stop_loss_pct": 80}, "parameter stop_loss_pct must be in 0..50"),
    ],
)
def test_the_example_validates_its_parameters(params: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_strategy("sma_crossover", params, EXAMPLES)


def test_the_example_is_chosen_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_STRATEGY", "sma_crossover")
    monkeypatch.setenv("STRATEGY_PARAMS", '{"fast": 5, "slow": 20, "trailing_stop_pct": 2}')

    strategy = strategy_from_settings(load_settings(env_file=None))

    assert strategy.name == "sma_crossover"
    assert strategy.parameters()["fast"] == 5
    assert strategy.exit_policy.trailing_stop_pct == 2.0


def test_the_example_buys_on_a_cross_above_and_sells_on_a_cross_below() -> None:
    candles = load_candle_csv(BTC_HOURLY).loc["2023-09-01":"2023-10-01"]
    strategy = build_strategy("sma_crossover", {"fast": 5, "slow": 20}, EXAMPLES)

    signals = strategy.generate_signals(candles)

    fast, slow = signals.details["sma_fast"], signals.details["sma_slow"]
    above = fast > slow
    crossed_up = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    crossed_down = np.flatnonzero(~above[1:] & above[:-1]) + 1
    assert len(crossed_up) > 3
    assert np.array_equal(np.flatnonzero(signals.entry), crossed_up[crossed_up >= 20])
    assert np.array_equal(np.flatnonzero(signals.exit), crossed_down[crossed_down >= 20])


@pytest.mark.integration
def test_the_example_runs_in_a_backtest_through_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "sma.json"
    done = subprocess.run(
        [sys.executable, "backtest.py", "--strategy", "sma_crossover", "--start", "2023-11-12", "--end",
         "2023-11-26", "--json", str(out), "--trades", "0"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "Backtest: sma_crossover" in done.stdout
    report = json.loads(out.read_text())
    assert report["strategy"] == "sma_crossover"
    assert report["parameters"]["fast"] == 10
    assert len(report["trades"]) >= 3
    assert {trade["exit_reason"] for trade in report["trades"]} <= {"signal", "stop_loss", "time_out", "end"}


@pytest.mark.integration
def test_the_example_trades_in_replay(tmp_path: Path) -> None:
    """Given TRADING_STRATEGY=sma_crossover, when scheduler_main.py replays two weeks (in which the quick filter
    passes its entries), then the bot's buys are at the example's entry signals (fill moment = the close of the
    signal bar)."""
    database = tmp_path / "replay.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{database}")
    done = subprocess.run(
        [sys.executable, "scheduler_main.py", "--replay", "--symbols", "KRW-BTC", "--start", "2023-11-12",
         "--end", "2023-11-26", "--database-url", f"sqlite+aiosqlite:///{database}"],
        cwd=ROOT, env=clean_env(TRADING_STRATEGY="sma_crossover", DATABASE_URL=f"sqlite+aiosqlite:///{database}"),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    with sqlite3.connect(database) as connection:
        entries = [row[0] for row in connection.execute("SELECT entry_at FROM positions ORDER BY entry_at")]
    candles = load_candle_csv(BTC_HOURLY).loc[:"2023-11-26"]
    signals = build_strategy("sma_crossover", {}, EXAMPLES).generate_signals(candles)
    bought_at = signals.index[signals.entry] + pd.Timedelta(hours=1)  # the close of the signal bar
    signal_moments = {moment.strftime("%Y-%m-%d %H:%M") for moment in bought_at}
    assert entries, done.stdout
    assert {entry[:16].replace("T", " ") for entry in entries} <= signal_moments


# --- broken user files: one error naming the file and the line ------------------------------------------------
def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", HEADER + "\nclass Broken(Strategy:\n    pass\n")

    assert load_error(tmp_path).startswith(f"strategy file {path}:3: SyntaxError")


def test_a_syntax_error_in_a_helper_names_the_import_and_the_helper(tmp_path: Path) -> None:
    helper = write(tmp_path, "_levels.py", "def above(close):\n    return close >\n")
    path = write(tmp_path, "uses.py", "import os\nfrom _levels import above\n")

    assert load_error(tmp_path) == f"strategy file {path}:2: SyntaxError: invalid syntax (in {helper}:2)"


def test_an_import_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "needs.py", "import os\nimport talib_that_is_not_installed\n")

    message = load_error(tmp_path)

    assert message.startswith(f"strategy file {path}:2: ModuleNotFoundError")
    assert "talib_that_is_not_installed" in message


@pytest.mark.parametrize(
    ("source", "line", "text"),
    [
        ("x = 1\ny = 2\nraise RuntimeError('no config')\n", 3, "RuntimeError: no config"),
        ("import sys\nsys.exit(3)\n", 2, "SystemExit: 3"),
        (HEADER + "SPACE = EXIT_PARAMS.with_defaults(stop_pct=1)\n", 2, "no parameter stop_pct to give a default"),
    ],
)
def test_an_exception_at_import_names_the_file_and_line(tmp_path: Path, source: str, line: int, text: str) -> None:
    path = write(tmp_path, "raises.py", source)

    message = load_error(tmp_path)

    assert message.startswith(f"strategy file {path}:{line}: ")
    assert text in message


def test_two_strategies_with_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a_first.py", GOOD.format(name="mine"))
    second = write(tmp_path, "b_second.py", GOOD.format(name="mine"))

    message = load_error(tmp_path)

    assert message.startswith(f"strategy file {second}:3: a strategy named 'mine' already exists")
    assert f"{first}:3" in message


@pytest.mark.parametrize("name", ["rule_breakout", "volatility_breakout", "ai"])
def test_a_name_of_a_bundled_strategy_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "clash.py", GOOD.format(name=name))

    assert load_error(tmp_path) == (
        f"strategy file {path}:3: class Good needs its own name (name = {name!r} is taken by a bundled strategy)"
    )


def test_a_strategy_without_its_own_name_or_with_a_bad_one_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "unnamed", "unnamed.py", GOOD.replace('    name = "{name}"\n', ""))
    write(tmp_path / "upper", "upper.py", GOOD.format(name="My-Strategy"))

    assert "needs its own name (name = 'strategy' is the default)" in load_error(tmp_path / "unnamed")
    assert "name 'My-Strategy' must be lower case letters" in load_error(tmp_path / "upper")


@pytest.mark.parametrize(
    ("space", "text"),
    [
        ('ParameterSpace((Param("n", int, 500, 1, 50),)) + EXIT_PARAMS', "bad declared default: strategy mine: "
         "parameter n must be in 1..50, got 500"),
        ('ParameterSpace((Param("mode", str, "fast", choices=("slow",)),)) + EXIT_PARAMS', "parameter mode must be "
         "one of slow"),
        ('ParameterSpace((Param("n", int, 5, 1, 50),))', "lacks the exit parameters stop_loss_pct"),
        ("{'n': 5}", "space must be a ParameterSpace, got dict"),
    ],
)  # fmt: skip
def test_bad_declared_defaults_are_refused(tmp_path: Path, space: str, text: str) -> None:
    path = write(tmp_path, "defaults.py", GOOD.format(name="mine").replace(GOOD_SPACE, space))

    message = load_error(tmp_path)

    assert message.startswith(f"strategy file {path}:3: Good")
    assert text in message


GOOD_SPACE = 'ParameterSpace((Param("n", int, 5, 1, 50),)) + EXIT_PARAMS.with_defaults(stop_loss_pct=2.0)'


def test_a_constructor_that_fails_with_the_defaults_is_refused(tmp_path: Path) -> None:
    source = GOOD.format(name="mine") + "\n    def __init__(self, **params):\n        raise ValueError('needs a key')\n"
    path = write(tmp_path, "init.py", source)

    assert load_error(tmp_path) == (f"strategy file {path}:3: Good() with its defaults fails: ValueError: needs a key")


def test_generate_signals_that_raises_names_the_line_of_the_raise(tmp_path: Path) -> None:
    source = HEADER + textwrap.dedent(
        """
        class Fails(Strategy):
            name = "fails"

            def generate_signals(self, df):
                return self.signals(df, df["rsi"] > 70)
        """
    )
    path = write(tmp_path, "fails.py", source)

    message = load_error(tmp_path)

    assert message.startswith(f"strategy file {path}:7: Fails.generate_signals fails on test candles: KeyError")


def test_signals_of_the_wrong_length_or_type_are_refused(tmp_path: Path) -> None:
    short = GOOD.format(name="short").replace("close > close.mean() * 0 + 1", "(close > 1)[:-1]")
    raw = GOOD.format(name="raw").replace("return self.signals(df, close > close.mean() * 0 + 1)", "return close > 1")
    write(tmp_path / "short", "short.py", short)
    write(tmp_path / "raw", "raw.py", raw)

    assert "returned arrays of {'entry': 399, 'exit': 400, 'atr': 400} for 400 candles" in load_error(
        tmp_path / "short"
    )
    assert "must return self.signals(df, entry, exit, details), got ndarray" in load_error(tmp_path / "raw")


def test_a_strategy_that_looks_ahead_is_refused(tmp_path: Path) -> None:
    """Buying when the next close is higher: perfect in a backtest, impossible live."""
    source = HEADER + textwrap.dedent(
        """
        import pandas as pd

        class Peeks(Strategy):
            name = "peeks"

            def generate_signals(self, df):
                return self.signals(df, (df["close"].shift(-1) > df["close"]).to_numpy())
        """
    )
    path = write(tmp_path, "peeks.py", source)

    message = load_error(tmp_path)

    assert message.startswith(f"strategy file {path}:5: Peeks looks ahead: its entry signal for bar ")
    assert "changes when later candles are added" in message


def test_helper_files_starting_with_an_underscore_are_not_strategies_but_can_be_imported(tmp_path: Path) -> None:
    write(tmp_path / "unused", "_broken.py", "raise RuntimeError('not loaded')\n")
    write(tmp_path / "unused", "good.py", GOOD.format(name="mine"))
    write(tmp_path / "helped", "_levels.py", "def above(close):\n    return close > 1\n")
    write(tmp_path / "helped", "helped.py", "from _levels import above\n" + GOOD.format(name="helped").replace(
        "close > close.mean() * 0 + 1", "above(close)"
    ))  # fmt: skip

    assert list(user_strategies(tmp_path / "unused")) == ["mine"]
    assert list(user_strategies(tmp_path / "helped")) == ["helped"]
    assert user_strategies(tmp_path / "missing") == {}


@pytest.mark.integration
def test_a_broken_strategy_stops_the_backtest_at_start_up_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", HEADER + "\nclass Broken(Strategy:\n    pass\n")

    done = subprocess.run(
        [sys.executable, "backtest.py", "--strategy", "broken"],
        cwd=ROOT, env=clean_env(STRATEGY_PATH=str(tmp_path)), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert done.stderr.strip() == f"backtest.py: error: strategy file {path}:3: SyntaxError: invalid syntax"
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.integration
def test_a_broken_strategy_stops_the_replay_at_start_up_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "strategies"
    path = write(folder, "broken.py", "import talib_that_is_not_installed\n")
    upgrade_to_head(f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}")

    done = subprocess.run(
        [sys.executable, "scheduler_main.py", "--replay", "--start", "2023-09-01", "--end", "2023-09-02",
         "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"],
        cwd=ROOT, env=clean_env(STRATEGY_PATH=str(folder), TRADING_STRATEGY="rule_breakout"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode != 0
    assert f"strategy file {path}:1: ModuleNotFoundError" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_the_template_in_the_readme_loads_and_trades(tmp_path: Path) -> None:
    """The code block of strategies/README.md, copied into a file as a user would, is a working strategy."""
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    template = readme.split("```python\n", 1)[1].split("```", 1)[0]
    write(tmp_path, "my_strategy.py", template)

    strategy = build_strategy("my_strategy", {"lookback": 30}, tmp_path)

    candles = load_candle_csv(BTC_HOURLY).loc["2023-09-01":"2023-10-01"]
    assert strategy.generate_signals(candles).entry.sum() > 0
    assert strategy.exit_policy.take_profit_pct == 6.0


def test_an_unknown_strategy_name_lists_the_bundled_and_user_strategies(capsys: pytest.CaptureFixture[str]) -> None:
    """``--strategy`` accepts user strategies, so a name is checked against the registry: one line, exit 1."""
    assert backtest.main(["--strategy", "magic", "--start", "2023-09-01", "--end", "2023-09-02"]) == 1

    err = capsys.readouterr().err.strip()
    assert err == (
        "backtest.py: error: unknown strategy 'magic'; available: rule_breakout, volatility_breakout, sma_crossover, ai"
    )
