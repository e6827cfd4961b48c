"""The settings groups of the system around trading: the database, the scheduler, the API, Telegram, logs."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator

from src.config.env import DEFAULT_SQLITE_PATH, PROJECT_ROOT, CsvList, Group, split_csv

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _is_ip_or_hostname(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    return 0 < len(host) <= 253 and all(_HOSTNAME_LABEL.match(label) for label in labels)


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class NotifyLanguage(StrEnum):
    """The language of Telegram messages and command replies."""

    KO = "ko"
    EN = "en"


class DatabaseConfig(Group):
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


class SchedulerConfig(Group):
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
    # A/B: the instances file ``scheduler_main.py --instances`` runs and ``GET /api/v1/instances`` compares.
    instances_file: Path | None = Field(default=None, validation_alias="INSTANCES_FILE")

    @field_validator("instances_file")
    @classmethod
    def _relative_to_project(cls, path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else PROJECT_ROOT / path

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


class ApiConfig(Group):
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
    # Seconds a hot read (bot status, trade pages) may be served from memory when no event came;
    # any event drops it at once (backend/app/services/read_cache.py). 0 reads the database every time.
    read_cache_seconds: float = Field(default=1.0, ge=0, le=60, validation_alias="API_READ_CACHE_SECONDS")

    _split_origins = field_validator("cors_origins", mode="before")(split_csv)

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


class TelegramConfig(Group):
    bot_token: SecretStr | None = Field(default=None, validation_alias="TELEGRAM_BOT_TOKEN")
    # Two spellings of one key: the plugin cannot see through AliasChoices, pydantic resolves it at run time.
    chat_ids: CsvList = Field(  # type: ignore[pydantic-alias]
        default=[], validation_alias=AliasChoices("TELEGRAM_CHAT_IDS", "TELEGRAM_CHAT_ID")
    )
    base_url: str = Field(default="https://api.telegram.org/bot", validation_alias="TELEGRAM_BASE_URL")
    commands_enabled: bool = Field(default=True, validation_alias="TELEGRAM_COMMANDS_ENABLED")
    language: NotifyLanguage = Field(default=NotifyLanguage.KO, validation_alias="NOTIFY_LANGUAGE")

    _split_chats = field_validator("chat_ids", mode="before")(split_csv)

    @field_validator("chat_ids")
    @classmethod
    def _numeric_ids(cls, chat_ids: list[str]) -> list[str]:
        for chat_id in chat_ids:
            if not chat_id.lstrip("-").isdigit():
                raise ValueError(f"expected numeric Telegram chat ids separated by commas, got {chat_id!r}")
        return chat_ids

    @field_validator("language", mode="before")
    @classmethod
    def _known_language(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower() or NotifyLanguage.KO.value
            if value not in {language.value for language in NotifyLanguage}:
                raise ValueError(f"expected ko (Korean) or en (English), got {value!r}")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token and self.bot_token.get_secret_value() and self.chat_ids)


class ObservabilityConfig(Group):
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
