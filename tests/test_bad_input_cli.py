"""Bad input on the command line gets one clear line and a non-zero exit, never a traceback.

Every case runs the real entry point (``main.py``, ``scheduler_main.py``, ``backtest.py``, the API's start-up) as
a subprocess, the way a user starts it. A ``.env`` other than the project's is given by pointing
``src.config.env._env_file`` at it before the entry point's ``main`` runs (the project's own ``.env`` is left
alone).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from src.config.settings import GROUPS, load_settings
from src.config.unknown_keys import known_keys, unknown_key_warnings
from src.exceptions import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment (PATH and HOME only), a throwaway SQLite database, no metrics port."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "SCHEDULER_METRICS_PORT": "0",
        **extra,
    }


def _patched_env_file(env_file: Path) -> str:
    return f"import src.config.env as e; from pathlib import Path; e._env_file = lambda: Path({str(env_file)!r}); "


def _run(args: list[str], env: dict[str, str], env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python <script> args`` from the project root; with ``env_file``, that file plays the project's .env."""
    script, *rest = args
    if env_file is None:
        command = [sys.executable, script, *rest]
    else:
        module = script.removesuffix(".py")
        code = _patched_env_file(env_file) + f"import sys, {module}; sys.exit({module}.main({rest!r}))"
        command = [sys.executable, "-c", code]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def _assert_one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    (line,) = lines
    assert line.startswith(("error: ", "backtest.py: error: ", "scheduler_main.py: error: ", "main.py: error: "))
    for text in expected:
        assert text in line, line
    return line


# --- the database cannot be reached at start-up ----------------------------------------------------------
@pytest.mark.parametrize("script", ["main.py", "scheduler_main.py"])
def test_database_down_at_start_up_is_one_line(tmp_path: Path, script: str) -> None:
    url = f"postgresql+asyncpg://postgres:hunter22@127.0.0.1:{_closed_port()}/trading"
    done = _run([script], _env(tmp_path, DATABASE_URL=url))
    line = _assert_one_line_error(done, "cannot be reached", "Check DATABASE_URL")
    assert done.returncode == 1
    assert "hunter22" not in line  # the URL is shown with its password hidden


def test_api_with_its_database_down_is_one_line_before_uvicorn_starts(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/trading"
    env = _env(tmp_path, DATABASE_URL=url, API_KEY="k" * 40, API_PORT=str(_closed_port()))
    command = [sys.executable, "-m", "backend.app.main"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    _assert_one_line_error(done, "cannot be reached")
    assert done.returncode == 1


@pytest.mark.parametrize("url", ["garbage", "mysql://user@127.0.0.1/trading"])
def test_replay_with_a_database_url_we_cannot_use_is_a_usage_error(tmp_path: Path, url: str) -> None:
    done = _run(["scheduler_main.py", "--replay", "--database-url", url], _env(tmp_path))
    _assert_one_line_error(done, "--database-url", "sqlite+aiosqlite:///", "postgresql+asyncpg://")
    assert done.returncode == 2


def test_replay_with_its_database_down_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/replay"
    done = _run(["scheduler_main.py", "--replay", "--database-url", url], _env(tmp_path))
    _assert_one_line_error(done, "cannot be reached")


# --- backtest.py arguments --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["--start", "yesterday"],
        ["--end", "2023-13-45"],
        ["--start", "2023-02-30"],
        ["--capital", "nan"],
        ["--capital", "inf"],
        ["--k", "inf"],
        ["--k", "nan"],
        ["--atr-stop", "nan"],
        ["--atr-stop=-inf"],
        ["--atr-target", "inf"],
        ["--volume-multiplier", "nan"],
        ["--fee", "nan"],
        ["--slippage", "inf"],
        ["--position-fraction", "nan"],
        ["--min-confidence", "nan"],
        ["--min-confidence", "inf"],
    ],
)
def test_backtest_refuses_bad_arguments_in_one_line(tmp_path: Path, args: list[str]) -> None:
    done = _run(["backtest.py", *args], _env(tmp_path))
    _assert_one_line_error(done, "backtest.py: error: argument " + args[0].split("=")[0])
    assert done.returncode == 2


