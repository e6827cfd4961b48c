"""Settings: defaults are safe, bad values name their key, secrets stay secret."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from src.config.env import PROJECT_ROOT
from src.config.runtime import runtime_default, validate_runtime_value
from src.config.settings import load_settings
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError, InvalidInput


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("TRADING_MODE", "UPBIT_ACCESS_KEY", "UPBIT_SECRET_KEY", "DATABASE_URL", "MAX_POSITIONS"):
        monkeypatch.delenv(key, raising=False)


def test_defaults_are_paper_mode_on_embedded_sqlite() -> None:
    # Given no configuration at all / When settings load
    settings = load_settings(env_file=None)
    # Then the bot paper-trades KRW-BTC on a SQLite file under data/
    assert settings.trading.mode is TradingMode.PAPER
    assert settings.database.url == f"sqlite+aiosqlite:///{PROJECT_ROOT / 'data' / 'trading.db'}"
    assert settings.trading.fee_rate == Decimal("0.0005")
    assert settings.trading.symbols == ["KRW-BTC"]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "metrics.internal.example"])
def test_scheduler_metrics_host_takes_an_ip_or_host_name(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("SCHEDULER_METRICS_HOST", host)
    assert load_settings(env_file=None).scheduler.metrics_host == host


def test_scheduler_metrics_listen_on_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_METRICS_HOST", raising=False)
    assert load_settings(env_file=None).scheduler.metrics_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("MAX_POSITIONS", "abc", "MAX_POSITIONS='abc': Input should be a valid integer"),
        ("TRADING_FEE_RATE", "-0.1", "TRADING_FEE_RATE='-0.1': Input should be greater than or equal to 0"),
        ("TRADING_MODE", "yolo", "TRADING_MODE='yolo': Input should be 'paper', 'live' or 'replay'"),
        ("TRADING_SYMBOLS", "BTC-KRW", "expected Upbit KRW markets like KRW-BTC"),
        ("TRADING_SYMBOLS", "KRW-\u0392\u03a4C", "expected Upbit KRW markets like KRW-BTC"),
        ("TAKE_PROFIT_PCT", "10", "TAKE_PROFIT_PCT was removed: exits belong to the strategy; set take_profit_pct in"),
        ("STRATEGY_PARAMS", '{"K": 1}', "expected parameter names in lower case letters, digits and _, got 'K'"),
        ("STRATEGY_PARAMS", "[1]", "STRATEGY_PARAMS must be a JSON object"),
        (
            "STRATEGY_PARAMS",
            '{"k": [1]}',
            "STRATEGY_PARAMS: parameter k: expected a number, true/false or text, got [1]",
        ),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL='mysql://x': expected sqlite+aiosqlite"),
        ("SCHEDULER_TRADING_CRON", "hourly", "expected a 5-field cron expression"),
        ("API_CORS_ORIGINS", "*", "'*' is not allowed"),
        ("API_RATE_LIMIT_REDIS_URL", "127.0.0.1:6379", "expected a redis://, rediss:// or unix:// URL"),
        ("API_RATE_LIMIT_REDIS_URL", "redis://redis:63a9/0", "expected a redis://, rediss:// or unix:// URL"),
        ("RISK_MIN_ADD_KRW", "NaN", "RISK_MIN_ADD_KRW was removed: the strategy buys only when flat"),
        ("RISK_ALLOW_ADD_TO_POSITION", "maybe", "RISK_ALLOW_ADD_TO_POSITION was removed: the strategy buys only"),
        ("BACKTEST_INITIAL_CAPITAL", "inf", "BACKTEST_INITIAL_CAPITAL was removed: backtests start from"),
        ("SCHEDULER_METRICS_HOST", "0.0.0.0:9101", "expected an IP address or a host name"),
        ("SCHEDULER_METRICS_HOST", "http://metrics", "expected an IP address or a host name"),
        ("SCHEDULER_METRICS_HOST", "-bad-.example", "expected an IP address or a host name"),
    ],
)
def test_invalid_value_names_key_and_expected_form(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, expected: str
) -> None:
    # Given one bad value
    monkeypatch.setenv(key, value)
    # When settings load / Then one error names the key and what was expected
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env_file=None)
    assert expected in str(caught.value)
    assert str(caught.value).startswith("Invalid configuration: ")


def test_an_invalid_url_with_credentials_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Redis URL with a password but the wrong scheme
    monkeypatch.setenv("API_RATE_LIMIT_REDIS_URL", "http://:hunter22@redis:6379/0")
    # When settings load / Then the error names the key and the expected form, never the password
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env_file=None)
    assert "API_RATE_LIMIT_REDIS_URL: expected a redis://" in str(caught.value)
    assert "hunter22" not in str(caught.value)


def test_live_mode_without_upbit_keys_loads_but_refuses_to_trade(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given live mode without keys: settings load (the API never trades and needs no keys)
    monkeypatch.setenv("TRADING_MODE", "live")
    settings = load_settings(env_file=None)
    # When what trades asks for the keys, Then it is refused, in live mode only
    with pytest.raises(ConfigurationError, match="TRADING_MODE=live requires UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY"):
        settings.require_live_keys()
    settings.require_live_keys(TradingMode.PAPER)


def test_live_mode_starts_with_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_MODE", "live")
    monkeypatch.setenv("UPBIT_ACCESS_KEY", "access-abc")
    monkeypatch.setenv("UPBIT_SECRET_KEY", "secret-xyz")
    settings = load_settings(env_file=None)
    assert settings.trading.mode is TradingMode.LIVE
    assert "secret-xyz" not in repr(settings)
    assert "secret-xyz" in settings.secret_values()


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("DATABASE_URL", "postgresql+asyncpg://trader:hunter22@db:5432/trader"),
        ("API_RATE_LIMIT_REDIS_URL", "redis://:hunter22@redis:6379/0"),
    ],
)
def test_secret_values_include_passwords_inside_urls(monkeypatch: pytest.MonkeyPatch, key: str, url: str) -> None:
    monkeypatch.setenv(key, url)
    assert "hunter22" in load_settings(env_file=None).secret_values()


def test_secret_values_register_every_secret_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from src.config.settings import GROUPS

    # Given a distinct value for every setting that holds a secret (every SecretStr field, and the database URL)
    secret_fields = {
        field.validation_alias: f"secret-value-{index:04d}"
        for group in GROUPS.values()
        for index, field in enumerate(group.model_fields.values())
        if "SecretStr" in str(field.annotation)
    }
    secret_fields["API_RATE_LIMIT_REDIS_URL"] = "redis://:redis-pw-0001@redis:6379/0"
    assert {"UPBIT_ACCESS_KEY", "UPBIT_SECRET_KEY", "OPENAI_API_KEY", "TELEGRAM_BOT_TOKEN", "API_KEY"} <= set(
        secret_fields
    )
    assert {"API_JWT_SECRET", "API_ADMIN_PASSWORD_HASH", "API_RATE_LIMIT_REDIS_URL", "SENTRY_DSN"} <= set(secret_fields)
    for name, value in secret_fields.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://trader:db-pw-0001@db:5432/trader")
    # When the redactor's list is built, Then each value is on it, and so are the passwords inside the URLs
    registered = load_settings(env_file=None).secret_values()
    for name, value in secret_fields.items():
        assert value in registered, name
    assert "db-pw-0001" in registered
    assert "redis-pw-0001" in registered


def test_secret_values_include_credentials_in_any_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a base URL with credentials (a proxy in front of OpenAI) and an encoded database password
    monkeypatch.setenv("OPENAI_BASE_URL", "https://bot:proxy-pw-77@llm.example/v1")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://trader:p%40ss-99@db:5432/trader")
    # When the redactor's list is built, Then both passwords are on it, as written and decoded
    registered = load_settings(env_file=None).secret_values()
    assert {"proxy-pw-77", "p%40ss-99", "p@ss-99"} <= set(registered)


def test_env_file_values_are_read_and_empty_values_mean_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TRADING_SYMBOLS=KRW-BTC, KRW-ETH\nDATABASE_URL=\nMAX_POSITIONS=2\n")
    settings = load_settings(env_file=env_file)
    assert settings.trading.symbols == ["KRW-BTC", "KRW-ETH"]
    assert settings.risk.max_positions == 2
    assert settings.database.is_sqlite


def test_env_example_lists_every_setting() -> None:
    from src.config.settings import GROUPS

    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (PROJECT_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("# ")
    }
    for group in GROUPS.values():
        for field in group.model_fields.values():
            alias = field.validation_alias
            names = [alias] if isinstance(alias, str) else list(alias.choices)  # type: ignore[union-attr]
            assert names[0] in documented, f"{names[0]} is missing from .env.example"


def test_bad_configuration_exits_with_one_line_and_no_traceback() -> None:
    # Given a bad value in the environment of a process that starts up
    env = {"PATH": "/usr/bin:/bin", "MAX_POSITIONS": "abc", "HOME": str(PROJECT_ROOT)}
    code = "from src.config.bootstrap import load_settings_or_exit; load_settings_or_exit()"
    # When it starts
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    # Then it exits 2 with a single line that names the key
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Invalid configuration: MAX_POSITIONS='abc': Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


# --- one rule per key: the environment and the run-time API agree ------------------------------------
_SAME_RULE_CASES = [
    ("trading.symbols", "TRADING_SYMBOLS", ["KRW-ETH", "KRW-1INCH"], "KRW-ETH,KRW-1INCH"),
    ("trading.symbols", "TRADING_SYMBOLS", ["KRW-\u0392\u03a4C"], "KRW-\u0392\u03a4C"),  # Greek capitals
    ("trading.symbols", "TRADING_SYMBOLS", ["KRW-" + "A" * 200], "KRW-" + "A" * 200),
    ("trading.symbols", "TRADING_SYMBOLS", ["KRW-btc"], "KRW-btc"),
    ("trading.symbols", "TRADING_SYMBOLS", ["KRW-BTC", "KRW-BTC"], "KRW-BTC,KRW-BTC"),
    ("trading.symbols", "TRADING_SYMBOLS", [f"KRW-A{i}" for i in range(31)], ",".join(f"KRW-A{i}" for i in range(31))),
    ("risk.max_positions", "MAX_POSITIONS", 51, "51"),
    ("risk.max_positions", "MAX_POSITIONS", 0, "0"),
    ("risk.max_trades_per_day", "MAX_TRADES_PER_DAY", 10_000, "10000"),
    ("risk.max_trades_per_day", "MAX_TRADES_PER_DAY", 10_001, "10001"),
    ("strategy.name", "TRADING_STRATEGY", "volatility_breakout", "volatility_breakout"),
    ("strategy.name", "TRADING_STRATEGY", "Volatility", "Volatility"),
    ("strategy.params", "STRATEGY_PARAMS", {"k": 0.6, "max_hold_hours": 48}, '{"k": 0.6, "max_hold_hours": 48}'),
    ("strategy.params", "STRATEGY_PARAMS", {"use_volume": True}, '{"use_volume": true}'),
    ("strategy.params", "STRATEGY_PARAMS", {"K": 1}, '{"K": 1}'),
    ("strategy.params", "STRATEGY_PARAMS", {"k": [1]}, '{"k": [1]}'),
    ("risk.max_position_pct", "MAX_POSITION_PCT", "100.01", "100.01"),
    ("ai.min_confidence", "AI_MIN_CONFIDENCE", "NaN", "NaN"),
    ("ai.min_confidence", "AI_MIN_CONFIDENCE", "100", "100"),
]


@pytest.mark.parametrize(("key", "env_name", "api_value", "env_value"), _SAME_RULE_CASES)
def test_a_value_is_valid_from_the_api_exactly_when_it_is_valid_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: str, env_name: str, api_value: object, env_value: str
) -> None:
    """Given the same value as JSON (API) and as text (environment), when each side validates it, then both
    accept it, or both refuse it: one rule per key."""
    monkeypatch.setenv(env_name, env_value)
    try:
        from_env = runtime_default(load_settings(env_file=None), key)
    except ConfigurationError:
        from_env = None
    try:
        from_api = validate_runtime_value(key, api_value)
    except InvalidInput:
        from_api = None
    assert from_env == from_api


def test_the_api_guide_lists_every_run_time_key() -> None:
    """Given the registry of run-time keys, when docs/API.md is read, then its table names each key, so a key the
    scheduler applies is never missing from the operator's guide."""
    from src.config.runtime import RUNTIME_KEYS

    guide = (PROJECT_ROOT / "docs" / "API.md").read_text(encoding="utf-8")

    assert [key for key in RUNTIME_KEYS if f"| `{key}` |" not in guide] == []


