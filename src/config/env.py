"""Where settings are read from: the environment and ``.env`` at the project root, and the base of every group.

Each group of settings is a separate ``BaseSettings`` built on ``Group``, so every group reads the same
sources the same way; outside ``src/config`` nothing reads ``os.environ`` (``unknown_keys`` only looks at
its key names).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SOURCE_ROOT = Path(__file__).resolve().parents[2]
_FROM_CHECKOUT = (SOURCE_ROOT / "alembic.ini").is_file()
# A checkout: its root (``.env``, ``data/``, ``backtest_data/``, ``strategies/``). Installed with ``pip install .``:
# the working directory holds ``.env`` and ``data/``, and the bundled candles and example strategy are installed
# under ``<prefix>/share/upbit-ai-trader`` (pyproject.toml).
PROJECT_ROOT = SOURCE_ROOT if _FROM_CHECKOUT else Path.cwd()
BUNDLED_ROOT = SOURCE_ROOT if _FROM_CHECKOUT else Path(sys.prefix) / "share" / "upbit-ai-trader"
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


class Group(BaseSettings):
    model_config = _settings_config()


def split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]

# The default of ``env_file`` arguments: the project's ``.env`` (None: the process environment only).
USE_PROJECT_ENV_FILE = object()


def chosen_env_file(env_file: Path | object | None) -> Path | None:
    return _env_file() if env_file is USE_PROJECT_ENV_FILE else env_file  # type: ignore[return-value]
