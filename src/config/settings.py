"""The one settings model of the system.

Every process (scheduler, API, ``main.py``, ``backtest.py``) reads its configuration through
``get_settings()``. Values come from the environment and from ``.env`` at the project root;
nothing outside ``src/config`` reads ``os.environ`` (see ``env.py``). Each group is a separate
``BaseSettings`` (``trading_groups.py``, ``system_groups.py``) so the sections stay small, but they are
loaded and validated together here; keys that look like settings but are none are named by
``unknown_keys.py``, and keys that were removed stop the start with one error naming their new place
(``removed_keys.py``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from src.config.env import USE_PROJECT_ENV_FILE, Group, chosen_env_file
from src.config.removed_keys import removed_keys_set
from src.config.system_groups import ApiConfig, DatabaseConfig, ObservabilityConfig, SchedulerConfig, TelegramConfig
from src.config.trading_groups import (
    AIConfig,
    BacktestConfig,
    MarketDataConfig,
    RealtimeConfig,
    RiskConfig,
    StrategyConfig,
    TradingConfig,
    UpbitConfig,
)
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError

GROUPS: dict[str, type[Group]] = {
    "database": DatabaseConfig,
    "trading": TradingConfig,
    "upbit": UpbitConfig,
    "market_data": MarketDataConfig,
    "realtime": RealtimeConfig,
    "ai": AIConfig,
    "risk": RiskConfig,
    "strategy": StrategyConfig,
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
    realtime: RealtimeConfig
    ai: AIConfig
    risk: RiskConfig
    strategy: StrategyConfig
    backtest: BacktestConfig
    scheduler: SchedulerConfig
    api: ApiConfig
    telegram: TelegramConfig
    observability: ObservabilityConfig

    def secret_values(self) -> list[str]:
        """Every secret's plain value, so the log redactor can scrub it wherever it appears: each ``SecretStr``
        setting, and the password inside any URL setting (the database, Redis, a base URL with credentials)."""
        secrets: list[str] = []
        for group_name in GROUPS:
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


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "configuration"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{key}: is required"
    shown = error.get("input")
    hidden = "secret" in key.lower() or "key" in key.lower() or (isinstance(shown, str) and "@" in shown)  # URL creds
    if isinstance(shown, str) and len(shown) <= 60 and not hidden:
        return f"{key}={shown!r}: {message}"
    return f"{key}: {message}"


def load_settings(env_file: Path | object | None = USE_PROJECT_ENV_FILE) -> Settings:
    """Load and validate every group; raise one ConfigurationError naming each bad key.

    ``env_file=None`` reads the process environment only (tests use this).
    """
    problems: list[str] = []
    groups: dict[str, Any] = {}
    env_path = chosen_env_file(env_file)
    if removed := removed_keys_set(env_path):
        raise ConfigurationError("Invalid configuration: " + "; ".join(removed))
    for name, group_cls in GROUPS.items():
        try:
            groups[name] = group_cls(_env_file=env_path)
        except ValidationError as exc:
            problems.extend(_describe(error) for error in exc.errors())
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"{env_path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                "save the file as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"{env_path}: cannot be read ({exc.strerror or exc})") from None
    if problems:
        raise ConfigurationError("Invalid configuration: " + "; ".join(problems))
    return Settings(**groups)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