@pytest.mark.parametrize("option", ["--html", "--json"])
def test_backtest_report_path_that_is_a_directory_is_refused_before_the_run(tmp_path: Path, option: str) -> None:
    done = _run(["backtest.py", option, str(tmp_path)], _env(tmp_path))
    _assert_one_line_error(done, f"argument {option}", "is a directory")
    assert done.returncode == 2


def test_backtest_report_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = _run(["backtest.py", "--end", "2017-10-10", "--json", str(blocker / "out.json")], _env(tmp_path))
    _assert_one_line_error(done, "backtest.py: error: ", str(blocker))
    assert done.returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--start", "yesterday"],
        ["--start", "0001-01-01T00:00:00+05:00"],  # no UTC form at all
        ["--end", "0001-01-05"],  # 30 days before it is before year 1
        ["--end", "9999-12-31T23:59:59-05:00"],
    ],
)
def test_replay_times_that_cannot_be_replayed_are_one_line(tmp_path: Path, args: list[str]) -> None:
    done = _run(["scheduler_main.py", "--replay", *args], _env(tmp_path))
    _assert_one_line_error(done, f"error: {args[0]} {args[1]!r}: expected")
    assert done.returncode == 2


@pytest.mark.parametrize("speed", ["nan", "inf", "-1"])
def test_replay_speed_must_be_finite(tmp_path: Path, speed: str) -> None:
    done = _run(["scheduler_main.py", "--replay", f"--speed={speed}"], _env(tmp_path))
    _assert_one_line_error(done, "scheduler_main.py: error: argument --speed")


# --- settings: a .env that is not UTF-8, numbers that are not finite ---------------------------------------
@pytest.mark.parametrize("script", ["main.py", "scheduler_main.py", "backtest.py"])
def test_env_file_with_a_byte_that_is_not_utf8_is_one_line(tmp_path: Path, script: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"MAX_POSITIONS=3\nTELEGRAM_BOT_TOKEN=caf\xe9\n")
    done = _run([script], _env(tmp_path), env_file=env_file)
    _assert_one_line_error(done, str(env_file), "not UTF-8", "0xe9")


def _numeric_keys() -> list[str]:
    keys = []
    for group in GROUPS.values():
        for field in group.model_fields.values():
            if field.annotation in (int, float) or "Decimal" in str(field.annotation):
                alias = field.validation_alias
                keys.append(alias if isinstance(alias, str) else alias.choices[0])  # type: ignore[union-attr]
    return sorted(keys)


NUMERIC_KEYS = _numeric_keys()


def test_every_numeric_setting_is_found() -> None:
    assert {"DAILY_LOSS_LIMIT_PCT", "UPBIT_TIMEOUT_SECONDS", "SENTRY_TRACES_SAMPLE_RATE", "MAX_POSITIONS"} <= set(
        NUMERIC_KEYS
    )


