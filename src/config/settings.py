"""The one settings model of the system.

Every process (scheduler, API, ``main.py``, ``backtest.py``) reads its configuration through
``get_settings()``. Values come from the environment and from ``.env`` at the project root;
nothing else in the code base reads ``os.environ``. Each group below is a separate
``BaseSettings`` so the sections stay small, but they are loaded and validated together.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from src.config.rules import (
    CashReservePct,
    ConfidencePct,
    DailyBudgetUsd,
    KrwMarkets,
    LossLimitPct,
    MaxPositionPct,
    MaxPositions,
    MaxTradesPerDay,
    MinAddKrw,
    MonthlyBudgetUsd,
    StopLossPct,
    TakeProfitPct,
    TradeSpacingHours,
    TrailingStopPct,
)
from src.domain.decisions import PositionSizing
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "data" / "trading.db"


def _env_file() -> Path:
    return PROJECT_ROOT / ".env"


def _settings_config() -> SettingsConfigDict:
    return SettingsConfigDict(
        env_file=_env_file(),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
        # Every numeric setting is finite: nan, inf and -inf are refused for float fields here, in one place
        # (Decimal fields refuse them already), whatever bounds a field declares.
        allow_inf_nan=False,
    )


_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _is_ip_or_hostname(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    return 0 < len(host) <= 253 and all(_HOSTNAME_LABEL.match(label) for label in labels)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class _Group(BaseSettings):
    model_config = _settings_config()


class DatabaseConfig(_Group):
    url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}",
        validation_alias="DATABASE_URL",
    )
    pool_size: int = Field(default=5, ge=1, le=100, validation_alias="DB_POOL_SIZE")
    max_overflow: int = Field(default=10, ge=0, le=100, validation_alias="DB_MAX_OVERFLOW")
    echo: bool = Field(default=False, validation_alias="DB_ECHO")

    @field_validator("url")
    @classmethod
    def _supported_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "expected sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://USER@HOST:PORT/DATABASE"
                " (a password goes after USER and a colon)"
            )
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class TradingConfig(_Group):
    mode: TradingMode = Field(default=TradingMode.PAPER, validation_alias="TRADING_MODE")
    symbols: Annotated[KrwMarkets, NoDecode] = Field(default=["KRW-BTC"], validation_alias="TRADING_SYMBOLS")
    fee_rate: Decimal = Field(default=Decimal("0.0005"), ge=0, lt=Decimal("0.01"), validation_alias="TRADING_FEE_RATE")
    min_order_krw: Decimal = Field(default=Decimal("5000"), gt=0, validation_alias="MIN_ORDER_KRW")
    paper_starting_krw: Decimal = Field(default=Decimal("10000000"), gt=0, validation_alias="PAPER_STARTING_KRW")
    candle_interval_minutes: int = Field(default=60, validation_alias="TRADING_CANDLE_INTERVAL_MINUTES")
    order_not_found_grace_seconds: int = Field(
        default=300, ge=0, le=86400, validation_alias="ORDER_NOT_FOUND_GRACE_SECONDS"
    )

    _split_symbols = field_validator("symbols", mode="before")(_split_csv)

    @field_validator("candle_interval_minutes")
    @classmethod
    def _upbit_unit(cls, unit: int) -> int:
        if unit not in (1, 3, 5, 10, 15, 30, 60, 240):
            raise ValueError("expected one of Upbit's minute units 1, 3, 5, 10, 15, 30, 60, 240")
        return unit


class UpbitConfig(_Group):
    access_key: SecretStr | None = Field(default=None, validation_alias="UPBIT_ACCESS_KEY")
    secret_key: SecretStr | None = Field(default=None, validation_alias="UPBIT_SECRET_KEY")
    base_url: str = Field(default="https://api.upbit.com", validation_alias="UPBIT_BASE_URL")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, validation_alias="UPBIT_TIMEOUT_SECONDS")

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key and self.access_key.get_secret_value()) and bool(
            self.secret_key and self.secret_key.get_secret_value()
        )


class MarketDataConfig(_Group):
    fear_greed_url: str = Field(default="https://api.alternative.me/fng/", validation_alias="FEAR_GREED_URL")
    fear_greed_timeout_seconds: float = Field(default=5.0, gt=0, le=60, validation_alias="FEAR_GREED_TIMEOUT_SECONDS")
    backtest_data_dir: Path = Field(default=PROJECT_ROOT / "backtest_data", validation_alias="BACKTEST_DATA_DIR")

    @field_validator("backtest_data_dir")
    @classmethod
    def _relative_to_project(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path


class AIConfig(_Group):
    enabled: bool = Field(default=True, validation_alias="AI_ENABLED")
    api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    base_url: str = Field(default="https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL")
    model: str = Field(default="gpt-4o-mini", min_length=1, validation_alias="OPENAI_MODEL")
    timeout_seconds: float = Field(default=30.0, gt=0, le=300, validation_alias="OPENAI_TIMEOUT_SECONDS")
    max_retries: int = Field(default=2, ge=0, le=10, validation_alias="OPENAI_MAX_RETRIES")
    input_price_per_million: Decimal = Field(
        default=Decimal("0.15"), ge=0, validation_alias="OPENAI_INPUT_PRICE_PER_1M"
    )
    output_price_per_million: Decimal = Field(
        default=Decimal("0.60"), ge=0, validation_alias="OPENAI_OUTPUT_PRICE_PER_1M"
    )
    min_confidence: ConfidencePct = Field(default=Decimal("60"), validation_alias="AI_MIN_CONFIDENCE")
    # USD caps on the model's spend per UTC day / UTC month (decisions and quick-filter calls); 0 = no cap
    daily_budget_usd: DailyBudgetUsd = Field(default=Decimal("1"), validation_alias="AI_DAILY_BUDGET_USD")
    monthly_budget_usd: MonthlyBudgetUsd = Field(default=Decimal("20"), validation_alias="AI_MONTHLY_BUDGET_USD")

    @property
    def has_key(self) -> bool:
        return bool(self.api_key and self.api_key.get_secret_value())


class RiskConfig(_Group):
    stop_loss_pct: StopLossPct = Field(default=Decimal("5"), validation_alias="STOP_LOSS_PCT")
    take_profit_pct: TakeProfitPct = Field(default=Decimal("10"), validation_alias="TAKE_PROFIT_PCT")
    trailing_stop_pct: TrailingStopPct = Field(default=Decimal("0"), validation_alias="TRAILING_STOP_PCT")
    use_atr_exits: bool = Field(default=False, validation_alias="USE_ATR_EXITS")
    atr_stop_multiplier: Decimal = Field(default=Decimal("2"), gt=0, validation_alias="ATR_STOP_MULTIPLIER")
    atr_target_multiplier: Decimal = Field(default=Decimal("3"), gt=0, validation_alias="ATR_TARGET_MULTIPLIER")
    daily_loss_limit_pct: LossLimitPct = Field(default=Decimal("10"), validation_alias="DAILY_LOSS_LIMIT_PCT")
    weekly_loss_limit_pct: LossLimitPct = Field(default=Decimal("15"), validation_alias="WEEKLY_LOSS_LIMIT_PCT")
    min_trade_interval_hours: TradeSpacingHours = Field(
        default=Decimal("4"), validation_alias="MIN_TRADE_INTERVAL_HOURS"
    )
    max_trades_per_day: MaxTradesPerDay = Field(default=5, validation_alias="MAX_TRADES_PER_DAY")
    max_positions: MaxPositions = Field(default=3, validation_alias="MAX_POSITIONS")
    max_position_pct: MaxPositionPct = Field(default=Decimal("40"), validation_alias="MAX_POSITION_PCT")
    cash_reserve_pct: CashReservePct = Field(default=Decimal("10"), validation_alias="CASH_RESERVE_PCT")
    # A buy of a coin already held (open position, unsettled buy or exchange balance) adds to it: off by
    # default; when on, the top-up must be at least RISK_MIN_ADD_KRW (finite, 5,000..1,000,000,000 KRW).
    allow_add_to_position: bool = Field(default=False, validation_alias="RISK_ALLOW_ADD_TO_POSITION")
    min_add_krw: MinAddKrw = Field(default=Decimal("50000"), validation_alias="RISK_MIN_ADD_KRW")
    position_sizing: PositionSizing = Field(default=PositionSizing.FIXED, validation_alias="POSITION_SIZING")
    position_fraction_pct: Decimal = Field(
        default=Decimal("20"), gt=0, le=100, validation_alias="POSITION_FRACTION_PCT"
    )
    kelly_min_pct: Decimal = Field(default=Decimal("5"), gt=0, le=100, validation_alias="KELLY_MIN_PCT")
    kelly_max_pct: Decimal = Field(default=Decimal("30"), gt=0, le=100, validation_alias="KELLY_MAX_PCT")
    kelly_min_trades: int = Field(default=20, ge=1, validation_alias="KELLY_MIN_TRADES")
    validator_max_rsi: Decimal = Field(default=Decimal("70"), gt=0, le=100, validation_alias="VALIDATOR_MAX_RSI")
    validator_max_atr_pct: Decimal = Field(default=Decimal("6"), gt=0, validation_alias="VALIDATOR_MAX_ATR_PCT")
    validator_fakeout_adx: Decimal = Field(
        default=Decimal("20"), ge=0, le=100, validation_alias="VALIDATOR_FAKEOUT_ADX"
    )
    validator_fakeout_volume_ratio: Decimal = Field(
        default=Decimal("1.3"), ge=0, validation_alias="VALIDATOR_FAKEOUT_VOLUME_RATIO"
    )
    flash_crash_pct: Decimal = Field(default=Decimal("5"), gt=0, lt=100, validation_alias="FLASH_CRASH_PCT")
    max_slippage_pct: Decimal = Field(
        default=Decimal("0.5"), gt=0, lt=100, validation_alias="LIQUIDITY_MAX_SLIPPAGE_PCT"
    )

    @model_validator(mode="after")
    def _kelly_bounds(self) -> RiskConfig:
        if self.kelly_min_pct > self.kelly_max_pct:
            raise ValueError("KELLY_MIN_PCT must not exceed KELLY_MAX_PCT")
        return self


class BacktestConfig(_Group):
    initial_capital: Decimal = Field(default=Decimal("10000000"), gt=0, validation_alias="BACKTEST_INITIAL_CAPITAL")
    slippage_pct: Decimal = Field(default=Decimal("0.05"), ge=0, lt=10, validation_alias="BACKTEST_SLIPPAGE_PCT")
    quick_filter_lookback_days: int = Field(default=30, ge=5, le=3650, validation_alias="QUICK_FILTER_LOOKBACK_DAYS")
    quick_filter_tier: Literal["strict", "moderate", "lenient"] = Field(
        default="moderate", validation_alias="QUICK_FILTER_TIER"
    )


class SchedulerConfig(_Group):
    trading_cron: str = Field(default="0 * * * *", validation_alias="SCHEDULER_TRADING_CRON")
    position_check_minutes: int = Field(default=15, ge=1, le=1440, validation_alias="SCHEDULER_POSITION_CHECK_MINUTES")
    snapshot_minutes: int = Field(default=60, ge=1, le=1440, validation_alias="SCHEDULER_SNAPSHOT_MINUTES")
    daily_report_time_kst: str = Field(default="09:00", validation_alias="SCHEDULER_DAILY_REPORT_TIME_KST")
    misfire_grace_seconds: int = Field(default=300, ge=1, validation_alias="SCHEDULER_MISFIRE_GRACE_SECONDS")
    control_poll_seconds: float = Field(default=10.0, gt=0, le=3600, validation_alias="SCHEDULER_CONTROL_POLL_SECONDS")
    instance_name: str = Field(
        default="default", min_length=1, max_length=100, validation_alias="SCHEDULER_INSTANCE_NAME"
    )
    metrics_port: int = Field(default=9101, ge=0, le=65535, validation_alias="SCHEDULER_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", validation_alias="SCHEDULER_METRICS_HOST")
    heartbeat_stale_seconds: int = Field(default=600, ge=10, validation_alias="HEARTBEAT_STALE_SECONDS")

    @field_validator("trading_cron")
    @classmethod
    def _five_field_cron(cls, cron: str) -> str:
        if len(cron.split()) != 5:
            raise ValueError("expected a 5-field cron expression such as '0 * * * *'")
        return cron

    @field_validator("metrics_host")
    @classmethod
    def _ip_or_hostname(cls, host: str) -> str:
        if not _is_ip_or_hostname(host):
            raise ValueError("expected an IP address or a host name, e.g. 127.0.0.1 (or 0.0.0.0 inside a container)")
        return host

    @field_validator("daily_report_time_kst")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        hour, sep, minute = value.partition(":")
        if not (sep and hour.isdigit() and minute.isdigit() and 0 <= int(hour) < 24 and 0 <= int(minute) < 60):
            raise ValueError("expected HH:MM in 24-hour KST, e.g. 09:00")
        return value


class ApiConfig(_Group):
    host: str = Field(default="127.0.0.1", validation_alias="API_HOST")
    port: int = Field(default=8000, ge=1, le=65535, validation_alias="API_PORT")
    api_key: SecretStr | None = Field(default=None, validation_alias="API_KEY")
    jwt_secret: SecretStr | None = Field(default=None, validation_alias="API_JWT_SECRET")
    jwt_expire_minutes: int = Field(default=60, ge=1, le=10080, validation_alias="API_JWT_EXPIRE_MINUTES")
    admin_username: str = Field(default="admin", min_length=1, validation_alias="API_ADMIN_USERNAME")
    admin_password_hash: SecretStr | None = Field(default=None, validation_alias="API_ADMIN_PASSWORD_HASH")
    public_read: bool = Field(default=False, validation_alias="API_PUBLIC_READ")
    cors_origins: CsvList = Field(default=[], validation_alias="API_CORS_ORIGINS")
    rate_limit_per_minute: int = Field(default=600, ge=1, validation_alias="API_RATE_LIMIT_PER_MINUTE")
    rate_limit_redis_url: SecretStr | None = Field(default=None, validation_alias="API_RATE_LIMIT_REDIS_URL")
    rate_limit_redis_prefix: str = Field(
        default="ai-trader:rate-limit:", min_length=1, max_length=100, validation_alias="API_RATE_LIMIT_REDIS_PREFIX"
    )
    max_body_bytes: int = Field(default=65536, ge=1024, validation_alias="API_MAX_BODY_BYTES")

    _split_origins = field_validator("cors_origins", mode="before")(_split_csv)

    @field_validator("rate_limit_redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None or not url.get_secret_value():
            return None
        expected = "expected a redis://, rediss:// or unix:// URL, e.g. redis://127.0.0.1:6379/0"
        try:
            parts = urlsplit(url.get_secret_value())
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(expected) from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(expected)
        return url

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, origins: list[str]) -> list[str]:
        if "*" in origins:
            raise ValueError("expected explicit origins such as http://localhost:3000; '*' is not allowed")
        return origins


class TelegramConfig(_Group):
    bot_token: SecretStr | None = Field(default=None, validation_alias="TELEGRAM_BOT_TOKEN")
    chat_ids: CsvList = Field(default=[], validation_alias=AliasChoices("TELEGRAM_CHAT_IDS", "TELEGRAM_CHAT_ID"))
    base_url: str = Field(default="https://api.telegram.org/bot", validation_alias="TELEGRAM_BASE_URL")
    commands_enabled: bool = Field(default=True, validation_alias="TELEGRAM_COMMANDS_ENABLED")

    _split_chats = field_validator("chat_ids", mode="before")(_split_csv)

    @field_validator("chat_ids")
    @classmethod
    def _numeric_ids(cls, chat_ids: list[str]) -> list[str]:
        for chat_id in chat_ids:
            if not chat_id.lstrip("-").isdigit():
                raise ValueError(f"expected numeric Telegram chat ids separated by commas, got {chat_id!r}")
        return chat_ids

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token and self.bot_token.get_secret_value() and self.chat_ids)


class ObservabilityConfig(_Group):
    environment: str = Field(default="development", validation_alias="APP_ENV")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_format: LogFormat = Field(default=LogFormat.AUTO, validation_alias="LOG_FORMAT")
    sentry_dsn: SecretStr | None = Field(default=None, validation_alias="SENTRY_DSN")
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1, validation_alias="SENTRY_TRACES_SAMPLE_RATE")
    release: str = Field(default="ai-trader@0.1.0", validation_alias="APP_RELEASE")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        upper = level.upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper


_GROUPS: dict[str, type[_Group]] = {
    "database": DatabaseConfig,
    "trading": TradingConfig,
    "upbit": UpbitConfig,
    "market_data": MarketDataConfig,
    "ai": AIConfig,
    "risk": RiskConfig,
    "backtest": BacktestConfig,
    "scheduler": SchedulerConfig,
    "api": ApiConfig,
    "telegram": TelegramConfig,
    "observability": ObservabilityConfig,
}


class Settings(BaseModel):
    database: DatabaseConfig
    trading: TradingConfig
    upbit: UpbitConfig
    market_data: MarketDataConfig
    ai: AIConfig
    risk: RiskConfig
    backtest: BacktestConfig
    scheduler: SchedulerConfig
    api: ApiConfig
    telegram: TelegramConfig
    observability: ObservabilityConfig

    def secret_values(self) -> list[str]:
        """Every secret's plain value, so the log redactor can scrub it wherever it appears: each ``SecretStr``
        setting, and the password inside any URL setting (the database, Redis, a base URL with credentials)."""
        secrets: list[str] = []
        for group_name in _GROUPS:
            group = getattr(self, group_name)
            for field_name in type(group).model_fields:
                value = getattr(group, field_name)
                if isinstance(value, SecretStr) and value.get_secret_value():
                    value = value.get_secret_value()
                    secrets.append(value)
                if isinstance(value, str) and "://" in value:
                    secrets.extend(_password_in_url(value))
        return list(dict.fromkeys(secrets))

    def require_live_keys(self, mode: TradingMode | None = None) -> None:
        """Trading live needs both Upbit keys. Only what trades asks (the scheduler, ``main.py``): the API
        reads the database and never calls Upbit, so it starts in any mode, with or without keys."""
        if (mode or self.trading.mode) is TradingMode.LIVE and not self.upbit.has_keys:
            raise ConfigurationError(
                "TRADING_MODE=live requires UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY; set both, or use TRADING_MODE=paper"
            )


def _password_in_url(url: str) -> list[str]:
    """The password of ``scheme://user:password@host`` as written and percent-decoded (the redactor also
    registers the encoded forms of each value)."""
    try:
        password = urlsplit(url).password
    except ValueError:  # not a URL after all
        return []
    return [password, unquote(password)] if password else []


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "configuration"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{key}: is required"
    shown = error.get("input")
    hidden = "secret" in key.lower() or "key" in key.lower() or (isinstance(shown, str) and "@" in shown)  # URL creds
    if isinstance(shown, str) and len(shown) <= 60 and not hidden:
        return f"{key}={shown!r}: {message}"
    return f"{key}: {message}"


_USE_PROJECT_ENV_FILE = object()


def load_settings(env_file: Path | object | None = _USE_PROJECT_ENV_FILE) -> Settings:
    """Load and validate every group; raise one ConfigurationError naming each bad key.

    ``env_file=None`` reads the process environment only (tests use this).
    """
    problems: list[str] = []
    groups: dict[str, _Group] = {}
    chosen_env_file = _chosen_env_file(env_file)
    for name, group_cls in _GROUPS.items():
        try:
            groups[name] = group_cls(_env_file=chosen_env_file)
        except ValidationError as exc:
            problems.extend(_describe(error) for error in exc.errors())
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"{chosen_env_file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                "save the file as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"{chosen_env_file}: cannot be read ({exc.strerror or exc})") from None
    if problems:
        raise ConfigurationError("Invalid configuration: " + "; ".join(problems))
    settings = Settings(**groups)
    if problems := combination_problems(settings):
        raise ConfigurationError("Invalid configuration: " + "; ".join(problems))
    return settings


def combination_problems(settings: Settings) -> list[str]:
    """Rules across keys, on the environment at start-up and on every run-time change the scheduler applies."""
    problems: list[str] = []
    round_trip_pct = settings.trading.fee_rate * 2 * 100
    if settings.risk.take_profit_pct <= round_trip_pct:
        problems.append(
            f"take-profit {settings.risk.take_profit_pct}% must exceed the round-trip fee of "
            f"{round_trip_pct.normalize()}% (2 x TRADING_FEE_RATE), or a take-profit exit sells at a loss"
        )
    return problems


def _chosen_env_file(env_file: Path | object | None) -> Path | None:
    return _env_file() if env_file is _USE_PROJECT_ENV_FILE else env_file  # type: ignore[return-value]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


# --- keys that look like settings but are none ---------------------------------------------------------
# A mistyped key (STOPLOSS_PCT, RISK_STOP_LOS_PCT) would be ignored and leave the default in place, so a key
# that looks like ours but is unknown earns a warning naming the closest known key. "Looks like ours": it
# starts with one of these prefixes, or it is very close to a known key (difflib ratio >= SIMILAR_KEY_RATIO).
# Everything else in the environment (PATH, HOME, PYTHONPATH, CI, ...) is none of our business.
SETTING_PREFIXES = (
    "AI_", "API_", "ATR_", "BACKTEST_", "DATABASE_", "DB_", "FEAR_GREED_", "HEARTBEAT_", "KELLY_",
    "LIQUIDITY_", "OPENAI_", "PAPER_", "QUICK_FILTER_", "RISK_", "SCHEDULER_", "STOP_LOSS",
    "STRATEGY_", "TAKE_PROFIT", "TELEGRAM_", "TRADING_", "TRAILING_STOP", "UPBIT_", "VALIDATOR_",
)  # fmt: skip
SIMILAR_KEY_RATIO = 0.85
# Keys with our prefixes that are read by something else: Docker Compose (.env.example), the test runner,
# the OpenAI SDK.
NOT_SETTINGS = frozenset(
    {
        "API_HOST_PORT", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_ADMIN_USER", "GRAFANA_HOST_PORT", "POSTGRES_PASSWORD",
        "PROMETHEUS_HOST_PORT", "SCHEDULER_METRICS_HOST_PORT", "ENV_FILE",
        "TEST_DATABASE_URL", "REQUIRE_POSTGRES",
        "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_LOG",
    }
)  # fmt: skip


def known_keys() -> frozenset[str]:
    """Every environment key a setting is read from."""
    names: set[str] = set()
    for group in _GROUPS.values():
        for field in group.model_fields.values():
            alias = field.validation_alias
            names.update([alias] if isinstance(alias, str) else alias.choices)  # type: ignore[union-attr,arg-type]
    return frozenset(name.upper() for name in names)


def _env_file_keys(env_file: Path) -> list[str]:
    from dotenv import dotenv_values

    try:
        return list(dotenv_values(env_file, encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return []  # load_settings reports an unreadable file


def unknown_key_warnings(
    env_file: Path | object | None = _USE_PROJECT_ENV_FILE, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One warning per key in ``environ`` (default: the process environment) or ``env_file`` that looks like
    a setting but is none, naming the closest known key."""
    known = known_keys()
    chosen_env_file = _chosen_env_file(env_file)
    sources: list[tuple[str, list[str]]] = [("the environment", list(os.environ if environ is None else environ))]
    if chosen_env_file is not None and chosen_env_file.is_file():
        sources.append((str(chosen_env_file), _env_file_keys(chosen_env_file)))
    warnings: list[str] = []
    seen: set[str] = set()
    for where, keys in sources:
        for key in sorted(keys):
            name = key.upper()
            if name in known or name in NOT_SETTINGS or name in seen:
                continue
            similar = difflib.get_close_matches(name, known, n=1, cutoff=SIMILAR_KEY_RATIO)
            if not (similar or name.startswith(SETTING_PREFIXES)):
                continue
            seen.add(name)
            closest = similar or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {closest[0]}?" if closest else "no setting has a similar name (see .env.example)"
            warnings.append(f"{key} in {where} is not a setting and is ignored; {hint}")
    return warnings