# --- removed settings: exits belong to the strategy ------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("STOP_LOSS_PCT", "set stop_loss_pct in STRATEGY_PARAMS"),
        ("TAKE_PROFIT_PCT", "set take_profit_pct in STRATEGY_PARAMS"),
        ("TRAILING_STOP_PCT", "set trailing_stop_pct in STRATEGY_PARAMS"),
        ("USE_ATR_EXITS", "set stop_atr and target_atr in STRATEGY_PARAMS (0 = off)"),
        ("ATR_STOP_MULTIPLIER", "set stop_atr in STRATEGY_PARAMS"),
        ("ATR_TARGET_MULTIPLIER", "set target_atr in STRATEGY_PARAMS"),
    ],
)
def test_a_removed_exit_key_in_the_env_file_is_one_error_naming_the_new_place(
    tmp_path: Path, key: str, instead: str
) -> None:
    # Given a .env written for an older version that sets a removed exit key
    env_file = tmp_path / ".env"
    env_file.write_text(f"TRADING_SYMBOLS=KRW-BTC\n{key}=3\n", encoding="utf-8")
    # When settings load / Then one error names the key and where exits are set now
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env_file=env_file)
    assert caught.value.message == f"Invalid configuration: {key} was removed: exits belong to the strategy; {instead}"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "RISK_ALLOW_ADD_TO_POSITION",
            "RISK_ALLOW_ADD_TO_POSITION was removed: the strategy buys only when flat (one position per coin); "
            "delete the setting",
        ),
        (
            "RISK_MIN_ADD_KRW",
            "RISK_MIN_ADD_KRW was removed: the strategy buys only when flat (one position per coin); delete the "
            "setting",
        ),
        (
            "BACKTEST_INITIAL_CAPITAL",
            "BACKTEST_INITIAL_CAPITAL was removed: backtests start from PAPER_STARTING_KRW, the bot's own capital; "
            "set PAPER_STARTING_KRW or use backtest.py --capital to override",
        ),
    ],
)
def test_a_removed_dead_key_in_the_env_file_is_one_error_naming_why_and_what_to_do(
    tmp_path: Path, key: str, message: str
) -> None:
    # Given a .env written for an older version that still sets a key nothing reads any more
    env_file = tmp_path / ".env"
    env_file.write_text(f"TRADING_SYMBOLS=KRW-BTC\n{key}=true\n", encoding="utf-8")
    # When settings load / Then one error names the key, why it went and what to do
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env_file=env_file)
    assert caught.value.message == f"Invalid configuration: {message}"