@pytest.mark.parametrize("key", NUMERIC_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_every_numeric_setting_refuses_values_that_are_not_finite(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env_file=None)
    assert f"{key}={value!r}" in caught.value.message


@pytest.mark.parametrize(
    ("script", "key", "value"),
    [
        ("main.py", "DAILY_LOSS_LIMIT_PCT", "nan"),
        ("scheduler_main.py", "SCHEDULER_CONTROL_POLL_SECONDS", "inf"),
        ("main.py", "UPBIT_TIMEOUT_SECONDS", "-inf"),
        ("backtest.py", "BACKTEST_SLIPPAGE_PCT", "inf"),
    ],
)
def test_a_setting_that_is_not_finite_stops_the_entry_point_in_one_line(
    tmp_path: Path, script: str, key: str, value: str
) -> None:
    done = _run([script], _env(tmp_path, **{key: value}))
    _assert_one_line_error(done, f"{key}={value!r}", "finite number")


@pytest.mark.parametrize(
    ("script", "key", "why"),
    [
        ("backtest.py", "BACKTEST_INITIAL_CAPITAL", "backtests start from PAPER_STARTING_KRW, the bot's own capital"),
        ("scheduler_main.py", "RISK_ALLOW_ADD_TO_POSITION", "the strategy buys only when flat (one position per coin)"),
        ("main.py", "RISK_MIN_ADD_KRW", "the strategy buys only when flat (one position per coin)"),
    ],
)
def test_a_removed_setting_stops_the_entry_point_in_one_line_saying_why(
    tmp_path: Path, script: str, key: str, why: str
) -> None:
    # Given an environment an older version was run with, still setting a key nothing reads any more
    # When the entry point starts / Then it stops with one line naming the key, why it went and what to do
    line = _assert_one_line_error(_run([script], _env(tmp_path, **{key: "1"})), f"{key} was removed: {why}")
    assert ("backtest.py --capital" in line) is (key == "BACKTEST_INITIAL_CAPITAL")


# --- a key that looks like ours but is unknown -------------------------------------------------------------
def test_a_typo_of_a_setting_is_named_with_the_closest_known_key() -> None:
    environ = {
        "DAILYLOSS_LIMIT_PCT": "3",
        "RISK_DAILY_LOS_LIMIT_PCT": "2",
        "TRADING_SYMBOL": "KRW-ETH",
        "MAX_POSITION": "1",
        "STOPLOSS_PCT": "3",
    }
    assert unknown_key_warnings(None, environ) == [
        "DAILYLOSS_LIMIT_PCT in the environment is not a setting and is ignored; did you mean DAILY_LOSS_LIMIT_PCT?",
        "MAX_POSITION in the environment is not a setting and is ignored; did you mean MAX_POSITIONS?",
        "RISK_DAILY_LOS_LIMIT_PCT in the environment is not a setting and is ignored; did you mean "
        "DAILY_LOSS_LIMIT_PCT?",
        "STOPLOSS_PCT in the environment is not a setting and is ignored; STOP_LOSS_PCT was removed: exits belong to "
        "the strategy; set stop_loss_pct in STRATEGY_PARAMS",
        "TRADING_SYMBOL in the environment is not a setting and is ignored; did you mean TRADING_SYMBOLS?",
    ]


def test_keys_that_are_not_ours_are_left_alone() -> None:
    unrelated = [
        "PATH", "HOME", "PYTHONPATH", "CI", "USER", "SHELL", "LANG", "TERM", "TZ", "VIRTUAL_ENV", "GITHUB_ACTIONS",
        "HTTP_PROXY", "NO_COLOR", "APP_HOME", "SENTRY_ENVIRONMENT", "POSTGRES_PASSWORD", "API_HOST_PORT",
        "TEST_DATABASE_URL", "REQUIRE_POSTGRES", "OPENAI_ORG_ID",
    ]  # fmt: skip
    environ = dict.fromkeys([*unrelated, *known_keys()], "1")
    assert unknown_key_warnings(None, environ) == []


def test_an_unknown_key_with_our_prefix_is_warned_even_without_a_close_match() -> None:
    (warning,) = unknown_key_warnings(None, {"UPBIT_SOMETHING_ELSE_ENTIRELY_XYZ": "1"})
    assert warning.startswith("UPBIT_SOMETHING_ELSE_ENTIRELY_XYZ in the environment is not a setting")


def test_env_file_typos_are_named_with_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MAX_POSITIONS=2\ndaily_los_limit_pct=3\n")
    assert unknown_key_warnings(env_file, {}) == [
        f"daily_los_limit_pct in {env_file} is not a setting and is ignored; did you mean DAILY_LOSS_LIMIT_PCT?"
    ]


API_START = "from backend.app.main import _app_from_environment; _app_from_environment()"


@pytest.mark.parametrize("script", ["main.py", "scheduler_main.py", "backtest.py", "api"])
def test_every_entry_point_warns_once_about_a_typo_in_env_file_and_environment(tmp_path: Path, script: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RISK_DAILY_LOS_LIMIT_PCT=2\n")
    # the database is down so main.py and the scheduler stop right after start-up; backtest.py stops on --end
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/trading"
    env = _env(tmp_path, DAILYLOSS_LIMIT_PCT="3", DATABASE_URL=url)
    if script == "api":
        command = [sys.executable, "-c", _patched_env_file(env_file) + API_START]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    else:
        done = _run([script, "--end", "2017-10-04"] if script == "backtest.py" else [script], env, env_file)
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: DAILYLOSS_LIMIT_PCT in the environment is not a setting and is ignored; did you mean "
        "DAILY_LOSS_LIMIT_PCT?",
        f"warning: RISK_DAILY_LOS_LIMIT_PCT in {env_file} is not a setting and is ignored; did you mean "
        "DAILY_LOSS_LIMIT_PCT?",
    ], done.stderr
    assert "Traceback" not in done.stderr