def test_a_removed_key_in_the_environment_stops_the_start_in_one_line_without_a_warning() -> None:
    # Given STOP_LOSS_PCT and TAKE_PROFIT_PCT in the environment of a process that starts up
    env = {"PATH": "/usr/bin:/bin", "STOP_LOSS_PCT": "5", "TAKE_PROFIT_PCT": "10", "HOME": str(PROJECT_ROOT)}
    code = "from src.config.bootstrap import load_settings_or_exit; load_settings_or_exit()"
    # When it starts
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    # Then it exits 2 with one line naming both keys and their new place, and no "not a setting" warning
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Invalid configuration: STOP_LOSS_PCT was removed: exits belong to the strategy; set stop_loss_pct "
        "in STRATEGY_PARAMS; TAKE_PROFIT_PCT was removed: exits belong to the strategy; set take_profit_pct in "
        "STRATEGY_PARAMS"
    ]


def test_an_empty_removed_key_is_ignored_like_any_empty_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOP_LOSS_PCT", "")
    assert load_settings(env_file=None).strategy.name == "rule_breakout"


def test_a_typo_of_a_removed_key_is_warned_with_its_new_place() -> None:
    from src.config.unknown_keys import unknown_key_warnings

    [warning] = unknown_key_warnings(env_file=None, environ={"STOP_LOS_PCT": "5"})
    assert warning == (
        "STOP_LOS_PCT in the environment is not a setting and is ignored; STOP_LOSS_PCT was removed: exits belong "
        "to the strategy; set stop_loss_pct in STRATEGY_PARAMS"
    )
